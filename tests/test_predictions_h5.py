"""`nncli predict ... -o FILE.h5`: predictions as arrays, checked against an independent numpy
forward pass of the checkpoint (test_cli.numpy_forward) and against predict's CSV text; and the
output rules (never an input, never another kind of file, nothing half-written)."""

from __future__ import annotations

import h5py
import numpy as np
from click.testing import CliRunner

from nncli.cli import main
from support import error_line
from test_cli import numpy_forward, read_csv_rows


def predict(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


def test_classifier_arrays_equal_numpy_and_the_csv_labels(blobs_run, blobs_csv, tmp_path):
    result, _ = blobs_run
    model, out = result.output / "model.h5", tmp_path / "p.h5"
    r = predict(model, blobs_csv, "-o", out)
    assert r.exit_code == 0, r.stderr
    raw = np.loadtxt(blobs_csv, delimiter=",", skiprows=1, usecols=(0, 1))
    probs, classes = numpy_forward(model, raw)
    with h5py.File(out, "r") as f:
        assert f.attrs["nncli_predictions"] == 1 and f.attrs["rows"] == len(raw) and f.attrs["task"] == "classification"
        got = f["probabilities"][()]
        labels = [v.decode() for v in f["label"][()]]
        stored = [c.decode() if isinstance(c, bytes) else c for c in f["probabilities"].attrs["classes"]]
    assert got.dtype == np.float32 and got.shape == (len(raw), 3) and stored == classes
    np.testing.assert_allclose(got, probs, atol=1e-6)
    assert labels == [classes[i] for i in probs.argmax(1)]
    text = read_csv_rows(predict(model, blobs_csv).stdout)
    assert labels == [row["label"] for row in text]
    np.testing.assert_array_equal(got, np.array([[float(row[f"p_{c}"]) for c in classes] for row in text],
                                                np.float32))  # %.9g round-trips float32


def test_no_proba_writes_the_labels_only(blobs_run, blobs_csv, tmp_path):
    result, _ = blobs_run
    out = tmp_path / "p.h5"
    assert predict(result.output / "model.h5", blobs_csv, "-o", out, "--no-proba").exit_code == 0
    with h5py.File(out, "r") as f:
        assert set(f) == {"label"} and len(f["label"]) == 90


def test_regression_in_the_targets_units(tmp_path):
    from support import write_config

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = 1000 + 300 * (x @ [1.0, -2.0, 0.5]) + rng.normal(0, 10, 200)
    (tmp_path / "r.csv").write_text("a,b,c,price\n" + "".join(f"{p:.5f},{q:.5f},{s:.5f},{t:.3f}\n"
                                                             for (p, q, s), t in zip(x, y)))
    config = write_config(tmp_path, f"""
name: r
data: {{train: {tmp_path / 'r.csv'}, y: price}}
layers: [{{type: dense, units: 1}}]
loss: mse
optimizer: adam
learning_rate: 0.05
epochs: 3
""")
    assert CliRunner().invoke(main, ["train", str(config), "-o", str(tmp_path / "run"), "-q"]).exit_code == 0
    model, out = tmp_path / "run" / "model.h5", tmp_path / "p.h5"
    assert predict(model, tmp_path / "r.csv", "-o", out).exit_code == 0
    text = predict(model, tmp_path / "r.csv").stdout
    with h5py.File(out, "r") as f:
        got = f["price"][()]
    assert got.shape == (200, 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:, 0], np.array([float(r["price"]) for r in read_csv_rows(text)], np.float32))


def test_another_kind_of_file_is_never_replaced(blobs_run, blobs_csv, tmp_path):
    result, _ = blobs_run
    model = result.output / "model.h5"
    other = tmp_path / "other.h5"
    other.write_bytes((result.output / "model.h5").read_bytes())  # another checkpoint, not an input
    before = other.read_bytes()
    r = predict(model, blobs_csv, "-o", other)
    assert r.exit_code == 2 and "not an nncli predictions file" in error_line(r.stderr)
    assert other.read_bytes() == before
    r = predict(model, blobs_csv, "-o", model)
    assert r.exit_code == 2 and "also an input" in error_line(r.stderr)
    # a predictions file is replaced whole (atomically), and no temporary file is left
    out = tmp_path / "p.h5"
    assert predict(model, blobs_csv, "-o", out).exit_code == 0
    assert predict(model, blobs_csv, "-o", out, "--no-proba").exit_code == 0
    with h5py.File(out, "r") as f:
        assert set(f) == {"label"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_bad_input_row_leaves_the_previous_predictions(blobs_run, blobs_csv, tmp_path):
    result, _ = blobs_run
    model, out = result.output / "model.h5", tmp_path / "p.h5"
    assert predict(model, blobs_csv, "-o", out).exit_code == 0
    before = out.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text(blobs_csv.read_text().replace("\n", "\nx,1,red\n", 2).replace("\nx,1,red\n", "\n", 1))
    r = predict(model, bad, "-o", out)
    assert r.exit_code == 1 and "line 3" in error_line(r.stderr)
    assert out.read_bytes() == before and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_symlink_output_replaces_its_target_only_when_that_is_a_predictions_file(blobs_run, blobs_csv,
                                                                                   tmp_path):
    result, _ = blobs_run
    model = result.output / "model.h5"
    other = tmp_path / "checkpoint-copy.h5"
    other.write_bytes(model.read_bytes())
    link = tmp_path / "link.h5"
    link.symlink_to(other)
    before = other.read_bytes()
    r = predict(model, blobs_csv, "-o", link)
    assert r.exit_code == 2 and "not an nncli predictions file" in error_line(r.stderr)
    assert other.read_bytes() == before and link.is_symlink()
    target = tmp_path / "preds.h5"
    assert predict(model, blobs_csv, "-o", target).exit_code == 0
    link.unlink()
    link.symlink_to(target)
    assert predict(model, blobs_csv, "-o", link, "--no-proba").exit_code == 0
    assert link.is_symlink() and link.resolve() == target.resolve()   # the link kept, its target replaced
    with h5py.File(target, "r") as f:
        assert set(f) == {"label"}
