"""Bad configs and bad data files: one clear line, the right exit status, no traceback, nothing lost."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nncli.cli import main

GOOD = """\
name: t
data:
  train: {train}
layers:
  - {type: dense, units: 4, activation: tanh}
  - {type: dense, units: 1, activation: sigmoid}
loss: binary_crossentropy
optimizer: sgd
learning_rate: 0.5
epochs: 2
batch_size: 4
"""

# (case id, config text (with {train}), exit status, words the one-line message must contain)
BAD_CONFIGS = [
    ("unknown top key", GOOD + "epocs: 3\n", 2, ["epocs", "unknown key", "did you mean 'epochs'", "line 12"]),
    ("epochs not int", GOOD.replace("epochs: 2", "epochs: two"), 2, ["epochs", "line 10", "integer"]),
    ("epochs zero", GOOD.replace("epochs: 2", "epochs: 0"), 2, ["epochs", "from 1 to", "got 0"]),
    ("negative lr", GOOD.replace("learning_rate: 0.5", "learning_rate: -0.1"), 2, ["learning_rate", "> 0"]),
    ("lr is text", GOOD.replace("learning_rate: 0.5", "learning_rate: fast"), 2, ["learning_rate", "number"]),
    ("unknown layer type", GOOD.replace("type: dense, units: 4", "type: dence, units: 4"), 2,
     ["layers[0].type", "did you mean 'dense'", "line 5"]),
    ("unknown activation", GOOD.replace("activation: tanh", "activation: tahn"), 2,
     ["layers[0].activation", "did you mean 'tanh'"]),
    ("unknown loss", GOOD.replace("loss: binary_crossentropy", "loss: binary_crossentropi"), 2,
     ["loss", "did you mean 'binary_crossentropy'"]),
    ("unknown optimizer", GOOD.replace("optimizer: sgd", "optimizer: adamm"), 2,
     ["optimizer.type", "did you mean 'adam'"]),
    ("units missing", GOOD.replace("units: 4, ", ""), 2, ["layers[0].units", "missing"]),
    ("units negative", GOOD.replace("units: 4", "units: -4"), 2, ["layers[0].units", "from 1 to", "got -4"]),
    ("unknown layer key", GOOD.replace("units: 4,", "units: 4, unit: 3,"), 2,
     ["layers[0].unit", "did you mean 'units'"]),
    ("layers empty", GOOD.split("layers:")[0] + "layers: []\nloss: mse\n", 2, ["layers", "1 to 1000 items", "got 0"]),
    ("layers not list", GOOD.split("layers:")[0] + "layers: dense\n", 2, ["layers", "expected a list"]),
    ("layer not mapping", GOOD.replace("  - {type: dense, units: 4, activation: tanh}", "  - dense"), 2,
     ["layers[0]", "expected a mapping"]),
    ("missing data", "layers:\n  - {type: dense, units: 1}\n", 2, ["data", "missing required key"]),
    ("missing train file", GOOD.replace("train: {train}", "train: nowhere.csv"), 2,
     ["data.train", "not found", "nowhere.csv"]),
    ("bad data suffix", GOOD.replace("train: {train}", "train: config.yaml"), 2, ["data.train", ".csv"]),
    ("validation out of range", GOOD.replace("  train: {train}", "  train: {train}\n  validation: 1.5"), 2,
     ["data.validation"]),
    ("normalize choice", GOOD.replace("  train: {train}", "  train: {train}\n  normalize: zscore"), 2,
     ["data.normalize", "standard"]),
    ("device choice", GOOD + "device: tpu\n", 2, ["device", "cpu, gpu, auto"]),
    ("batch size text", GOOD.replace("batch_size: 4", "batch_size: [4]"), 2, ["batch_size", "integer"]),
    ("steps per execution zero", GOOD + "steps_per_execution: 0\n", 2,
     ["steps_per_execution", "auto or an integer from 1 to 4096", "got 0"]),
    ("steps per execution word", GOOD + "steps_per_execution: fast\n", 2,
     ["steps_per_execution", "auto or an integer", "'fast'"]),
    ("adam beta out of range", GOOD.replace("optimizer: sgd", "optimizer: {type: adam, beta_1: 1.5}"), 2,
     ["optimizer.beta_1", "< 1.0"]),
    ("duplicate key", GOOD + "epochs: 3\n", 2, ["epochs", "duplicate key"]),
    ("invalid yaml", GOOD + "layers: [\n", 2, ["invalid YAML", "line"]),
    ("top level not mapping", "- 1\n- 2\n", 2, ["expected a mapping"]),
    ("empty file", "", 2, ["empty"]),
    ("alias bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                   "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n", 2, ["too large"]),
    ("python tag", GOOD + "x: !!python/object/apply:os.system ['touch PWNED']\n", 2, ["invalid YAML"]),
    ("units vs classes", GOOD.replace("units: 1, activation: sigmoid", "units: 1, activation: softmax")
     .replace("loss: binary_crossentropy", "loss: categorical_crossentropy"), 2,
     ["layers[1]", "2 classes", "1 units"]),
    ("accuracy on regression", GOOD.replace("loss: binary_crossentropy", "loss: mse") + "metrics: [accuracy]\n", 2,
     ["metrics[0]", "classification"]),
    ("monitor unknown", GOOD + "early_stopping: {monitor: val_acc}\n", 2, ["early_stopping.monitor", "cannot monitor"]),
    ("reshape impossible", GOOD.replace("  - {type: dense, units: 4, activation: tanh}",
                                        "  - {type: reshape, shape: [3, 3]}"), 2,
     ["layers[0]", "reshape", "(2,)"]),
]


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def _check_one_line(result, code, words):
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    err = result.stderr.strip()
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert err.startswith("Error: ") and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.mark.parametrize("case,text,code,words", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config(tmp_path, xor_csv, runner, case, text, code, words):
    config = tmp_path / "config.yaml"
    config.write_text(text.replace("{train}", str(xor_csv)))
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", str(config), "-o", str(out), "-q"])
    err = _check_one_line(result, code, words)
    assert str(config) in err or "config" in err
    assert not out.exists() or not any(out.iterdir()), "a failed config must not write output"
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v
    return path


BAD_DATA = [
    ("empty csv", lambda p: p.write_text(""), ["empty"]),
    ("header only", lambda p: p.write_text("a,b,y\n"), ["no data rows"]),
    ("ragged row", lambda p: p.write_text("a,b,y\n1,2,0\n1,2\n"), ["line 3", "expected 3 columns"]),
    ("non numeric cell", lambda p: p.write_text("a,b,y\n1,2,0\n1,x2,1\n"), ["line 3", "column 'b'", "'x2'"]),
    # (a nan cell is a missing value since typed columns: imputed; inf is still refused)
    ("inf cell", lambda p: p.write_text("a,b,y\n1,2,0\ninf,1,1\n"), ["line 3", "column 'a'", "non-finite"]),
    ("empty target", lambda p: p.write_text("a,b,y\n1,2,0\n1,1,\n"), ["line 3", "1 missing target value (line 3)"]),
    ("NA target", lambda p: p.write_text("a,b,y\n1,2,0\n1,1,NA\n3,3,1\n2,2,?\n"),
     ["line 3", "2 missing target values (lines 3, 5)"]),
    ("three classes for sigmoid", lambda p: p.write_text("a,b,y\n1,2,0\n1,1,1\n0,0,2\n"), ["2 classes", "3"]),
    ("binary bytes", lambda p: p.write_bytes(b"\xff\xfe\x00\x01garbage"), ["UTF-8"]),
    # found by the fuzzer: a form feed in a column name used to split the message in two
    ("form feed in header", lambda p: p.write_bytes(b"0\x0c0\n0.0\n"), ["no input columns", "0\\x0c0"]),
]


@pytest.mark.parametrize("case,make,words", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_csv(tmp_path, runner, case, make, words):
    data = tmp_path / "d.csv"
    make(data)
    config = tmp_path / "config.yaml"
    config.write_text(GOOD.replace("{train}", str(data)))
    result = runner.invoke(main, ["train", str(config), "-o", str(tmp_path / "run"), "-q"])
    err = _check_one_line(result, 1, words)
    assert str(data) in err


BAD_H5 = [
    ("missing dataset", dict(x=np.zeros((4, 2), "f4")), ["no dataset 'y'"]),
    ("string inputs", dict(x=np.array([b"a", b"b"]), y=np.array([0, 1])), ["expected numbers"]),
    ("zero rows", dict(x=np.zeros((0, 2), "f4"), y=np.zeros(0)), ["no rows"]),
    ("row mismatch", dict(x=np.zeros((4, 2), "f4"), y=np.zeros(3)), ["4 rows", "3"]),
    ("scalar", dict(x=np.float32(1), y=np.zeros(3)), ["scalar"]),
    ("inf input", dict(x=np.array([[0, np.inf], [1, 1]], "f4"), y=np.array([0, 1])), ["non-finite"]),
]


@pytest.mark.parametrize("case,datasets,words", BAD_H5, ids=[c[0] for c in BAD_H5])
def test_bad_hdf5(tmp_path, runner, case, datasets, words):
    data = _h5(tmp_path / "d.h5", **datasets)
    config = tmp_path / "config.yaml"
    config.write_text(GOOD.replace("{train}", str(data)))
    result = runner.invoke(main, ["train", str(config), "-o", str(tmp_path / "run"), "-q"])
    err = _check_one_line(result, 1, words)
    assert str(data) in err


def test_class_labels_need_one_output_vector_per_example(tmp_path, runner):
    """Found by the fuzzer: 2-D inputs through dense layers give a (2, units) output per example."""
    data = _h5(tmp_path / "d.h5", x=np.zeros((4, 2, 2), "f4"), y=np.array([0, 1, 0, 1]))
    config = tmp_path / "config.yaml"
    config.write_text(GOOD.replace("{train}", str(data)))
    result = runner.invoke(main, ["train", str(config), "-o", str(tmp_path / "run"), "-q"])
    _check_one_line(result, 2, ["layers[1]", "one class label per example", "(1,)", "(2, 1)", str(data)])


def test_not_an_hdf5_file(tmp_path, runner):
    data = tmp_path / "d.h5"
    data.write_text("x,y\n1,2\n")
    config = tmp_path / "config.yaml"
    config.write_text(GOOD.replace("{train}", str(data)))
    result = runner.invoke(main, ["train", str(config), "-q"])
    _check_one_line(result, 1, ["not a readable HDF5 file"])


def test_config_file_missing(runner, tmp_path):
    result = runner.invoke(main, ["train", str(tmp_path / "nope.yaml")])
    _check_one_line(result, 2, ["nope.yaml", "not found"])


@pytest.mark.parametrize("content,words", [
    (b"", ["not an HDF5 file"]),
    (b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, ["not an HDF5 file"]),
    (b"just text", ["not an HDF5 file"]),
])
def test_predict_on_a_broken_checkpoint(tmp_path, runner, xor_csv, content, words):
    model = tmp_path / "model.h5"
    model.write_bytes(content)
    result = runner.invoke(main, ["predict", str(model), str(xor_csv)])
    _check_one_line(result, 1, words)


def test_predict_on_hdf5_that_is_not_a_checkpoint(tmp_path, runner, xor_csv):
    model = _h5(tmp_path / "model.h5", x=np.zeros(3))
    result = runner.invoke(main, ["predict", str(model), str(xor_csv)])
    _check_one_line(result, 1, ["not an nncli checkpoint"])


def test_predict_input_problems_and_output_never_half_written(tmp_path, runner, blobs_run):
    result, _ = blobs_run
    model = result.output / "model.h5"
    out = tmp_path / "preds.csv"
    out.write_text("previous good output\n")
    cases = [
        # names that are not the model's inputs are refused, not used by position (issue 12)
        ("p,q,r,s\n1,2,3,4\n", ["line 1", "missing a, b", "not model inputs: p, q, r, s", "--by-position"]),
        ("a,b\n1,zz\n", ["line 2", "column 'b'", "'zz'"]),
        ("", ["empty"]),
    ]
    for text, words in cases:
        bad = tmp_path / "in.csv"
        bad.write_text(text)
        r = runner.invoke(main, ["predict", str(model), str(bad), "-o", str(out)])
        _check_one_line(r, 1, words)
        assert out.read_text() == "previous good output\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_deeply_nested_flow_collections_are_refused_while_scanning(tmp_path):
    """PyYAML's scanner does work proportional to the nesting depth for every token: a config of
    nothing but `[` just under the 1 MB limit would take hours before any depth check ran."""
    import time

    config = tmp_path / "deep.yaml"
    config.write_text("[" * 999_000)
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["train", str(config)])
    assert time.perf_counter() - t0 < 10
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"Error: {config}: line 1: nested more than 50 levels deep"
