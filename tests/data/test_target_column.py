"""A training CSV's target column read in chunks (nncli.data.target_column): class labels held as
int32 codes into a vocabulary, regression targets as float32; the validation split as a mask.
Checked against numpy done in the test on the whole column at once."""

from __future__ import annotations

import numpy as np
import pytest

from nncli.data import validation_mask
from nncli.data.target_column import VOCABULARY_CAP, TargetColumn
from nncli.errors import DataError

TOKENS = ("", "NA", "?")


def feed(col: TargetColumn, cells: np.ndarray, chunk: int, first_line: int = 2) -> None:
    lines = np.arange(first_line, first_line + len(cells))
    for a in range(0, len(cells), chunk):
        col.observe(cells[a:a + chunk], lines[a:a + chunk])


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_class_codes_index_a_vocabulary_that_gives_back_every_label(chunk):
    rng = np.random.default_rng(0)
    names = np.array(["Adelie", "Gentoo", "Chinstrap", "x" * 40])
    cells = names[rng.integers(0, 4, 500)]
    col = TargetColumn("f.csv", "species", "categorical_crossentropy", TOKENS)
    feed(col, cells, chunk)
    y, codes = col.finish()
    assert codes.dtype == np.int32 and len(codes) == 500
    np.testing.assert_array_equal(y[codes], cells)  # the labels come back, row by row
    assert sorted(y.tolist()) == sorted(set(cells.tolist()))  # each distinct label once


def test_numeric_labels_come_back_as_numbers():
    col = TargetColumn("f.csv", "digit", "categorical_crossentropy", TOKENS)
    feed(col, np.array(["3", "1", "3", "0", "1.0"]), 2)
    y, codes = col.finish()
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y[codes], [3, 1, 3, 0, 1])


def test_regression_values_are_float32_in_order():
    values = np.random.default_rng(1).normal(1000, 300, 257)
    cells = np.array([f"{v:.3f}" for v in values])
    col = TargetColumn("f.csv", "price", "mse", TOKENS)
    feed(col, cells, 50)
    y, codes = col.finish()
    assert codes is None and y.dtype == np.float32
    np.testing.assert_array_equal(y, cells.astype(np.float64).astype(np.float32))


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "mse"])
def test_missing_targets_are_counted_over_every_chunk_with_their_first_lines(loss):
    cells = np.array(["1", "NA", "2", "", "3", "?", "4", "NA", "5", "NA", "NA", "6"])
    col = TargetColumn("f.csv", "y", loss, TOKENS)
    feed(col, cells, 5)
    with pytest.raises(DataError) as info:
        col.finish()
    want = [i + 2 for i, c in enumerate(cells) if c in TOKENS]  # line numbers, the header being line 1
    assert info.value.message == (f"f.csv: line {want[0]}, column 'y': {len(want)} missing target values "
                                  f"(lines {', '.join(map(str, want[:5]))}, ...); every row needs a target: "
                                  f"drop those rows")


def test_a_word_in_a_regression_target_is_refused_in_its_chunk_naming_its_line():
    col = TargetColumn("f.csv", "price", "mse", TOKENS)
    with pytest.raises(DataError) as info:
        feed(col, np.array(["1.5", "2", "3", "cheap", "4"]), 2, first_line=10)
    assert info.value.message == ("f.csv: line 13, column 'price': regression targets must be numbers, "
                                  "got text such as 'cheap'")


@pytest.mark.parametrize("cell, what", [("inf", "non-finite target"), ("1e39", "too large for float32")])
def test_values_float32_cannot_hold_are_refused_with_their_line(cell, what):
    col = TargetColumn("f.csv", "y", "mse", TOKENS)
    with pytest.raises(DataError) as info:
        feed(col, np.array(["1", "2", cell]), 3)
    assert info.value.message.startswith("f.csv: line 4, column 'y': ") and what in info.value.message


def test_an_id_like_classification_target_is_refused_before_its_vocabulary_grows_without_bound():
    col = TargetColumn("f.csv", "id", "categorical_crossentropy", TOKENS)
    cells = np.array([f"row{i}" for i in range(VOCABULARY_CAP + 10)])
    with pytest.raises(DataError, match="more than 40,000 distinct classes by line .*; is this a regression"):
        feed(col, cells, 4096)
    assert len(col.vocabulary) <= VOCABULARY_CAP + 4096


def test_the_column_name_among_the_cells_is_noticed():
    col = TargetColumn("f.csv", "y", "categorical_crossentropy", TOKENS)
    feed(col, np.array(["a", "b"]), 1)
    assert not col.has_name
    feed(col, np.array(["y"]), 1)
    assert col.has_name


