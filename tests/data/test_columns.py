"""Typed CSV columns (nncli.data.columns): inference, imputation and encoding checked against
values computed by hand in this file; the checkpoint round trip (predict on the raw training
file = a numpy forward pass over the inputs encoded by hand); every bad input is one Error line."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nncli import checkpoint
from nncli.cli import main
from nncli.data import columns as C
from nncli.data.csv import read_chunks
from nncli.errors import DataError
from support import error_line

# Hand-made table. Training rows 1-5 (line 2-6):
#   num: 1, NA, 3, 5, 2        -> mean 11/4 = 2.75, median 2.5
#   cat: a, b, "", a, c        -> min_count 2: levels a, <other> (b, c), <missing>
#   bin: yes, no, yes, no, yes -> 0 = no, 1 = yes
#   when: 2021-03-04 (Thu, day 63), 2020-12-31T10:30 (Thu, day 366), 2021-03-05 (Fri, 64), NA,
#         2021-01-01 (Fri, 1); means: year 8083/4 = 2020.75, month 19/4 = 4.75, weekday 14/4 = 3.5,
#         dayofyear 494/4 = 123.5, hour 10/4 = 2.5
TABLE = """num,cat,bin,when,ign,y
1,a,yes,2021-03-04,x,p
NA,b,no,2020-12-31T10:30:00,y,q
3,,yes,2021-03-05,z,p
5,a,no,NA,w,q
2,c,yes,2021-01-01,v,p
"""
ENTRIES = {"num": {"type": "number", "missing": "mean", "indicator": True},
           "cat": {"type": "category", "missing": "own_category", "unknown": "missing", "min_count": 2},
           "bin": {"type": "binary", "missing": "most_frequent", "unknown": "missing"},
           "when": {"type": "date", "format": "iso", "parts": ["year", "month", "weekday", "dayofyear", "hour"],
                    "missing": "mean", "indicator": False}}
#                  num  num:miss  a  <other> <missing>  bin  year     month weekday doy    hour
EXPECTED = np.array([[1, 0,       1, 0, 0,              1,   2021,    3,    3,      63,    0],
                     [2.75, 1,    0, 1, 0,              0,   2020,    12,   3,      366,   10],
                     [3, 0,       0, 0, 1,              1,   2021,    3,    4,      64,    0],
                     [5, 0,       1, 0, 0,              0,   2020.75, 4.75, 3.5,    123.5, 2.5],
                     [2, 0,       0, 1, 0,              1,   2021,    1,    4,      1,     0]], np.float32)


def fit_file(path, entries, x_names, chunk_rows=2, max_categories=50):
    names, _, chunks = read_chunks(str(path), chunk_rows)
    idx = [names.index(n) for n in x_names]
    specs = [(n, entries.get(n)) for n in x_names]
    return C.fit(str(path), specs, C.row_chunks(chunks, idx), None, max_categories, C.MISSING_VALUES)


def encode_file(cols, path):
    names, _, chunks = read_chunks(str(path), 2)
    idx = [names.index(n) for n in cols.raw_names]
    notes = C.Notes()
    x = np.concatenate([cols.encode(str(path), c, l, notes) for _, l, c in C.row_chunks(chunks, idx)])
    return x, notes


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("typed") / "t.csv"
    path.write_text(TABLE)
    return path


def test_every_type_encoded_as_computed_by_hand(table):
    cols = fit_file(table, ENTRIES, ["num", "cat", "bin", "when"])
    assert cols.names == ["num", "num:missing", "cat=a", "cat=<other>", "cat=<missing>", "bin=yes", "when:year",
                          "when:month", "when:weekday", "when:dayofyear", "when:hour"]
    assert cols.numeric.tolist() == [True, False, False, False, False, False, True, True, True, True, True]
    x, notes = encode_file(cols, table)
    np.testing.assert_allclose(x, EXPECTED, rtol=1e-6)
    assert not notes.unknown
    assert [c.n_missing for c in cols.columns] == [1, 1, 0, 1]


def test_unseen_and_missing_values_at_predict_time(table, tmp_path):
    cols = fit_file(table, ENTRIES, ["num", "cat", "bin", "when"])
    new = tmp_path / "new.csv"
    # an unseen category (d, twice), a rare training value (b -> <other>), a missing binary (-> most
    # frequent: yes, 3 of 5) and an unseen binary value (maybe -> read as missing -> yes)
    new.write_text("num,cat,bin,when,ign,y\nNA,d,,2022-02-02,x,p\n4,b,maybe,2021-03-04,x,p\n0,d,no,NA,x,q\n")
    x, notes = encode_file(cols, new)
    # 2022-02-02 is a Wednesday (2), day 33
    want = np.array([[2.75, 1, 0, 0, 1, 1, 2022, 2, 2, 33, 0],
                     [4, 0, 0, 1, 0, 1, 2021, 3, 3, 63, 0],
                     [0, 0, 0, 0, 1, 0, 2020.75, 4.75, 3.5, 123.5, 2.5]], np.float32)
    np.testing.assert_allclose(x, want, rtol=1e-6)
    lines = notes.lines("new.csv")
    assert len(lines) == 2 and "column 'cat': 2 value(s)" in lines[0] and "'d'" in lines[0]
    assert "column 'bin': 1 value(s)" in lines[1] and "'maybe'" in lines[1]


def test_other_policies(table):
    entries = {"num": {"type": "number", "missing": "median", "indicator": False},
               "cat": {"type": "category", "missing": "most_frequent", "unknown": "missing", "min_count": 1}}
    cols = fit_file(table, entries, ["num", "cat"])
    x, _ = encode_file(cols, table)
    # median of 1, 3, 5, 2 = 2.5; levels a, b, c (no <missing>); the missing cell takes a (2 of 4)
    np.testing.assert_allclose(x, [[1, 1, 0, 0], [2.5, 0, 1, 0], [3, 1, 0, 0], [5, 1, 0, 0], [2, 0, 0, 1]])
    cols = fit_file(table, {"num": {"type": "number", "missing": "zero", "indicator": False}}, ["num"])
    np.testing.assert_allclose(encode_file(cols, table)[0][:, 0], [1, 0, 3, 5, 2])


def test_inference(tmp_path):
    path = tmp_path / "i.csv"
    rows = ["n,b,c,cm,y"] + [f"{i * 0.5},{'t' if i % 2 else 'f'},{'xyz'[i % 3]},{'uv'[i % 2] if i % 4 else 'NA'},1"
                             for i in range(12)]
    path.write_text("\n".join(rows) + "\n")
    cols = fit_file(path, {}, ["n", "b", "c", "cm"])
    assert [(c.name, c.type) for c in cols.columns] == [("n", "number"), ("b", "binary"), ("c", "category"),
                                                        ("cm", "category")]  # two values + missing: category
    assert cols.columns[3].levels == ["u", "v", "<missing>"]
    x, _ = encode_file(cols, path)
    np.testing.assert_allclose(x[:3], [[0, 0, 1, 0, 0, 0, 0, 1], [0.5, 1, 0, 1, 0, 0, 1, 0],
                                       [1.0, 0, 0, 0, 1, 1, 0, 0]])


@pytest.mark.parametrize("cells,words", [
    ([f"name{i}" for i in range(12)], ["column 'c'", "12 distinct values", "all distinct", "ignore"]),
    ([f"name{i}" for i in range(4)], ["column 'c'", "every one of its 4 values is distinct", "ignore"]),
    ([f"v{i % 7}" for i in range(12)], ["column 'c'", "7 distinct values", "max_categories (5)", "ignore"]),
    (["1", "2", "x3"] * 4, ["line 4", "column 'c'", "expected a number", "'x3'", "category"]),
])
def test_inference_refuses(tmp_path, cells, words):
    path = tmp_path / "r.csv"
    path.write_text("c,y\n" + "".join(f"{c},1\n" for c in cells))
    with pytest.raises(DataError) as info:
        fit_file(path, {}, ["c"], max_categories=5)
    for w in words:
        assert w in info.value.message


# --- end to end: train, predict, evaluate, inspect ---------------------------------------------

CONFIG = """
name: typed
seed: 0
data:
  train: train.csv
  validation: val.csv
  y: label
  normalize: standard
  columns:
    size: {type: number, missing: drop_row}
    when: {type: date, parts: [month, weekday]}
    note: ignore
