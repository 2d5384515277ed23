"""The CLI end to end: click's CliRunner and a real subprocess of the installed entry point;
and a checkpoint read with h5py + numpy only, run forward in numpy, matching `nncli predict`."""

from __future__ import annotations

import csv
import io
import json
import subprocess

import h5py
import numpy as np
from click.testing import CliRunner

from support import nncli_executable, write_config
from nncli.cli import main


def numpy_forward(model_path, x_raw):
    """An independent forward pass from the public checkpoint format."""
    import yaml

    with h5py.File(model_path, "r") as f:
        config = yaml.safe_load(f["config"].attrs["yaml"])
        norm = f["normalization"]
        x = x_raw.astype(np.float64)
        if norm.attrs["kind"] != "none":
            x = (x - norm["shift"][()]) * norm["scale"][()]
        for layer in config["layers"]:
            assert layer["type"] == "dense", "this reference knows dense layers"
            p = f["params"][layer["name"]]
            x = x @ p["W"][()].astype(np.float64) + (p["b"][()] if "b" in p else 0)
            act = layer["activation"]
            if act == "tanh":
                x = np.tanh(x)
            elif act == "softmax":
                e = np.exp(x - x.max(1, keepdims=True))
                x = e / e.sum(1, keepdims=True)
            elif act == "sigmoid":
                x = 1 / (1 + np.exp(-x))
            elif act == "relu":
                x = np.maximum(x, 0)
            else:
                assert act == "linear", act
        classes = [c.decode() for c in f["labels/classes"][()]] if "classes" in f["labels"] else None
    return x, classes


def read_csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_matches_numpy_forward_pass(blobs_run, blobs_csv):
    result, _ = blobs_run
    model = result.output / "model.h5"
    r = CliRunner().invoke(main, ["predict", str(model), str(blobs_csv)])
    assert r.exit_code == 0, r.stderr
    rows = read_csv_rows(r.stdout)
    raw = np.loadtxt(blobs_csv, delimiter=",", skiprows=1, usecols=(0, 1))
    probs, classes = numpy_forward(model, raw)
    assert list(rows[0]) == ["label"] + [f"p_{c}" for c in classes]
    got = np.array([[float(row[f"p_{c}"]) for c in classes] for row in rows])
    np.testing.assert_allclose(got, probs, atol=1e-6)
    assert [row["label"] for row in rows] == [classes[i] for i in probs.argmax(1)]


def test_predict_labels_are_decoded_and_accurate(blobs_run, blobs_csv):
    result, _ = blobs_run
    r = CliRunner().invoke(main, ["predict", str(result.output / "model.h5"), str(blobs_csv), "--no-proba"])
    rows = read_csv_rows(r.stdout)
    truth = [line.split(",")[2] for line in blobs_csv.read_text().split()[1:]]
    assert list(rows[0]) == ["label"]
    assert np.mean([row["label"] == t for row, t in zip(rows, truth)]) > 0.95


def test_evaluate_json_agrees_with_history(blobs_run, blobs_csv):
    result, _ = blobs_run
    r = CliRunner().invoke(main, ["evaluate", str(result.output / "model.h5"), str(blobs_csv), "--json"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["examples"] == 90 and 0.9 < out["accuracy"] <= 1.0 and out["loss"] > 0


def test_inspect_shows_layers_shapes_params(blobs_run):
    result, _ = blobs_run
    r = CliRunner().invoke(main, ["inspect", str(result.output / "model.h5")])
    assert r.exit_code == 0, r.stderr
    assert "dense_1" in r.stdout and "(batch, 8)" in r.stdout
    assert " 24" in r.stdout and " 27" in r.stdout and " 51" in r.stdout  # 2*8+8, 8*3+3, total
    info = json.loads(CliRunner().invoke(main, ["inspect", str(result.output / "model.h5"), "--json"]).stdout)
    assert info["total_params"] == 51 and info["classes"] == ["blue", "green", "red"]


def test_train_through_cli_runner(tmp_path, blobs_csv):
    from support import BLOBS_CONFIG

    config = write_config(tmp_path, BLOBS_CONFIG.format(train=blobs_csv))
    r = CliRunner().invoke(main, ["train", str(config), "-o", str(tmp_path / "run"), "--epochs", "2"])
    assert r.exit_code == 0, r.stderr
    assert "backend jax" in r.stdout and "model saved to" in r.stdout
    assert "compiling the training graph" in r.stderr
    assert r.stderr.count("epoch ") >= 2 and "\r" not in r.stderr  # plain lines, no bar when not a terminal


def test_real_subprocess_train_predict(tmp_path, xor_csv):
    exe = nncli_executable()
    assert exe, "the nncli entry point is not installed"
    config = write_config(tmp_path, f"""
data: {{train: {xor_csv}}}
seed: 3
layers:
  - {{type: dense, units: 2, activation: sigmoid}}
  - {{type: dense, units: 1, activation: sigmoid}}
loss: mse
optimizer: sgd
learning_rate: 2.0
epochs: 3
batch_size: 4
""")
    run = subprocess.run([exe, "train", str(config), "-o", str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "model saved to" in run.stdout
    pred = subprocess.run([exe, "predict", str(tmp_path / "run" / "model.h5"), str(xor_csv), "-o",
                           str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=300)
    assert pred.returncode == 0, pred.stderr
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "y"
    bad = subprocess.run([exe, "train", str(tmp_path / "missing.yaml")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("Error: ") and "Traceback" not in bad.stderr


def test_version_and_help():
    r = CliRunner().invoke(main, ["--help"])
    for cmd in ("train", "predict", "evaluate", "inspect"):
        assert cmd in r.stdout
