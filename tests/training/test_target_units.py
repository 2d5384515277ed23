"""Regression targets in their own units (data.normalize_target: auto): a linear model trained on
prices ~1e5 predicts what numpy least squares predicts, in dollars; evaluate's mae/rmse/r2 are
numpy's formulas on those predictions and the loss is the standardised one; the checkpoint
stores the scaling (format 2) and a checkpoint without it loads as before (format 1)."""

from __future__ import annotations

import csv
import io
import shutil

import h5py
import numpy as np
import pytest

from support import error_line, invoke, write_config
from nncli import checkpoint
from nncli.errors import CheckpointError

N = 120


@pytest.fixture(scope="module")
def price_run(tmp_path_factory):
    """A dense linear unit trained full-batch to convergence on y = 1e5 + X beta + noise."""
    folder = tmp_path_factory.mktemp("price")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, 3)) * [1.0, 2.0, 0.5]
    y = 1e5 + x @ np.array([2e4, -1.5e4, 4e4]) + rng.normal(0, 5e3, N)
    with open(folder / "houses.csv", "w") as fh:
        fh.write("rooms,age,area,price\n")
        fh.writelines(f"{a:.6f},{b:.6f},{c:.6f},{p:.2f}\n" for (a, b, c), p in zip(x, y))
    x, y = np.loadtxt(folder / "houses.csv", delimiter=",", skiprows=1, unpack=False)[:, :3], \
        np.loadtxt(folder / "houses.csv", delimiter=",", skiprows=1)[:, 3]   # as written (rounded)
    config = write_config(folder, f"""
data: {{train: houses.csv, normalize: standard}}
layers: [{{type: dense, units: 1}}]
metrics: [mae, rmse, r2]
optimizer: {{type: adam}}
learning_rate: 0.05
batch_size: {N}
epochs: 400
""")
    r = invoke("train", config, "-o", folder / "run", "-q")
    assert r.exit_code == 0, r.stderr
    return folder, x, y


def predictions(r) -> np.ndarray:
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert r.exit_code == 0 and rows[0] == ["price"], r.stderr
    return np.array([float(v[0]) for v in rows[1:]])


