"""Issue 12, CSV items: columns are matched by name (never silently by position), a CSV
without a header row is refused (or read with data.header: false), header checks are
linear in the number of columns, and the streamed and in-memory predictions write the
same, correctly quoted text."""

from __future__ import annotations

import csv
import io
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from support import write_config
from nncli import checkpoint, data, inference
from nncli.cli import main
from nncli.data.csv import read_csv
from nncli.errors import DataError


def one_line_error(r, code, *words):
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in r.output and "Traceback" not in r.stderr
    assert err.startswith("Error: ") and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


def blobs_rows(blobs_csv):
    """(a, b, colour) rows of the shared blobs file, without its header."""
    return [line.split(",") for line in blobs_csv.read_text().splitlines()[1:]]


def write_rows(path, header, rows):
    path.write_text("".join(",".join(r) + "\n" for r in ([header] if header else []) + rows))
    return path


def predict(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


# --- 1. names that only partly match are an error, not a match by position ---------------------

@pytest.mark.parametrize("header,missing,unused", [
    (["b", "aa", "colour"], "missing a", "not model inputs: aa"),      # reordered, one name misspelt
    (["A", "B", "colour"], "missing a, b", "not model inputs: A, B"),  # all names uppercased
])
def test_partly_matching_names_are_refused(tmp_path, blobs_run, blobs_csv, monkeypatch, header, missing, unused):
    result, _ = blobs_run
    model = result.output / "model.h5"
    rows = blobs_rows(blobs_csv)
    src = write_rows(tmp_path / "in.csv", header, [[r[1], r[0], r[2]] for r in rows])
    out = tmp_path / "preds.csv"
    out.write_text("earlier output\n")
    before = out.stat().st_mtime_ns
    r = predict(model, src, "-o", out)
    err = one_line_error(r, 1, str(src), "line 1", "does not match the model's input columns", missing, unused,
                         "--by-position")
    assert "colour" not in err.split("not model inputs:")[1]  # the target column is expected, not "unused"
    assert out.read_text() == "earlier output\n" and out.stat().st_mtime_ns == before
    # the same rule and message for a big CSV (streamed) and for evaluate
    monkeypatch.setattr(inference, "PREDICT_STREAM_BYTES", 0)
    assert inference.streams_csv(src)
    assert predict(model, src, "-o", out).stderr == r.stderr
    assert out.read_text() == "earlier output\n"
    ev = CliRunner().invoke(main, ["evaluate", str(model), str(src)])
    assert one_line_error(ev, 1) == err


def test_reordered_names_and_extra_columns_are_read_by_name(tmp_path, blobs_run, blobs_csv, monkeypatch):
    result, _ = blobs_run
    model = result.output / "model.h5"
    want = predict(model, blobs_csv)
    assert want.exit_code == 0, want.stderr
    rows = blobs_rows(blobs_csv)
    src = write_rows(tmp_path / "in.csv", ["id", "colour", "b", "a"],
                     [[str(i), r[2], r[1], r[0]] for i, r in enumerate(rows)])
    got = predict(model, src)
    assert got.exit_code == 0, got.stderr
    assert got.stdout == want.stdout
    monkeypatch.setattr(inference, "PREDICT_STREAM_BYTES", 0)
    assert predict(model, src).stdout == want.stdout


# --- --by-position ------------------------------------------------------------------------------

def test_a_file_without_header_needs_by_position(tmp_path, blobs_run, blobs_csv, monkeypatch):
    result, _ = blobs_run
    model = result.output / "model.h5"
    rows = blobs_rows(blobs_csv)
    want = predict(model, blobs_csv).stdout
    inputs_only = write_rows(tmp_path / "x.csv", None, [r[:2] for r in rows])
    with_target = write_rows(tmp_path / "xy.csv", None, rows)
    for streamed in (False, True):
        monkeypatch.setattr(inference, "PREDICT_STREAM_BYTES", 0 if streamed else 16 << 20)
        # no header: the first row is not taken for column names (which would lose a row)
        one_line_error(predict(model, inputs_only), 1, str(inputs_only), "line 1 is all numbers",
                       "not a header row", "--by-position")
        one_line_error(predict(model, with_target), 1, str(with_target), "missing a, b")
        # --by-position: every row, the columns in order; the target column (last) is ignored;
        # a header row, when there is one, is skipped
        for src in (inputs_only, with_target, blobs_csv):
            r = predict(model, src, "--by-position")
            assert r.exit_code == 0, r.stderr
            assert r.stdout == want, (src, streamed)
        # strict: the inputs, or the inputs and the target; nothing else
        wide = write_rows(tmp_path / "wide.csv", None, [r[:2] + ["1"] + r[2:] for r in rows])
        one_line_error(predict(model, wide, "--by-position"), 1, str(wide), "--by-position",
                       "expected 2 (the inputs) or 3 (the inputs, then the target) columns, got 4")
    # evaluate: the target is required, last
    ev = CliRunner().invoke(main, ["evaluate", str(model), str(with_target), "--by-position", "--json"])
    by_name = CliRunner().invoke(main, ["evaluate", str(model), str(blobs_csv), "--json"])
    assert ev.exit_code == 0, ev.stderr
    assert ev.stdout == by_name.stdout
    one_line_error(CliRunner().invoke(main, ["evaluate", str(model), str(inputs_only), "--by-position"]), 1,
                   "expected 3 (2 inputs, then the target) columns, got 2")


def test_by_position_is_for_csv_inputs(tmp_path, blobs_run):
    result, _ = blobs_run
    src = tmp_path / "x.h5"
    with h5py.File(src, "w") as f:
        f["x"] = np.zeros((3, 2), np.float32)
    one_line_error(predict(result.output / "model.h5", src, "--by-position"), 2, "--by-position", str(src))


@pytest.fixture(scope="module")
def h5_model(tmp_path_factory):
    """A classifier trained on HDF5 data: no column names (its inputs are x0, x1 for a CSV)."""
    from nncli.training import trainer

    folder = tmp_path_factory.mktemp("h5model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    with h5py.File(folder / "train.h5", "w") as f:
        f["x"], f["y"] = x, y
    config = write_config(folder, f"""
data: {{train: {folder / 'train.h5'}}}
layers:
  - {{type: dense, units: 2, activation: softmax}}
epochs: 1
batch_size: 16
""")
    trainer.train(config, output=str(folder / "run"))
    return folder / "run" / "model.h5", x, y


def test_an_hdf5_trained_model_reads_x0_to_xn_or_by_position(tmp_path, h5_model):
    model, x, y = h5_model
    rows = [[f"{v:.6f}" for v in r] + [str(t)] for r, t in zip(x, y)]
    named = write_rows(tmp_path / "named.csv", ["x1", "y", "x0"], [[r[1], r[2], r[0]] for r in rows])
    other = write_rows(tmp_path / "other.csv", ["p0", "p1", "label"], rows)
    want = predict(model, named)
    assert want.exit_code == 0, want.stderr
    one_line_error(predict(model, other), 1, "missing x0, x1", "not model inputs: p0, p1, label", "--by-position")
    r = predict(model, other, "--by-position")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == want.stdout
    ev = CliRunner().invoke(main, ["evaluate", str(model), str(other), "--by-position", "--json"])
    assert ev.exit_code == 0, ev.stderr
    assert ev.stdout == CliRunner().invoke(main, ["evaluate", str(model), str(named), "--json"]).stdout


# --- 2. a CSV without a header row in training: an error, or data.header: false ----------------

TRAIN = """
seed: 0
data: {{train: {train}{extra}}}
layers:
  - {{type: dense, units: 3, activation: softmax}}
epochs: 1
batch_size: 16
checkpoint_interval: 0
"""


@pytest.mark.parametrize("kind", ["numeric labels", "text labels"])
def test_training_on_a_file_without_header_is_refused(tmp_path, blobs_csv, kind):
    rows = blobs_rows(blobs_csv)
    if kind == "numeric labels":  # every cell of the first row is a number
        codes = {"red": "0", "green": "1", "blue": "2"}
        rows = [r[:2] + [codes[r[2]]] for r in rows]
        words = ["line 1 is all numbers"]
    else:  # "0.1,-0.2,red": input names that are numbers, a target name that is also a label
        words = ["looks like a data row"]
    src = write_rows(tmp_path / "noheader.csv", None, rows)
    config = write_config(tmp_path, TRAIN.format(train=src, extra=""))
    r = CliRunner().invoke(main, ["train", str(config), "-o", str(tmp_path / "run"), "-q"])
    one_line_error(r, 1, str(src), *words, "data.header: false")
    assert not (tmp_path / "run" / "model.h5").exists()


def test_header_false_names_the_columns_col1_to_coln(tmp_path, blobs_csv):
    rows = blobs_rows(blobs_csv)
    src = write_rows(tmp_path / "noheader.csv", None, rows)
    test = write_rows(tmp_path / "test.csv", None, rows[:30])
    config = write_config(tmp_path, TRAIN.format(train=src, extra=f", header: false, test: {test}"))
    r = CliRunner().invoke(main, ["train", str(config), "-o", str(tmp_path / "run"), "-q"])
    assert r.exit_code == 0, r.stderr
    assert "test: loss" in r.stdout  # the header-less test file is read the same way
    ck = checkpoint.load(tmp_path / "run" / "model.h5")
    assert ck.x_names == ["col1", "col2"] and ck.y_name == "col3" and ck.encoding.classes == ["blue", "green", "red"]
    table = data.read(str(src), None, None, header=False)
    assert len(table.x) == len(rows)  # the first row is data
    np.testing.assert_allclose(table.x[0], [float(v) for v in rows[0][:2]], rtol=1e-6)
    # data.y / data.x name the columns col1 .. colN; messages count lines from 1
    t2 = data.read(str(src), ["col2"], "col1", header=False)
    assert t2.x_names == ["col2"] and t2.y_name == "col1" and t2.y[0] == float(rows[0][0])
    ragged = write_rows(tmp_path / "ragged.csv", None, rows[:3] + [rows[3][:2]])
    with pytest.raises(DataError, match=r"line 4: expected 3 columns as in line 1, got 2"):
        data.read(str(ragged), None, None, header=False)
    # predicting on a header-less file takes --by-position
    r = predict(tmp_path / "run" / "model.h5", src, "--by-position", "--no-proba")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == len(rows) + 1, r.stderr


def test_data_header_must_be_a_boolean(tmp_path, blobs_csv):
    config = write_config(tmp_path, TRAIN.format(train=blobs_csv, extra=", header: maybe"))
    r = CliRunner().invoke(main, ["train", str(config), "-o", str(tmp_path / "run"), "-q"])
    one_line_error(r, 2, str(config), "data.header", "expected true or false")


# --- 3. header handling is linear in the number of columns -------------------------------------

def test_a_csv_with_100000_columns_is_read_quickly(tmp_path):
    n = 100_000
    src = tmp_path / "wide.csv"
    names = [f"c{i}" for i in range(n)]
    src.write_text(",".join(names) + "\n" + ("1," * (n - 1) + "0\n") * 2)
    t0 = time.perf_counter()
    table = read_csv(str(src), None, None)
    seconds = time.perf_counter() - t0
    assert table.x.shape == (2, n - 1) and table.y_name == f"c{n - 1}"
    t0 = time.perf_counter()
    for_model = data.read(str(src), None, names[-1], with_targets=False, expect_x=names[-2::-1])
    seconds_model = time.perf_counter() - t0
    assert for_model.x.shape == (2, n - 1)
    print(f"\nread a CSV of {n} columns in {seconds:.2f}s (training) and {seconds_model:.2f}s (for a model)")
    assert seconds < 5 and seconds_model < 5  # the quadratic checks took minutes


# --- 4. one formatter: streamed and in-memory predictions are the same, correctly quoted text ---

CLASSES = ["line\nbreak", 'comma, and "quote"', "carriage\rreturn", "plain"]


@pytest.fixture(scope="module")
def odd_names_model(tmp_path_factory):
    from nncli.training import trainer

    folder = tmp_path_factory.mktemp("oddnames")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 3))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    w.writerow(["a", "b", "c", "kind"])
    for i, row in enumerate(x):
        w.writerow([f"{v:.4f}" for v in row] + [CLASSES[i % 4]])
    (folder / "train.csv").write_text(buf.getvalue(), newline="")
    config = write_config(folder, f"""
data: {{train: {folder / 'train.csv'}}}
layers:
  - {{type: dense, units: 4, activation: softmax}}
epochs: 1
batch_size: 16
""")
    trainer.train(config, output=str(folder / "run"))
    return folder / "run" / "model.h5", folder / "train.csv"


