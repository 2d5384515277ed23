"""Issue 12, section 4: damaged or hostile files give one `Error:` line, in bounded memory and time.

Damaged resume state, hostile checkpoints for predict and inspect, declared sizes that the file
does not hold, the parameter budget, config files that are not regular files, huge top-k metrics,
uint64 class labels, MemoryError, and strict JSON from `inspect --json`. Hostile files are built
with h5py from a real checkpoint of a small trained run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from support import ROOT, nncli_executable, write_config
from nncli import checkpoint, data
from nncli.cli import main
from nncli.errors import DataError

runner = CliRunner()


def assert_one_error(r, code, *words):
    """Exit `code`, stderr ends with exactly one `Error:` line holding `words`, no traceback."""
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    lines = r.stderr.splitlines()
    errors = [l for l in lines if l.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert "Traceback" not in r.output and "internal error" not in r.stderr, r.stderr
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


def files_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != ".lock"}


# --- a trained run to tamper with -------------------------------------------------------

@pytest.fixture(scope="module")
def run(blobs_run):
    """(config, run folder, a CSV to predict on) from the shared 3-class blobs run (6 epochs)."""
    result, config = blobs_run
    return config, result.output, Path(yaml.safe_load(Path(config).read_text())["data"]["train"])


def copy_run(run, tmp_path) -> Path:
    _, out, _ = run
    dst = tmp_path / "run"
    shutil.copytree(out, dst)
    return dst


def tamper(path: Path, edit) -> None:
    with h5py.File(path, "r+") as f:
        edit(f)


def set_rng(f, value):
    f["rng"].attrs["state"] = value if isinstance(value, str) else json.dumps(value)


def resumable_state(f) -> dict:
    return json.loads(f["rng"].attrs["state"])


# --- 1. damaged resume state ---------------------------------------------------------------

def _rng_edit(kind):
    def edit(f):
        state = resumable_state(f)
        if kind == "empty":
            set_rng(f, "{}")
        elif kind == "list":
            set_rng(f, [1, 2, 3])
        elif kind == "sums-length":  # mid-epoch, but with the wrong number of running sums
            set_rng(f, {**state, "batch": 2, "sums": [1.0]})
        elif kind == "batch-past-end":  # the variant that used to overwrite model.h5 and metrics.csv
            set_rng(f, {**state, "batch": 99, "sums": [1.0, 1.0]})
        elif kind == "generator":
            set_rng(f, {**state, "shuffle": {**state["shuffle"], "bit_generator": "MT19937"}})
        elif kind == "generator-state":
            set_rng(f, {**state, "shuffle": {**state["shuffle"], "state": {"state": "x", "inc": 1}}})
        elif kind == "sums-nan":
            set_rng(f, {**state, "batch": 2, "sums": [float("nan"), 1.0]})
        elif kind == "batch-negative":
            set_rng(f, {**state, "batch": -3})
        elif kind == "slices-one":       # a split into 1 slice is no split: never written
            set_rng(f, {**state, "batch_slices": [1]})
        elif kind == "slices-not-a-list":
            set_rng(f, {**state, "batch_slices": "2"})
    return edit


def _slot_edit(shape_of):
    def edit(f):
        key = "optimizer/m/dense_1/W"
        w = f[key][()]
        del f[key]
        f.create_dataset(key, data=np.zeros(shape_of(w), dtype=w.dtype))
    return edit


RESUME_DAMAGE = {
    **{f"rng-{k}": _rng_edit(k) for k in ("empty", "list", "sums-length", "batch-past-end", "generator",
                                           "generator-state", "sums-nan", "batch-negative", "slices-one",
                                           "slices-not-a-list")},
    "slot-reshaped": _slot_edit(lambda w: (w.size,)),          # same size: used to be reshaped silently
    "slot-wrong-size": _slot_edit(lambda w: (w.shape[0] + 1, w.shape[1])),
}


@pytest.mark.parametrize("damage", list(RESUME_DAMAGE))
def test_damaged_resume_state_is_one_line_and_changes_no_file(run, tmp_path, damage):
    config = run[0]
    out = copy_run(run, tmp_path)
    tamper(out / "last.h5", RESUME_DAMAGE[damage])
    before = files_state(out)
    r = runner.invoke(main, ["train", str(config), "-o", str(out), "--resume", "--epochs", "8"])
    assert_one_error(r, 1, str(out / "last.h5"), "damaged checkpoint")
    assert files_state(out) == before


def test_a_sound_resume_still_works(run, tmp_path):
    config = run[0]
    out = copy_run(run, tmp_path)
    r = runner.invoke(main, ["train", str(config), "-o", str(out), "--resume", "--epochs", "7", "-q"])
    assert r.exit_code == 0, r.output


# --- 2. hostile checkpoints for predict and inspect -------------------------------------------

def _attr(group, key, value):
    def edit(f):
        (f[group] if group else f).attrs[key] = value
    return edit


def _replace(name, value, **kw):
    def edit(f):
        del f[name]
        f.create_dataset(name, data=value, **kw)
    return edit


def _stored_config(change):
    def edit(f):
        f["config"].attrs["yaml"] = change(f["config"].attrs["yaml"])
    return edit


def _with_key(key, value):
    return _stored_config(lambda text: yaml.safe_dump({**yaml.safe_load(text), key: value}, sort_keys=False))


def _unwritten(name, shape, dtype):
    def edit(f):
        del f[name]
        f.create_dataset(name, shape=shape, chunks=True, dtype=dtype)
    return edit


STRINGS = h5py.string_dtype("utf-8")
HOSTILE = {
    "negative input_shape": (_attr("model", "input_shape", np.array([-2], np.int64)), "input_shape"),
    "two-dim input_shape": (_attr("model", "input_shape", np.array([[2]], np.int64)), "input_shape"),
    "fewer classes than outputs": (_replace("labels/classes", np.array(["a", "b"], dtype=object), dtype=STRINGS),
                                   "/labels/classes"),
    "more classes than outputs": (_replace("labels/classes", np.array(list("abcd"), dtype=object), dtype=STRINGS),
                                  "/labels/classes"),
    "no classes": (_replace("labels/classes", np.array([], dtype=object), dtype=STRINGS), "/labels/classes"),
    "shift of the wrong length": (_replace("normalization/shift", np.zeros(5, np.float32)), "/normalization/shift"),
    "scale holding NaN": (_replace("normalization/scale", np.array([1.0, np.nan], np.float32)),
                          "/normalization/scale"),
    "config nested 5000 deep": (_stored_config(lambda t: "layers: " + "[" * 5000 + "]" * 5000 + "\n"),
                                "stored config"),
    "config nested 60 deep": (_stored_config(lambda t: t + "x: " + "[" * 60 + "]" * 60 + "\n"), "nested"),
    "backend a list in the config": (_with_key("backend", ["jax", "c"]), "backend"),
    "device a mapping in the config": (_with_key("device", {"a": 1}), "device"),
    "huge top-k in the stored metrics": (_with_key("metrics", ["accuracy", "top_100000000000000000000_accuracy"]),
                                         "metrics[1]"),
    "backend attribute a list": (_attr("", "backend", np.array([1, 2])), "backend"),
    "epoch attribute a string": (_attr("", "epoch", "six"), "epoch"),
    "labels kind unknown": (_attr("labels", "kind", "ordinal"), "/labels kind"),
    "loss unknown": (_attr("model", "loss", "hinge_of_doom"), "loss"),
    "best_epoch past the history": (_attr("", "best_epoch", 6000), "best_epoch"),
    "class names declared, never written": (_unwritten("labels/classes", (3,), STRINGS), "does not store all"),
    "x_names declared, never written": (_unwritten("model/x_names", (2,), STRINGS), "does not store all"),
    "a class name of 100,000 bytes": (
        _replace("labels/classes", np.array(["a" * 100_000, "b", "c"], dtype=object), dtype=STRINGS),
        "holds a string of 100,000 bytes, more than the 65,536 allowed"),
    "trainable names a missing parameter": (
        _replace("model/trainable", np.array(["nope/W"], dtype=object), dtype=STRINGS), "nope/W"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_checkpoint_is_one_error_line_for_predict_inspect_and_evaluate(run, tmp_path, case):
    _, out, csv_path = run
    edit, words = HOSTILE[case]
    model = tmp_path / "model.h5"
    shutil.copyfile(out / "model.h5", model)
    tamper(model, edit)
    for args in (["inspect", str(model)], ["inspect", "--json", str(model)],
                 ["predict", str(model), str(csv_path)], ["evaluate", str(model), str(csv_path)]):
        r = runner.invoke(main, args)
        assert_one_error(r, 1, str(model), words)
        assert r.stdout == ""


def test_the_untampered_checkpoint_still_works(run):
    _, out, csv_path = run
    r = runner.invoke(main, ["predict", str(out / "model.h5"), str(csv_path)])
    assert r.exit_code == 0 and r.stdout.startswith("label,p_"), r.output
    r = runner.invoke(main, ["inspect", str(out / "model.h5")])
    assert r.exit_code == 0 and "dense_1" in r.stdout


def _fail_on_constant(name):
    raise AssertionError(f"bare {name} in the JSON")


def test_inspect_json_is_strict_json_with_null_for_non_finite_values(run, tmp_path):
    _, out, _ = run
    model = tmp_path / "model.h5"
    shutil.copyfile(out / "model.h5", model)

    def edit(f):
        f.attrs["best_value"] = float("nan")
        loss = f["history/loss"][()]
        loss[0] = np.inf
        del f["history/loss"]
        f["history"].create_dataset("loss", data=loss)
    tamper(model, edit)
    r = runner.invoke(main, ["inspect", "--json", str(model)])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout, parse_constant=_fail_on_constant)
    assert info["best_value"] is None and info["history"]["loss"][0] is None
    assert all(isinstance(v, float) for v in info["history"]["loss"][1:])
    r = runner.invoke(main, ["inspect", str(model)])  # the text form still prints
    assert r.exit_code == 0 and "history:" in r.stdout


# --- 3. declared sizes ------------------------------------------------------------------------

MEASURE = """
import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
print(r.returncode, round(time.monotonic() - t, 2), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.stderr.write(r.stderr)
"""


def measured(*args) -> tuple[int, float, int, str]:
    """`nncli ARGS` in a subprocess: exit status, seconds, peak RSS in MB, stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", MEASURE, nncli_executable(), *map(str, args)],
                       capture_output=True, text=True, timeout=180, env=env)
    code, seconds, rss_kb = p.stdout.split()
    return int(code), float(seconds), int(rss_kb) // 1024, p.stderr