layers:
  - {type: dense, units: 6, activation: tanh}
  - {type: dense, units: 2, activation: softmax}
optimizer: adam
learning_rate: 0.05
epochs: 3
batch_size: 16
"""


def _rows(rng, n, unseen=False):
    out = []
    for i in range(n):
        size = rng.normal(10, 3)
        colour = str(rng.choice(["red", "green", "blue"] + (["mauve"] if unseen else [])))
        cell = f"{size:.3f}" if i % 9 else "NA"
        out.append([cell, colour if i % 7 else "", str(rng.choice(["yes", "no"])),
                    f"2021-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}", "free text",
                    "big" if size + (colour == "red") * 3 > 11 else "small"])
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("typed_run")
    rng = np.random.default_rng(3)
    header = "size,colour,flag,when,note,label\n"
    train = _rows(rng, 60)
    (folder / "train.csv").write_text(header + "".join(",".join(r) + "\n" for r in train))
    (folder / "val.csv").write_text(header + "".join(",".join(r) + "\n" for r in _rows(rng, 20, unseen=True)))
    (folder / "config.yaml").write_text(CONFIG)
    result = CliRunner().invoke(main, ["train", str(folder / "config.yaml"), "-o", str(folder / "run")])
    assert result.exit_code == 0, result.output + result.stderr
    return folder, train, result


def _hand_encoded(train):
    """The training file's inputs encoded and normalised in numpy, from the rules in the README."""
    kept = [r for r in train if r[0] != "NA"]  # drop_row on size
    size = np.array([float(r[0]) for r in kept])
    colours = [r[1] for r in kept]
    levels = sorted(set(c for c in colours if c)) + (["<missing>"] if "" in colours else [])
    flag = np.array([r[2] == "yes" for r in kept], float)
    month = np.array([int(r[3][5:7]) for r in kept], float)
    import datetime
    weekday = np.array([datetime.date.fromisoformat(r[3]).weekday() for r in kept], float)

    def std(v):
        return (v - v.mean()) / v.std()
    onehot = np.array([[float((c or "<missing>") == lv) for lv in levels] for c in colours])
    return np.column_stack([std(size), onehot, flag, std(month), std(weekday)]), levels