@pytest.mark.parametrize("proba", ["--proba", "--no-proba"])
def test_streamed_and_in_memory_predictions_are_identical_and_quoted(tmp_path, odd_names_model, monkeypatch, proba):
    model, src = odd_names_model
    monkeypatch.setattr(inference, "PREDICT_BATCH", 16)
    whole = predict(model, src, proba)
    assert whole.exit_code == 0, whole.stderr
    monkeypatch.setattr(inference, "PREDICT_STREAM_BYTES", 0)
    monkeypatch.setattr(inference, "PREDICT_CHUNK_ROWS", 40)  # chunks of 32 rows: 32, 32, 16
    assert inference.streams_csv(src)
    chunked = predict(model, src, proba)
    assert chunked.exit_code == 0, chunked.stderr
    assert chunked.stdout_bytes == whole.stdout_bytes
    out = tmp_path / "p.csv"
    assert predict(model, src, proba, "-o", out).exit_code == 0
    assert out.read_bytes() == whole.stdout_bytes
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, strict=True))
    assert len(rows) == 81
    if proba == "--proba":
        assert rows[0] == ["label"] + [f"p_{c}" for c in sorted(CLASSES)]
    else:
        assert rows[0] == ["label"]
    assert {r[0] for r in rows[1:]} <= set(CLASSES) and all(len(r) == len(rows[0]) for r in rows)