def assert_one_line_fast(code, seconds, rss_mb, stderr, exit_code, *words):
    lines = stderr.splitlines()
    assert code == exit_code, stderr
    assert len(lines) >= 1 and lines[-1].startswith("Error: ") and sum(l.startswith("Error:") for l in lines) == 1
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    for w in words:
        assert w in lines[-1], (w, lines[-1])
    assert seconds < 60 and rss_mb < 1500, (seconds, rss_mb)


def huge_empty_h5(path: Path, rows: int = 10**9) -> Path:
    """A few kB declaring `x` of shape (rows, 2) float32 (8 GB) as chunked storage never written."""
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(rows, 2), chunks=(1024, 2), dtype="f4")
        f.create_dataset("y", shape=(rows,), chunks=(1024,), dtype="i4")
    assert path.stat().st_size < 20_000
    return path


@pytest.mark.parametrize("budget", [512, 100_000])  # streamed from disk, and in memory
def test_hdf5_data_declaring_more_than_it_stores_is_refused_before_allocating(tmp_path, budget):
    h5 = huge_empty_h5(tmp_path / "big.h5")
    config = write_config(tmp_path, f"""
data: {{train: big.h5, memory_budget_mb: {budget}}}
layers:
  - {{type: dense, units: 3, activation: softmax}}
""")
    assert_one_line_fast(*measured("train", config, "-o", tmp_path / "out"), 1, str(h5), "'x'",
                         "(1000000000, 2)")


