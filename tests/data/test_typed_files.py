"""Typed columns meet the file readers and the target units (issue 14, both halves together):
one table with words, missing cells (its own missing token) and a price target in dollars,
written as a semicolon CSV, a tab-separated .tsv and JSON lines. The three files give the same
encoded inputs (checked against a hand-encoding in numpy) and the same model; predictions are in
dollars and match numpy least squares on the hand-encoded inputs; a missing target (the custom
token) is one error line naming the lines."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from nncli.cli import main
from support import error_line

ROWS = 120


def _table(seed: int = 0):
    """(header, rows as lists of strings, the price of each row). price = 1e5 + 2e4 * size
    + {north: 0, south: 3e4, west: -1e4}[region] + noise; size missing ('--') in every 7th row."""
    rng = np.random.default_rng(seed)
    regions = ["north", "south", "west"]
    rows, prices = [], []
    for i in range(ROWS):
        size = float(np.round(rng.uniform(1, 5), 3))
        region = regions[i % 3]
        price = 1e5 + 2e4 * size + {"north": 0.0, "south": 3e4, "west": -1e4}[region] + rng.normal(0, 100)
        rows.append(["--" if i % 7 == 3 else f"{size}", region, f"{price:.2f}"])
        prices.append(round(price, 2))
    return ["size", "region", "price"], rows, np.array(prices)


def _hand_encoded(rows):
    """size (missing -> the mean of the present sizes), then region one-hot (sorted levels)."""
    sizes = np.array([np.nan if r[0] == "--" else float(r[0]) for r in rows])
    sizes[np.isnan(sizes)] = np.nanmean(sizes)
    onehot = np.array([[r[1] == lv for lv in ("north", "south", "west")] for r in rows], dtype=np.float64)
    return np.column_stack([sizes, onehot])


CONFIG = """
seed: 0
data:
  train: {train}
  y: price
  missing_values: ["--"]
  normalize: standard
  normalize_target: auto
layers:
  - {{type: dense, units: 1}}
optimizer: sgd
learning_rate: 0.3
epochs: 200
batch_size: 120        # full-batch gradient descent: converges to the least-squares fit
early_stopping: false
checkpoint_interval: 0
"""


def _write(folder, kind, header, rows):
    if kind == "semicolon":
        path = folder / "t.csv"
        path.write_text("\n".join(";".join(r) for r in [header, *rows]) + "\n")
    elif kind == "tsv":
        path = folder / "t.tsv"
        path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    else:
        path = folder / "t.jsonl"
        path.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows))
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    header, rows, prices = _table()
    out = {}
    for kind in ("semicolon", "tsv", "jsonl"):
        folder = tmp_path_factory.mktemp(kind)
        data = _write(folder, kind, header, rows)
        config = folder / "c.yaml"
        config.write_text(CONFIG.format(train=data.name))
        r = run("train", config, "-o", folder / "run")
        assert r.exit_code == 0, r.stderr
        out[kind] = (data, folder / "run" / "model.h5", r.stderr)
    return rows, prices, out


def _predictions(model, data, tmp_path):
    r = run("predict", model, data, "-o", tmp_path / "p.csv")
    assert r.exit_code == 0, r.stderr
    return np.array([float(row["price"]) for row in csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text()))])


def test_every_dialect_trains_the_same_model(trained, tmp_path):
    rows, _, out = trained
    preds = {kind: _predictions(model, data, tmp_path) for kind, (data, model, _) in out.items()}
    np.testing.assert_allclose(preds["tsv"], preds["semicolon"], rtol=1e-6)
    np.testing.assert_allclose(preds["jsonl"], preds["semicolon"], rtol=1e-6)


def test_predictions_in_dollars_match_least_squares(trained, tmp_path):
    """A linear model on the hand-encoded inputs: numpy's lstsq is the reference, in dollars."""
    rows, prices, out = trained
    x = _hand_encoded(rows)
    a = np.column_stack([x[:, :1], x[:, 1:]])          # the one-hot spans the intercept
    coef, *_ = np.linalg.lstsq(a, prices, rcond=None)
    expected = a @ coef
    got = _predictions(out["semicolon"][1], out["semicolon"][0], tmp_path)
    assert np.std(prices) > 1e4                         # dollars, not standardised units
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.std(prices))   # measured: 5e-7 x std


def test_train_reports_the_typed_columns(trained):
    _, _, out = trained
    stderr = out["jsonl"][2]
    assert "column size: number (inferred), 1 input, 17 missing" in stderr
    assert "column region: category (inferred), 3 inputs" in stderr


def test_missing_target_with_the_custom_token_names_the_lines(tmp_path):
    header, rows, _ = _table()
    rows[4][2] = "--"
    rows[9][2] = "--"
    data = _write(tmp_path, "semicolon", header, rows)
    (tmp_path / "c.yaml").write_text(CONFIG.format(train=data.name))
    r = run("train", tmp_path / "c.yaml", "-o", tmp_path / "run", "-q")
    assert r.exit_code == 1
    assert "column 'price': 2 missing target values (lines 6, 11)" in error_line(r.stderr)
    assert not (tmp_path / "run" / "model.h5").exists()