def _split_as_it_was(n, fraction, rng, strata):
    """The index arrays the split gave before it became a mask (np.setdiff1d of the sampled rows)."""
    if strata is None:
        perm = rng.permutation(n)
        k = int(round(fraction * n))
        return np.sort(perm[k:]), np.sort(perm[:k])
    val = []
    for cls in np.unique(strata):
        members = np.flatnonzero(strata == cls)
        members = members[rng.permutation(len(members))]
        val.append(members[:int(round(fraction * len(members)))])
    va = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(n), va), va


@pytest.mark.parametrize("stratified", [False, True])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_the_validation_mask_draws_the_same_rows_as_the_index_split(stratified, fraction):
    n = 1001
    strata = np.random.default_rng(5).integers(0, 4, n).astype(np.int32) if stratified else None
    mask = validation_mask(n, fraction, np.random.default_rng([3, 1]), strata)
    tr, va = _split_as_it_was(n, fraction, np.random.default_rng([3, 1]), strata)
    np.testing.assert_array_equal(np.flatnonzero(mask), va)
    np.testing.assert_array_equal(np.flatnonzero(~mask), tr)


CONFIG = """name: t
seed: 4
data:
  train: {train}
  y: species
  validation: 0.25
  memory_budget_mb: {budget}
  normalize: none
  columns:
    a: {{type: number, missing: drop_row}}
layers:
  - {{type: dense, units: 3, activation: softmax}}
loss: categorical_crossentropy
"""


@pytest.mark.parametrize("budget", [512, 0.0001])  # inputs in memory; inputs spilled to disk
def test_prepare_gives_each_kept_row_its_one_hot_target_in_the_split_drawn_by_hand(tmp_path, budget):
    from nncli import spec as spec_mod
    from nncli.training.prepare import prepare

    rng = np.random.default_rng(2)
    n = 403
    species = np.array(["gentoo", "adelie", "chinstrap"])[rng.integers(0, 3, n)]
    a = np.round(rng.normal(0, 1, n), 3).astype(str)
    a[rng.random(n) < 0.1] = "NA"  # those rows are dropped
    (tmp_path / "p.csv").write_text("a,species\n" + "".join(f"{x},{s}\n" for x, s in zip(a, species)))
    (tmp_path / "c.yaml").write_text(CONFIG.format(train=tmp_path / "p.csv", budget=budget))
    p = prepare(spec_mod.load(tmp_path / "c.yaml"))
    kept = a != "NA"
    labels, inputs = species[kept], a[kept].astype(np.float32)
    classes = sorted(set(labels.tolist()))
    strata = np.array([classes.index(s) for s in labels])
    tr, va = _split_as_it_was(len(labels), 0.25, np.random.default_rng([4, 1]), strata)
    one_hot = np.eye(3, dtype=np.float32)[strata]
    assert p.encoding.classes == classes
    np.testing.assert_array_equal(p.t_train, one_hot[tr])
    np.testing.assert_array_equal(p.t_val, one_hot[va])
    x_tr = p.x_train if isinstance(p.x_train, np.ndarray) else np.concatenate(
        [x for x, _, _ in p.x_train.batches(None, 1)])
    np.testing.assert_array_equal(x_tr[:, 0], inputs[tr])


@pytest.mark.parametrize("cell, loss, words", [
    ("cheap", "mse", ["line 5, column 'price'", "regression targets must be numbers", "'cheap'"]),
    ("NA", "mse", ["line 5, column 'price'", "1 missing target value", "drop those rows"]),
    ("NA", "categorical_crossentropy", ["line 5, column 'price'", "1 missing target value"]),
])
def test_a_bad_target_cell_stops_train_with_one_line_and_writes_nothing(tmp_path, cell, loss, words):
    from click.testing import CliRunner

    from nncli.cli import main
    from support import error_line

    rows = ["1,10", "2,20", "3,30", f"4,{cell}", "5,50"]
    (tmp_path / "t.csv").write_text("a,price\n" + "\n".join(rows) + "\n")
    units = "{type: dense, units: 1}" if loss == "mse" else "{type: dense, units: 5, activation: softmax}"
    (tmp_path / "c.yaml").write_text(f"name: t\ndata: {{train: t.csv, y: price}}\nlayers: [{units}]\nloss: {loss}\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["train", str(tmp_path / "c.yaml"), "-o", str(out)])
    assert r.exit_code == 1, r.stderr
    line = error_line(r.stderr)
    assert len([l for l in r.stderr.splitlines() if l.strip()]) == 1 and "t.csv" in line
    for w in words:
        assert w in line, line
    assert not out.exists()