def test_hdf5_input_declaring_more_than_it_stores_is_refused_by_predict(run, tmp_path):
    _, out, _ = run
    h5 = huge_empty_h5(tmp_path / "big.h5")
    r = runner.invoke(main, ["predict", str(out / "model.h5"), str(h5)])
    assert_one_error(r, 1, str(h5), "does not store all of it")


def test_a_partly_written_dataset_is_refused_and_a_complete_one_is_read(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.ones((8, 2), np.float32), chunks=(2, 2), compression="gzip")
        f.create_dataset("y", data=np.arange(8) % 2)
        part = f.create_dataset("z", shape=(8, 2), chunks=(2, 2), dtype="f4")
        part[:2] = 1.0
    assert data.read(str(path), "x", "y").x.shape == (8, 2)  # compressed, every chunk written: fine
    with pytest.raises(DataError, match="'z' declares shape"):
        data.read(str(path), "z", "y")


def test_checkpoint_declaring_a_billion_parameters_is_refused_before_reading(run, tmp_path):
    _, out, csv_path = run
    model = tmp_path / "model.h5"
    shutil.copyfile(out / "model.h5", model)

    def edit(f):
        del f["params/dense_1/W"]
        f["params"].create_dataset("dense_1/W", shape=(10**9,), chunks=(4096,), dtype="f4")
    tamper(model, edit)
    assert model.stat().st_size < 100_000
    for args in (("inspect", model), ("predict", model, csv_path)):
        assert_one_line_fast(*measured(*args), 1, str(model), "/params/dense_1/W", "(1000000000,)")