def _forward(ck, x):
    p = ck.params
    h = np.tanh(x @ p["dense_1/W"] + p["dense_1/b"])
    z = h @ p["dense_2/W"] + p["dense_2/b"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_train_prints_the_resolved_columns(run):
    _, _, result = run
    lines = [l for l in result.stderr.splitlines() if l.startswith("column ")]
    assert [l.split(":")[0] for l in lines] == ["column size", "column colour", "column flag", "column when"]
    assert lines[0].startswith("column size: number, 1 input, ") and "drop_row" in lines[0]
    assert lines[1].startswith("column colour: category (inferred), 4 inputs, ")
    assert lines[3].startswith("column when: date, 2 inputs, 0 missing")
    # the validation file's unseen colour is named once, with its count
    assert sum("column 'colour'" in l and "not seen in training" in l and "'mauve'" in l
               for l in result.stderr.splitlines()) == 1


def test_predict_on_the_raw_training_file_reproduces_training(run):
    folder, train, _ = run
    ck = checkpoint.load(folder / "run" / "model.h5")
    x, levels = _hand_encoded(train)
    assert ck.x_names == ["size", *[f"colour={lv}" for lv in levels], "flag=yes", "when:month", "when:weekday"]
    want = _forward(ck, x.astype(np.float32))
    out = folder / "pred.csv"
    result = CliRunner().invoke(main, ["predict", str(folder / "run" / "model.h5"), str(folder / "train.csv"),
                                       "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    got = np.loadtxt(out, delimiter=",", skiprows=1, usecols=(1, 2))
    assert len(got) == len(train)  # one row per input row: drop_row rows are imputed at predict time
    kept = np.array([r[0] != "NA" for r in train])
    np.testing.assert_allclose(got[kept], want, atol=1e-5)
    # a dropped row (size NA) is predicted with the training mean of size, i.e. a normalised 0
    row = train[0]  # i == 0: size NA
    assert row[0] == "NA"
    colour = [float((row[1] or "<missing>") == lv) for lv in levels]
    kept_rows = [r for r in train if r[0] != "NA"]
    month = np.array([int(r[3][5:7]) for r in kept_rows], float)
    import datetime
    wd = np.array([datetime.date.fromisoformat(r[3]).weekday() for r in kept_rows], float)
    d = datetime.date.fromisoformat(row[3])
    x0 = np.array([0.0, *colour, float(row[2] == "yes"), (d.month - month.mean()) / month.std(),
                   (d.weekday() - wd.mean()) / wd.std()], np.float32)
    np.testing.assert_allclose(got[0], _forward(ck, x0[None])[0], atol=1e-5)


def test_inspect_and_evaluate(run):
    folder, _, result = run
    model = str(folder / "run" / "model.h5")
    shown = CliRunner().invoke(main, ["inspect", model])
    train_lines = [l for l in result.stderr.splitlines() if l.startswith("column ")]
    assert [l for l in shown.output.splitlines() if l.startswith("column ")] == train_lines
    ev = CliRunner().invoke(main, ["evaluate", model, str(folder / "val.csv")])
    assert ev.exit_code == 0 and "not seen in training" in ev.stderr and "20 examples" in ev.output


def test_checkpoint_holds_the_columns(run):
    folder, _, _ = run
    with h5py.File(folder / "run" / "model.h5", "r") as f:
        assert f.attrs["format_version"] == 2
        g = f["columns"]
        assert [g[str(i)].attrs["name"] for i in range(len(g) - 1)] == ["size", "colour", "flag", "when"]
        assert [v.decode() for v in g["1/levels"][()]][-1] == "<missing>"
        assert [v.decode() for v in g["3/parts"][()]] == ["month", "weekday"]


def test_damaged_columns_are_refused(run, tmp_path):
    folder, _, _ = run
    bad = tmp_path / "bad.h5"
    bad.write_bytes((folder / "run" / "model.h5").read_bytes())
    with h5py.File(bad, "a") as f:
        del f["columns/1/levels"]
        f["columns/1/levels"] = np.array(["a", "b"], dtype=h5py.string_dtype())  # 2 levels, 4 inputs
    with pytest.raises(checkpoint.CheckpointError, match="damaged checkpoint"):
        checkpoint.load(bad)


def test_damaged_policy_is_refused(run, tmp_path):
    folder, _, _ = run
    bad = tmp_path / "bad.h5"
    bad.write_bytes((folder / "run" / "model.h5").read_bytes())
    with h5py.File(bad, "a") as f:
        f["columns/0"].attrs["missing"] = "guess"
    with pytest.raises(checkpoint.CheckpointError, match="damaged checkpoint.*guess"):
        checkpoint.load(bad)


def test_columns_for_an_hdf5_file_are_refused(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"], f["y"] = np.zeros((4, 2), "f4"), np.array([0, 1, 0, 1])
    (tmp_path / "c.yaml").write_text("data: {train: d.h5, columns: {a: category}}\nlayers:\n"
                                     "  - {type: dense, units: 2, activation: softmax}\n")
    r = CliRunner().invoke(main, ["train", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2 and "data.columns" in error_line(r.stderr) and "CSV" in error_line(r.stderr)
    assert not (tmp_path / "out").exists()


def test_unknown_error_policy(run, tmp_path):
    folder, _, _ = run
    cfg = (folder / "config.yaml").read_text().replace("    note: ignore", "    note: ignore\n    colour: "
                                                       "{type: category, unknown: error}")
    (folder / "strict.yaml").write_text(cfg)
    r = CliRunner().invoke(main, ["train", str(folder / "strict.yaml"), "-o", str(tmp_path / "strict")])
    assert r.exit_code == 1  # the validation file holds an unseen colour
    line = error_line(r.stderr)
    assert "val.csv" in line and "column 'colour'" in line and "'mauve'" in line and "line " in line


def test_version_1_checkpoint_loads(tmp_path, xor_csv):
    """A checkpoint of format version 1 (no /columns), written by hand with h5py as the old code
    wrote it, loads and predicts what a numpy forward pass gives."""
    from nncli.data import Encoding, Normalizer

    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(2, 1)).astype(np.float32), np.array([0.1], np.float32)
    ck = checkpoint.Checkpoint(
        config_yaml="layers:\n- {type: dense, name: dense_1, units: 1, activation: sigmoid}\n",
        input_shape=(2,), task="classification", loss="binary_crossentropy",
        params={"dense_1/W": w, "dense_1/b": b}, trainable=["dense_1/W", "dense_1/b"],
        normalizer=Normalizer("none"), encoding=Encoding("binary", ["0", "1"], True), x_names=["x1", "x2"],
        y_name="y", rng={"shuffle": {"bit_generator": "PCG64", "state": {"state": 1, "inc": 1}, "has_uint32": 0,
                                     "uinteger": 0}, "batch": 0, "sums": []})
    path = tmp_path / "v1.h5"
    checkpoint.save(ck, path)
    with h5py.File(path, "a") as f:
        assert "columns" not in f
        f.attrs["format_version"] = 1
    loaded = checkpoint.load(path)
    assert loaded.columns is None and loaded.x_names == ["x1", "x2"]
    r = CliRunner().invoke(main, ["predict", str(path), str(xor_csv)])
    assert r.exit_code == 0, r.stderr
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    p1 = 1 / (1 + np.exp(-(x @ w + b)))
    got = np.array([float(l.split(",")[2]) for l in r.output.splitlines()[1:]])
    np.testing.assert_allclose(got, p1[:, 0], atol=1e-6)


def test_all_numeric_csv_stays_plain(run):
    """An all-numeric CSV without missing cells: no /columns, the inputs as before (README)."""
    folder, _, _ = run
    cfg = CONFIG.replace("  validation: val.csv\n", "").replace("  columns:\n", "  x: [size2]\n  columns: {}\n") \
        .replace("    size: {type: number, missing: drop_row}\n    when: {type: date, parts: [month, weekday]}\n"
                 "    note: ignore\n", "")
    (folder / "plain.csv").write_text("size2,label\n1.5,big\n0.5,small\n2.5,big\n0.25,small\n")
    (folder / "plain.yaml").write_text(cfg.replace("train.csv", "plain.csv"))
    from nncli import spec as spec_mod
    from nncli.training.prepare import prepare
    prep = prepare(spec_mod.load(folder / "plain.yaml"))
    assert prep.columns is None and prep.notes == () and prep.x_names == ["size2"]
    mean, std = np.mean([1.5, .5, 2.5, .25]), np.std([1.5, .5, 2.5, .25])
    np.testing.assert_allclose(prep.x_train[:, 0], (np.array([1.5, .5, 2.5, .25]) - mean) / std, rtol=1e-6)


# --- bad inputs: one Error line, exit 1 (data) or 2 (config), nothing written ------------------

BAD = [
    ("columns entry for no column", "    colur: category\n", None, 2, ["data.columns.colur", "has no column 'colur'",
                                                                       "did you mean 'colour'", "train.csv"]),
    ("non-numeric number cell", "    colour: number\n", None, 1, ["line 2", "column 'colour'", "expected a number",
                                                                  "train.csv"]),
    ("date does not parse", "", None, 1,
     ["line 2", "column 'when'", "does not parse", "'%d/%m/%Y'", "train.csv"]),
    ("drop_row leaves no rows", "    flag: {type: category, missing: drop_row}\n", "flag", 1,
     ["drop_row", "'flag'", "leaves no rows", "train.csv"]),
    ("missing error", "    colour: {type: category, missing: error}\n", None, 1,
     ["line 3", "column 'colour'", "missing cell", "train.csv"]),
]


@pytest.mark.parametrize("case,entry,blank,code,words", BAD, ids=[b[0] for b in BAD])
def test_bad_typed_inputs(tmp_path, case, entry, blank, code, words):
    rows = [["1.5", "red", "yes", "2021-03-04", "t", "big"], ["2.5", "", "no", "2021-03-05", "t", "small"],
            ["0.5", "blue", "no", "2021-03-06", "t", "small"]]
    if blank:
        for r in rows:
            r[2] = "NA"
    (tmp_path / "train.csv").write_text("size,colour,flag,when,note,label\n"
                                        + "".join(",".join(r) + "\n" for r in rows))
    text = CONFIG.replace("  validation: val.csv\n", "").replace("    note: ignore\n", "    note: ignore\n" + entry)
    if case == "date does not parse":
        text = text.replace("parts: [month, weekday]", "format: '%d/%m/%Y'")
    (tmp_path / "config.yaml").write_text(text)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["train", str(tmp_path / "config.yaml"), "-o", str(out)])
    assert r.exit_code == code, r.output + r.stderr
    line = error_line(r.stderr)
    for w in words:
        assert w in line, line
    assert not out.exists()


def test_encoded_inputs_over_the_memory_budget_are_streamed(run):
    """Encoded inputs larger than data.memory_budget_mb go to a temporary HDF5 file that training
    streams: the same rows, targets and normaliser as in memory."""
    from nncli import data
    from nncli import spec as spec_mod
    from nncli.training.prepare import prepare

    folder, _, _ = run
    cfg = folder / "split.yaml"
    cfg.write_text(CONFIG.replace("validation: val.csv", "validation: 0.25"))
    mem = prepare(spec_mod.load(cfg))
    disk = prepare(spec_mod.load(cfg, sets=("data.memory_budget_mb=0.0001",)))
    assert isinstance(disk.x_train, data.XStream) and isinstance(disk.x_val, data.XStream)
    assert not isinstance(mem.x_train, data.XStream)
    np.testing.assert_allclose(disk.normalizer.shift, mem.normalizer.shift, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(disk.normalizer.scale, mem.normalizer.scale, rtol=1e-6)
    for stream, rows, t_disk, t_mem in ((disk.x_train, mem.x_train, disk.t_train, mem.t_train),
                                        (disk.x_val, mem.x_val, disk.t_val, mem.t_val)):
        got = np.concatenate([x for x, _, _ in stream.batches(None, 1)])
        np.testing.assert_allclose(got, rows, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(t_disk, t_mem)


def test_by_position_keeps_a_first_row_of_words(run, tmp_path):
    """--by-position on a file without a header: a first data row with words (a category) is data, not
    taken for a header; with a header row that names the inputs, that row is skipped. Both give the
    predictions the named columns give."""
    folder, train, _ = run
    model = folder / "run" / "model.h5"
    rows = [[r[0], r[1] or "red", r[2], r[3]] for r in train[1:4]]
    body = "".join(",".join(r) + "\n" for r in rows)
    (tmp_path / "named.csv").write_text("size,colour,flag,when\n" + body)
    (tmp_path / "bare.csv").write_text(body)

    def predict(name, *options):
        r = CliRunner().invoke(main, ["predict", str(model), str(tmp_path / name), *options])
        assert r.exit_code == 0, r.stderr
        return r.stdout.splitlines()[1:]

    named = predict("named.csv")
    assert len(named) == 3
    assert predict("bare.csv", "--by-position") == named
    assert predict("named.csv", "--by-position") == named


def test_jsonl_hostile_values_are_one_line(tmp_path):
    from nncli.data import read_chunks

    (tmp_path / "big.jsonl").write_text('{"a": 1, "y": 0}\n{"a": ' + "9" * 5000 + ', "y": 1}\n')
    (tmp_path / "long.jsonl").write_text('{"a": 1, "y": 0}\n{"a": "' + "x" * 200_000 + '", "y": 1}\n')
    for name, words in [("big.jsonl", "line 2: not valid JSON"), ("long.jsonl", "line 2, key 'a': a value of 200,000")]:
        with pytest.raises(DataError) as exc:
            list(read_chunks(str(tmp_path / name), None).chunks)
        assert words in exc.value.message and "\n" not in exc.value.message