def test_predictions_in_dollars_match_least_squares(price_run):
    folder, x, y = price_run
    design = np.column_stack([x, np.ones(N)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    want = design @ coef
    got = predictions(invoke("predict", folder / "run" / "model.h5", folder / "houses.csv"))
    assert abs(want.mean()) > 5e4   # the predictions are in dollars, not standardised
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * y.std())


def test_checkpoint_stores_the_training_mean_and_std(price_run):
    folder, _, y = price_run
    with h5py.File(folder / "run" / "model.h5", "r") as f:
        assert f.attrs["format_version"] == 2 and f["target_normalization"].attrs["kind"] == "standard"
        shift, scale = f["target_normalization/shift"][()], f["target_normalization/scale"][()]
    assert shift.shape == (1,) and scale.shape == (1,)
    np.testing.assert_allclose(shift, [y.mean()], rtol=1e-6)
    np.testing.assert_allclose(1.0 / scale, [y.std()], rtol=1e-6)   # numpy's std (ddof 0)
    info = invoke("inspect", folder / "run" / "model.h5")
    assert f"target standardised for training: mean {y.mean():.6g}, std {y.std():.6g}" in info.stdout


def test_evaluate_metrics_in_units_loss_as_trained(price_run):
    folder, _, y = price_run
    model = folder / "run" / "model.h5"
    p = predictions(invoke("predict", model, folder / "houses.csv"))
    r = invoke("evaluate", model, folder / "houses.csv", "--json")
    assert r.exit_code == 0, r.stderr
    import json
    got = json.loads(r.stdout)
    err = p - y
    assert got["examples"] == N
    np.testing.assert_allclose(got["mae"], np.abs(err).mean(), rtol=1e-4)
    np.testing.assert_allclose(got["rmse"], np.sqrt((err ** 2).mean()), rtol=1e-4)
    np.testing.assert_allclose(got["r2"], 1 - (err ** 2).sum() / ((y - y.mean()) ** 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(got["loss"], (err ** 2).mean() / y.var(), rtol=1e-3)  # mse on y / std


def test_onnx_export_answers_in_units(price_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    folder, x, _ = price_run
    r = invoke("export", folder / "run" / "model.h5", "-o", tmp_path / "m.onnx")
    assert r.exit_code == 0, r.stderr
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.astype(np.float32)})[0].reshape(-1)
    want = predictions(invoke("predict", folder / "run" / "model.h5", folder / "houses.csv"))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_version_1_checkpoint_without_scaling_loads_as_before(price_run, tmp_path):
    folder, _, y = price_run
    v1 = tmp_path / "v1.h5"
    shutil.copy(folder / "run" / "model.h5", v1)
    with h5py.File(v1, "r+") as f:   # what format 1 wrote: no optional items
        f.attrs["format_version"] = 1
        del f["target_normalization"]
    ck = checkpoint.load(v1)
    assert ck.target_scaler.kind == "none"
    # the network's raw outputs, as version 1 printed them: the standardised predictions
    p = predictions(invoke("predict", folder / "run" / "model.h5", folder / "houses.csv"))
    raw = predictions(invoke("predict", v1, folder / "houses.csv"))
    np.testing.assert_allclose(raw, (p - y.mean()) / y.std(), atol=1e-4)
    for version in (0, 3):
        with h5py.File(v1, "r+") as f:
            f.attrs["format_version"] = version
        with pytest.raises(CheckpointError, match=f"format version {version} is not supported .this nncli reads "
                                                  f"versions 1, 2."):
            checkpoint.load(v1)


@pytest.mark.parametrize("damage, words", [
    (lambda f: f["target_normalization/scale"].__setitem__(0, -1.0), "a scale is not positive"),
    (lambda f: f["target_normalization"].attrs.__setitem__("kind", "minmax"), "not a group of kind standard"),
    (lambda f: f.attrs.__setitem__("format_version", 1), "/target_normalization in a version 1 checkpoint"),
    (lambda f: [(f["target_normalization"].__delitem__(k),
                 f["target_normalization"].create_dataset(k, data=np.ones(2, np.float32))) for k in ("shift", "scale")],
     "/target_normalization has shape (2,) for a regression model with outputs of shape (1,)"),
])
def test_damaged_target_scaling_is_refused(price_run, tmp_path, damage, words):
    folder, _, _ = price_run
    bad = tmp_path / "bad.h5"
    shutil.copy(folder / "run" / "model.h5", bad)
    with h5py.File(bad, "r+") as f:
        damage(f)
    r = invoke("predict", bad, folder / "houses.csv")
    assert r.exit_code == 1 and "damaged checkpoint" in error_line(r.stderr) and words in r.stderr


def test_auto_leaves_a_bounded_output_alone(tmp_path, jax_backend):
    from nncli import spec as spec_mod
    from nncli.training.prepare import prepare

    (tmp_path / "d.csv").write_text("a,y\n0,0\n1,1\n2,1\n")
    def target_scaler(activation, mode="auto"):
        cfg = {"data": {"train": "d.csv", "normalize_target": mode}, "loss": "mse",
               "layers": [{"type": "dense", "units": 1, "activation": activation}]}
        return prepare(spec_mod.from_dict(cfg, str(tmp_path / "c.yaml"), base=tmp_path)).target_scaler

    assert target_scaler("sigmoid").kind == "none"      # 0/1 targets of a sigmoid keep their range (xor)
    assert target_scaler("linear", "none").kind == "none"
    ts = target_scaler("linear")
    np.testing.assert_allclose([ts.shift[0], 1 / ts.scale[0]], [2 / 3, np.std([0, 1, 1])], rtol=1e-6)
    with pytest.raises(Exception, match="data.normalize_target: standard needs a linear output .a standardised "
                                        "target is unbounded.; the output activation is sigmoid"):
        target_scaler("sigmoid", "standard")


def test_normalize_target_config_rules(tmp_path):
    (tmp_path / "d.csv").write_text("a,y\n1,u\n2,v\n")
    config = write_config(tmp_path, "data: {train: d.csv, normalize_target: standard}\n"
                                    "layers: [{type: dense, units: 2, activation: softmax}]\n")
    r = invoke("train", config, "-q")
    assert r.exit_code == 2 and error_line(r.stderr).endswith(
        "data.normalize_target (line 1): standard is for regression targets; the loss categorical_crossentropy "
        "is a classification loss")