def test_wrong_parameter_shape_within_the_budget_is_one_line(run, tmp_path):
    _, out, csv_path = run
    model = tmp_path / "model.h5"
    shutil.copyfile(out / "model.h5", model)
    tamper(model, _replace("params/dense_1/W", np.zeros((3, 3), np.float32)))
    r = runner.invoke(main, ["predict", str(model), str(csv_path)])
    assert_one_error(r, 1, "/params/dense_1/W", "(3, 3)")


def test_parameter_budget_is_a_config_error_naming_the_layer(tmp_path):
    config = write_config(tmp_path, f"""
data: {{train: {ROOT / 'data' / 'iris.csv'}}}
layers:
  - {{type: dense, units: 1000000, activation: relu}}
  - {{type: dense, units: 1000000, activation: relu}}
  - {{type: dense, units: 3, activation: softmax}}
""")
    assert_one_line_fast(*measured("train", config, "-o", tmp_path / "out"), 2, str(config), "layers[1]",
                         "dense_2", "100,000,000 parameters")
    assert not (tmp_path / "out" / "model.h5").exists()


def test_parameter_budget_counts_without_allocating_and_follows_the_layers_code():
    from nncli import network, spec as spec_mod

    over = spec_mod.parse_layers([{"type": "lstm", "units": 4000}, {"type": "dense", "units": 10}], "t")
    t0 = time.monotonic()
    with pytest.raises(network.LayerShapeError, match="100,000,000 parameters"):
        network.Network(over, (5, 3000))  # 4 * 4000 * (3000 + 4000 + 1) = 112M
    assert time.monotonic() - t0 < 5
    under = spec_mod.parse_layers([{"type": "lstm", "units": 16}, {"type": "dense", "units": 3}], "t")
    net = network.Network(under, (5, 4))
    params, _ = net.initial_values(np.random.default_rng(0))
    assert params["lstm_1/U"].shape == (16, 64)


@pytest.mark.parametrize("special", ["dev-zero-link", "fifo"])
def test_config_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path, special):
    config = tmp_path / "c.yaml"
    if special == "fifo":
        os.mkfifo(config)
    else:
        config.symlink_to("/dev/zero")
    assert_one_line_fast(*measured("train", config), 2, str(config), "not a regular file")


def test_config_is_read_only_to_one_byte_past_the_limit(tmp_path, monkeypatch):
    from nncli import spec as spec_mod

    config = tmp_path / "c.yaml"
    config.write_bytes(b"#" * (spec_mod.MAX_CONFIG_BYTES + 5000))
    asked = []
    real_open = open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            asked.append(n)
            return self.fh.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

    monkeypatch.setattr("builtins.open", lambda p, *a, **k: Counting(real_open(p, *a, **k)))
    with pytest.raises(spec_mod.ConfigError, match="larger than 1000 kB"):
        spec_mod.load_yaml(config)
    assert asked == [spec_mod.MAX_CONFIG_BYTES + 1]


def test_memory_error_is_one_line(run, monkeypatch):
    from nncli import inference

    def boom(*a, **k):
        raise MemoryError()
    monkeypatch.setattr(inference, "inspect", boom)
    r = runner.invoke(main, ["inspect", str(run[1] / "model.h5")])
    assert_one_error(r, 1, "out of memory")


# --- 4. a huge top-k --------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["top_100000000000000000000_accuracy", "top_" + "9" * 5000 + "_accuracy",
                                    "top_1000001_accuracy"])
