"""`--set` overrides, `nncli config` (resolve, --check, --init), shell completion and --help."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from support import CONFIGS, DATA, ROOT, checkpoint_arrays, nncli_executable

from nncli import configtool, overrides
from nncli import spec as spec_mod
from nncli.cli import main
from nncli.errors import ConfigError

CONFIG = """\
name: t
seed: 1
data:
  train: {train}
layers:
  - {{type: dense, units: 4, activation: tanh}}
  - {{type: dense, units: 1, activation: sigmoid}}
loss: binary_crossentropy
optimizer: sgd
learning_rate: 0.5
epochs: 2
batch_size: 4
"""


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


@pytest.fixture()
def config(tmp_path, xor_csv):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(train=xor_csv))
    return path


def _one_line_error(result, code, *words):
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("Error: ") and len(err.splitlines()) == 1 and "Traceback" not in result.output, err
    for w in words:
        assert w in err, (w, err)
    return err


# --- overrides: the path language and YAML values ----------------------------------------------

def test_parse_path_forms():
    assert overrides.parse_path("learning_rate") == ["learning_rate"]
    assert overrides.parse_path("layers[0].units") == ["layers", 0, "units"]
    assert overrides.parse_path("layers[-1].activation") == ["layers", -1, "activation"]
    assert overrides.parse_path("a.b[2][-3].c") == ["a", "b", 2, -3, "c"]
    assert overrides.format_path(["layers", 0, "units"]) == "layers[0].units"
    for bad in ("", "a..b", "layers[x].units", "layers[0", ".a", "a b"):
        with pytest.raises(ConfigError, match="--set"):
            overrides.parse_path(bad)


@pytest.mark.parametrize("text,expected", [
    ("early_stopping=false", ("early_stopping", False)),
    ("learning_rate=0.01", ("learning_rate", 0.01)),
    ("epochs=7", ("epochs", 7)),
    ("optimizer.type=sgd", ("optimizer.type", "sgd")),
    ("layers[1]={type: dropout, rate: 0.2}", ("layers[1]", {"type": "dropout", "rate": 0.2})),
    ("metrics=[accuracy, f1]", ("metrics", ["accuracy", "f1"])),
    ("data.validation=", ("data.validation", None)),
    ("name='007'", ("name", "007")),
    ("x=a=b", ("x", "a=b")),
])
def test_values_are_yaml(text, expected):
    assert overrides.parse_assignment(text) == expected


def test_set_path_in_place_and_its_resolved_path():
    cfg = {"layers": [{"type": "dense", "units": 4}, {"type": "dense", "units": 1}], "optimizer": "sgd"}
    assert overrides.set_path(cfg, "layers[-1].activation", "sigmoid") == "layers[1].activation"
    assert cfg["layers"][1] == {"type": "dense", "units": 1, "activation": "sigmoid"}
    overrides.set_path(cfg, "optimizer.momentum", 0.5)          # a bare name becomes {type: name}
    assert cfg["optimizer"] == {"type": "sgd", "momentum": 0.5}
    overrides.set_path(cfg, "early_stopping.patience", 3)       # a missing mapping is created
    assert cfg["early_stopping"] == {"patience": 3}


@pytest.mark.parametrize("text,words", [
    ("layers[7].units=3", ["--set layers[7].units: there are 2 layers"]),
    ("layers[-3].units=3", ["there are 2 layers"]),
    ("layers.units=3", ["--set layers.units", "not a mapping"]),
    ("epochs[0]=3", ["--set epochs[0]", "not a list"]),
    ("epochs", ["--set epochs", "PATH=VALUE"]),
    ("metrics=[accuracy", ["--set metrics", "not valid YAML"]),
    ("layers[0].units=abc", ["layers[0].units (from --set)", "expected an integer", "'abc'"]),
    ("layers[0].unit=3", ["layers[0].unit (from --set)", "did you mean 'units'"]),
    ("layers[1]={type: dropout, rat: 0.2}", ["layers[1].rat (from --set)", "did you mean 'rate'"]),
    ("optimizer.type=adamm", ["optimizer.type (from --set)", "did you mean 'adam'"]),
    ("data.validation=1.5", ["data.validation (from --set)"]),
    ("early_stopping=maybe", ["early_stopping (from --set)"]),
    ("x=!!python/object/apply:os.system ['touch PWNED']", ["--set x", "not valid YAML"]),
])
def test_bad_sets_are_one_line_exit_2(runner, config, tmp_path, text, words):
    for command in (["config", str(config)], ["train", str(config), "-o", str(tmp_path / "run"), "-q"]):
        _one_line_error(runner.invoke(main, [*command, "--set", text]), 2, *words)
    assert not (tmp_path / "run").exists() and not Path("PWNED").exists()


def test_a_file_value_keeps_its_line_number(runner, config):
    err = _one_line_error(runner.invoke(main, ["config", str(config), "--set", "epochs=0"]), 2)
    assert "epochs (from --set)" in err
    config.write_text(config.read_text().replace("epochs: 2", "epochs: 0"))
    err = _one_line_error(runner.invoke(main, ["config", str(config), "--set", "seed=3"]), 2)
    assert "epochs (line 11)" in err


# --- nncli config: the resolved YAML -------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_resolved_yaml_loads_back_to_the_same_config(tmp_path, path):
    spec = configtool.resolve(path, ["seed=5", "layers[-1].name=out"])
    text = configtool.commented_yaml(spec)
    printed = tmp_path / "elsewhere" / "printed.yaml"   # another folder: nothing relative survives
    printed.parent.mkdir()
    printed.write_text(text)
    again = spec_mod.load(printed)
    assert configtool.resolved_plain(again) == configtool.resolved_plain(spec)
    assert again["output"] == spec["output"]
    assert yaml.safe_load(text) == configtool.resolved_plain(spec)


def test_resolved_yaml_names_the_origin_of_each_value(runner, config):
    result = runner.invoke(main, ["config", str(config), "--set", "layers[0].units=6",
                                  "--set", "data.validation=0.25"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "    units: 6  # --set" in lines
    assert "  validation: 0.25  # --set" in lines
    assert "learning_rate: 0.5  # line 10" in lines
    assert "batch_size: 32" not in result.stdout and "batch_size: 4  # line 12" in lines
    assert "checkpoint_interval: 5.0" in lines                  # a default: no comment
    assert "    initializer: glorot_uniform" in lines           # a layer's default


def test_json(runner, config):
    import json

    result = runner.invoke(main, ["config", str(config), "--json", "--set", "epochs=5"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["epochs"] == 5 and data["layers"][0]["initializer"] == "glorot_uniform"
    assert data == configtool.resolved_plain(configtool.resolve(config, ["epochs=5"]))


def test_config_usage_errors(runner, config):
    _one_line_error(runner.invoke(main, ["config"]), 2, "give a CONFIG")
    _one_line_error(runner.invoke(main, ["config", str(config), "--init"]), 2, "--init")


# --- training with --set: stored, resumed, round-tripped -----------------------------------------

def _stored_config(path):
    with h5py.File(path, "r") as f:
        text = f["config"].attrs["yaml"]
    return text.decode() if isinstance(text, bytes) else text


def test_sets_are_stored_and_resume_needs_none_repeated(runner, config, tmp_path):
    out = tmp_path / "run"
    args = ["train", str(config), "-o", str(out), "-q"]
    result = runner.invoke(main, [*args, "--set", "layers[0].units=3", "--set", "optimizer={type: momentum, momentum: 0.5}"])
    assert result.exit_code == 0, result.output
    stored = _stored_config(out / "last.h5")
    assert overrides.recorded(stored) == ["layers[0].units=3", "optimizer={type: momentum, momentum: 0.5}"]
    assert yaml.safe_load(stored)["layers"][0]["units"] == 3
    assert checkpoint_arrays(out / "last.h5")["params/dense_1/W"].shape == (2, 3)
    # --resume without the --set: the run's own values (no "differs from the run" refusal)
    result = runner.invoke(main, [*args, "--resume", "--epochs", "4"])
    assert result.exit_code == 0, result.output
    from nncli import checkpoint

    assert checkpoint.load(out / "last.h5").epoch == 4
    stored = yaml.safe_load(_stored_config(out / "last.h5"))
    assert stored["layers"][0]["units"] == 3 and stored["optimizer"]["momentum"] == 0.5 and stored["epochs"] == 4
    # a --set that changes the model on resume is refused like an edited config
    result = runner.invoke(main, [*args, "--resume", "--epochs", "5", "--set", "layers[0].units=5"])
    _one_line_error(result, 2, "differs from the run", "layers[0].units")
    # the file alone (a fresh run, no --resume) is another run: refused without --overwrite
    _one_line_error(runner.invoke(main, args), 2, "holds another run")


def test_printed_config_trains_to_the_same_weights(runner, config, tmp_path):
    sets = ["--set", "layers[0].units=5", "--set", "layers[-1].activation=sigmoid", "--set", "epochs=3"]
    a, b = tmp_path / "a", tmp_path / "b"
    result = runner.invoke(main, ["train", str(config), "-o", str(a), "-q", *sets])
    assert result.exit_code == 0, result.output
    printed = runner.invoke(main, ["config", str(config), *sets])
    assert printed.exit_code == 0, printed.output
    other = tmp_path / "sub" / "printed.yaml"
    other.parent.mkdir()
    other.write_text(printed.stdout)
    result = runner.invoke(main, ["train", str(other), "-o", str(b), "-q"])
    assert result.exit_code == 0, result.output
    wa, wb = checkpoint_arrays(a / "model.h5"), checkpoint_arrays(b / "model.h5")
    assert wa.keys() == wb.keys() and wa["params/dense_1/W"].shape == (2, 5)
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])


# --- config --check: no compile ------------------------------------------------------------------

@pytest.fixture()
def no_compile(monkeypatch):
    import pytensor
    import pytensor.compile.maker as maker

    def refuse(*args, **kwargs):
        raise AssertionError("config --check compiled a PyTensor function")

    monkeypatch.setattr(pytensor, "function", refuse)
    monkeypatch.setattr(maker, "function", refuse)
    monkeypatch.setattr(maker.FunctionMaker, "create", refuse)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_check_shipped_configs_without_compiling(runner, no_compile, path):
    start = time.perf_counter()
    result = runner.invoke(main, ["config", str(path), "--check"])
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    assert seconds < 5.0, seconds
    assert "nothing compiled" in result.stdout and re.search(r"^layer +type +output shape +params( +inputs)?$", result.stdout, re.M)


def test_check_table_is_inspects_table(runner, tmp_path):
    """The same lines as `nncli inspect` of a run trained on the config (one formatter)."""
    out = tmp_path / "run"
    cfg = CONFIGS / "iris.yaml"
    assert runner.invoke(main, ["train", str(cfg), "-o", str(out), "-q", "--epochs", "1"]).exit_code == 0
    inspect = runner.invoke(main, ["inspect", str(out / "model.h5")]).stdout.splitlines()
    check = runner.invoke(main, ["config", str(cfg), "--check"]).stdout.splitlines()
    table = check[check.index("") + 1:]
    start = inspect.index(table[0])
    assert inspect[start:start + len(table)] == table


def test_check_catches_a_shape_error(runner, no_compile, config):
    result = runner.invoke(main, ["config", str(config), "--check", "--set", "layers[0]={type: reshape, shape: [3, 3]}"])
    _one_line_error(result, 2, "layers[0]", "reshape")


def test_check_catches_bad_data(runner, no_compile, config, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,x2,y\n0,0,0\n0,oops,1\n" + "1,1,0\n" * 100000)
    result = runner.invoke(main, ["config", str(config), "--check", "--set", f"data.train={bad}"])
    _one_line_error(result, 1, "line 3", "'x2'", "oops")
    result = runner.invoke(main, ["config", str(config), "--check", "--set", "data.x=[x1, z]"])
    _one_line_error(result, 1, "no input column 'z'")
    h5 = tmp_path / "d.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = np.zeros((5, 2), np.float32)
        f["y"] = np.zeros(4)
    result = runner.invoke(main, ["config", str(config), "--check", "--set", f"data.train={h5}"])
    _one_line_error(result, 1, "5 rows", "4")


# --- config --init ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "cnn", "rnn", "tabular"])
def test_init_templates_train_as_they_are(runner, tmp_path, name):
    result = runner.invoke(main, ["config", "--init", "--template", name])
    assert result.exit_code == 0, result.output
    (tmp_path / "data").symlink_to(DATA)   # the template's paths are relative to the repository root
    path = tmp_path / "my.yaml"
    path.write_text(result.stdout)
    assert runner.invoke(main, ["config", str(path), "--check"]).exit_code == 0
    result = runner.invoke(main, ["train", str(path), "-o", str(tmp_path / "run"), "-q", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model.h5").exists()


# --- shell completion (a real subprocess, as the shell runs it) ---------------------------------------

def _complete(words: str, cwd: Path) -> list[str]:
    env = {**os.environ, "_NNCLI_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split(" ")) - 1), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([nncli_executable()], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_completion(tmp_path):
    assert _complete("nncli train configs/ir", ROOT) == ["plain,configs/iris.yaml"]
    assert "plain,configs/" in _complete("nncli config con", ROOT)
    (tmp_path / "model.h5").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "runs").mkdir()
    assert _complete("nncli predict ", tmp_path) == ["plain,model.h5", "plain,runs/"]
    assert _complete("nncli train c.yaml --backend ", tmp_path) == [f"plain,{b}" for b in ("auto", "jax", "numba", "c")]
    assert _complete("nncli train c.yaml --device g", tmp_path) == ["plain,gpu"]
    assert {"plain,config", "plain,schema", "plain,train"} <= set(_complete("nncli ", tmp_path))


# --- --help --------------------------------------------------------------------------------------

def test_help_teaches(runner):
    top = runner.invoke(main, ["--help"]).stdout
    commands = top.split("Commands:")[1]
    assert "..." not in commands and "README" in top and "config file" in top
    for name in main.commands:
        text = runner.invoke(main, [name, "--help"]).stdout
        assert any(line.strip().startswith("nncli ") for line in text.splitlines()), name  # an example
        assert name in commands
    train = runner.invoke(main, ["train", "--help"]).stdout
    for words in ("auto picks", "runs/<name>", "Exit codes", "130", "--set"):
        assert words in train, words
    predict = runner.invoke(main, ["predict", "--help"]).stdout
    for words in ("header", "p_<class>", "label", "stdout"):
        assert words in predict, words