def test_huge_top_k_is_a_config_error_naming_the_key(tmp_path, blobs_csv, metric):
    config = write_config(tmp_path, f"""
data: {{train: {blobs_csv}}}
metrics: [accuracy, {metric}]
layers:
  - {{type: dense, units: 3, activation: softmax}}
""")
    r = runner.invoke(main, ["train", str(config), "-o", str(tmp_path / "out")])
    assert_one_error(r, 2, str(config), "metrics[1]", "k from 1 to 1,000,000")


# --- 5. uint64 class labels -------------------------------------------------------------------

def test_uint64_class_labels_stay_exact(tmp_path):
    path = tmp_path / "u.h5"
    labels = np.array([2**63, 2**64 - 1, 2**63, 7], dtype=np.uint64)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(8, dtype=np.float32).reshape(4, 2))
        f.create_dataset("y", data=labels)
    table = data.read(str(path))
    enc = data.fit_encoding(table, "categorical_crossentropy", 3)
    assert enc.classes == ["7", str(2**63), str(2**64 - 1)]
    t = data.encode_targets(table, enc, (3,))
    assert t.argmax(axis=1).tolist() == [1, 2, 1, 0]
    binary = data.fit_encoding(data.Table(table.x[:2], labels[:2], "u"), "binary_crossentropy", 1)
    assert binary.classes == [str(2**63), str(2**64 - 1)]


def test_streamed_training_refuses_targets_larger_than_the_memory_budget(tmp_path):
    """Streaming keeps only the targets in memory: targets over the budget are refused before reading."""
    path = tmp_path / "d.h5"
    rows, cols = 20_000, 1000  # targets of 80 MB (over the 64 MB floor), stored in under 1 MB
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.ones((rows, 2), np.float32))
        y = f.create_dataset("y", shape=(rows, cols), dtype="f4", chunks=(1000, cols), compression="gzip")
        for a in range(0, rows, 1000):
            y[a:a + 1000] = np.zeros((1000, cols), np.float32)
    assert path.stat().st_size < 1_000_000
    config = write_config(tmp_path, f"""
data: {{train: d.h5, memory_budget_mb: 0.1}}  # the inputs (160 kB) are streamed
loss: mse
layers:
  - {{type: dense, units: {cols}}}
""")
    r = runner.invoke(main, ["train", str(config), "-o", str(tmp_path / "out")])
    assert_one_error(r, 1, str(path), "targets 'y'", "(20000, 1000)", "memory_budget_mb")


def test_a_model_declaring_more_inputs_than_a_csv_can_hold_is_refused_before_naming_them(tmp_path):
    """A parameter-free network (flatten) passes the parameter budget whatever its input size; a CSV
    prediction must not build one column name per declared input (100M names: gigabytes)."""
    from nncli.data import Encoding, Normalizer

    ck = checkpoint.Checkpoint(
        config_yaml="name: wide\nlayers:\n  - {type: flatten}\n", input_shape=(50_000_000,), task="regression",
        loss="mse", params={}, trainable=[], normalizer=Normalizer("none"), encoding=Encoding("values"),
        rng={"shuffle": np.random.default_rng(0).bit_generator.state, "batch": 0, "sums": []})
    checkpoint.save(ck, tmp_path / "wide.h5")
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    code, seconds, rss_mb, stderr = measured("predict", tmp_path / "wide.h5", tmp_path / "in.csv")
    assert_one_line_fast(code, seconds, rss_mb, stderr, 1, "50,000,000 inputs", "1,000,000 columns")
    assert rss_mb < 800, rss_mb


def test_string_lists_are_read_within_a_byte_budget_block_by_block(tmp_path, monkeypatch):
    """The count of a string list is checked before reading; variable-length strings' bytes only as
    they are read, so the reader stops at the first block past the budget."""
    from nncli import checkpoint as ck

    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("names", data=np.array([f"name{i:04d}" for i in range(50)], dtype=object), dtype=STRINGS)
    monkeypatch.setattr(ck, "STRING_BLOCK", 8)
    with h5py.File(path, "r") as f:
        assert ck._strings(f["names"]) == [f"name{i:04d}" for i in range(50)]
        monkeypatch.setattr(ck, "MAX_STRINGS_BYTES", 8 * 50 - 1)          # one byte short of the whole list
        with pytest.raises(ValueError, match="holds more than 399 bytes of strings"):
            ck._strings(f["names"])
        with pytest.raises(ValueError, match="more than the 10 values allowed"):
            ck._strings(f["names"], 10)
