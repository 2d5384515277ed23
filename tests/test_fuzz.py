"""Bad input, fuzzed with hypothesis.

Library level (hundreds of cases per target, printed at the end of each test): random and
mutated YAML configs (spec.load, then prepare), malformed CSV and HDF5 data files
(data.read, the label encoding, the one CSV reader against Python's csv module, and what
big-file predictions read against what data.read reads),
corrupted, truncated and foreign checkpoints (checkpoint.load, inference.load_model,
inference.inspect), and random expression strings (language.parse, derivatives.compute). Only
NncliError subclasses may escape, each with a one-line message.

CLI level (a smaller sample through click's CliRunner): exit status 1 or 2, one line starting
with `Error:`, no traceback, no file written outside the output folder, no earlier output replaced.

And: YAML is only ever read with the safe loader, nothing is ever unpickled.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import write_config
from nncli import checkpoint, data, inference
from nncli.data import csv as csv_reader
from nncli.training.prepare import prepare
from nncli import spec as spec_mod
from nncli.cli import main
from nncli.errors import NncliError

CASES = int(os.environ.get("NNCLI_FUZZ_CASES", "320"))
CLI_CASES = int(os.environ.get("NNCLI_FUZZ_CLI_CASES", "30"))


# CI runs the same cases every time (a red CI must be reproducible); NNCLI_FUZZ_RANDOM=1
# explores new ones, and a failure prints the case to add to test_bad_inputs.py.
RANDOM = os.environ.get("NNCLI_FUZZ_RANDOM") == "1"


def fuzz(n):
    return settings(max_examples=n, deadline=None, database=None, derandomize=not RANDOM,
                    suppress_health_check=list(HealthCheck))


def one_line(exc: NncliError) -> None:
    msg = exc.message
    assert isinstance(msg, str) and msg.strip() and "\n" not in msg and "\r" not in msg, repr(msg)
    assert "Traceback" not in msg


def expect_only_nncli_errors(fn, *args, **kwargs):
    """Call fn; return its result, or None if it raised an NncliError (checked: one line)."""
    try:
        return fn(*args, **kwargs)
    except NncliError as exc:
        one_line(exc)
        return None


def report(name, count):
    print(f"\nfuzz {name}: {count} cases")
    assert count >= min(CASES, 300) or count >= CLI_CASES


# --- shared values -------------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**80, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), TEXT,
    st.sampled_from(["relu", "dense", "adam", "sgd", "mse", "softmax", "x", "y", "-1", "1e999", ".nan",
                     "~", "yes", "0x10", "", "conv2d", "lstm", "val_loss", "standard", "auto", "gpu"]),
)
VALUES = st.recursive(SCALARS, lambda c: st.one_of(st.lists(c, max_size=4),
                                                   st.dictionaries(TEXT, c, max_size=4)), max_leaves=8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    f = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    rows = ["a,b,c,label"] + [f"{a:.3f},{b:.3f},{c:.3f},{'pqr'[i % 3]}" for i, (a, b, c) in
                              enumerate(rng.normal(size=(30, 3)))]
    (f / "train.csv").write_text("\n".join(rows) + "\n")
    return f


# --- configs -------------------------------------------------------------------------------

BASE = {
    "name": "fuzz", "seed": 1,
    "data": {"train": "train.csv", "validation": 0.2, "normalize": "standard", "shuffle": True},
    "layers": [{"type": "dense", "units": 4, "activation": "tanh"},
               {"type": "dropout", "rate": 0.1},
               {"type": "dense", "units": 3, "activation": "softmax"}],
    "loss": "categorical_crossentropy", "metrics": ["accuracy"], "optimizer": {"type": "adam", "beta_1": 0.9},
    "learning_rate": 0.01, "epochs": 2, "batch_size": 8,
    "early_stopping": {"monitor": "val_loss", "patience": 2}, "checkpoint_interval": 0,
}


def _paths(value, prefix=()):
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


PATHS = _paths(BASE)


def _mutate(cfg, op, path, value):
    node = cfg
    for key in path[:-1]:
        node = node[key]
    last = path[-1]
    if op == "set":
        node[last] = value
    elif op == "delete":
        del node[last]
    elif op == "add" and isinstance(node[last], dict):
        node[last][str(value)[:10] or "k"] = value
    elif op == "add" and isinstance(node[last], list):
        node[last].append(value)
    elif op == "nest":
        deep = value
        for _ in range(60):
            deep = [deep]
        node[last] = deep


ALIAS_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
              "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n")
TEXT_EDITS = st.one_of(
    st.just(("none",)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.integers(1, 40)),
    st.tuples(st.just("append"), st.sampled_from([
        ALIAS_BOMB, "x: &x {a: 1}\ny: *x\nz: *nope\n", "[" * 5000, "{a: " * 3000, "- " * 200 + "1\n",
        "epochs: !!python/object/apply:os.system ['touch PWNED']\n", "seed: !!binary aGVsbG8=\n",
        "\tepochs: 3\n", "epochs: 1e400\n", "batch_size: 99999999999999999999999999\n", "%YAML 9.9\n---\n",
        "learning_rate: .inf\n", "layers: *a\n", "? [a, b]\n: c\n", "data: {train: /etc/passwd}\n",
        "output: /proc/self\n", "name: \"\\ud800\"\n", "---\nmore: doc\n"])),
    st.tuples(st.just("bytes"), st.sampled_from([b"\xff\xfe", b"\xef\xbb\xbf", b"\x00", b"\xc3\x28", b"\x80abc"]),
              st.integers(0, 10_000)),
    st.tuples(st.just("random"), st.binary(max_size=200)),
)


@st.composite
def config_texts(draw):
    cfg = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(PATHS))
        op = draw(st.sampled_from(["set", "set", "set", "delete", "add", "nest"]))
        try:
            _mutate(cfg, op, path, draw(VALUES))
        except (KeyError, IndexError, TypeError):
            pass
    if draw(st.booleans()):
        cfg[draw(TEXT) or "extra"] = draw(VALUES)
    text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=draw(st.booleans())).encode("utf-8")
    edit = draw(TEXT_EDITS)
    if edit[0] == "insert":
        at = edit[1] % (len(text) + 1)
        text = text[:at] + edit[2] + text[at:]
    elif edit[0] == "cut":
        at = edit[1] % (len(text) + 1)
        text = text[:at] + text[at + edit[2]:]
    elif edit[0] == "append":
        text = text + b"\n" + edit[1].encode("utf-8", "surrogatepass")
    elif edit[0] == "bytes":
        at = edit[2] % (len(text) + 1)
        text = text[:at] + edit[1] + text[at:]
    elif edit[0] == "random":
        text = edit[1]
    return text


def test_fuzz_configs(folder):
    count = [0]
    path = folder / "config.yaml"

    @fuzz(CASES)
    @given(config_texts())
    def case(text):
        count[0] += 1
        path.write_bytes(text)
        spec = expect_only_nncli_errors(spec_mod.load, path)
        if spec is not None:
            prep = expect_only_nncli_errors(prepare, spec)
            if prep is not None:
                assert np.isfinite(prep.x_train).all()

    case()
    assert not Path("PWNED").exists() and not (folder / "PWNED").exists()
    report("configs (spec.load + prepare)", count[0])


# --- CSV data --------------------------------------------------------------------------------

CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**30, 10**30).map(str),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "NaN", "1e400", "abc", '"', '""', '"a,b"', "1,5", "\t2",
                     "0x1F", "\uff11\uff12", "\u00a0", "1_000", " 3 ", "+4", "-0", "1e-320", "red", "blue"]),
    TEXT.filter(lambda s: "\x00" not in s),
)


@st.composite
def csv_files(draw):
    width = draw(st.integers(0, 5))
    header = draw(st.lists(st.sampled_from(["a", "b", "c", "y", "label", "", " a", "x0"]) | TEXT,
                           min_size=width, max_size=width))
    if draw(st.booleans()):
        header = ["a", "b", "c", "label"][:max(width, 1)]
    n = draw(st.integers(0, 8))
    rows = [draw(st.lists(CELLS, min_size=max(0, width - 1), max_size=width + 1)) if draw(st.integers(0, 4)) == 0
            else draw(st.lists(CELLS, min_size=width, max_size=width)) for _ in range(n)]
    if draw(st.booleans()):  # well-formed numbers in most cells
        rows = [[c if draw(st.integers(0, 5)) == 0 else f"{draw(st.floats(-5, 5)):.3f}" for c in r] for r in rows]
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    if draw(st.booleans()):
        buf = io.StringIO()
        csv.writer(buf, lineterminator=newline).writerows([header] + rows)
        text = buf.getvalue()
    else:
        text = newline.join(",".join(r) for r in [header] + rows) + draw(st.sampled_from(["", newline]))
    text += draw(st.sampled_from(["", newline, newline * 3, " " + newline, ",," + newline]))
    raw = text.encode("utf-8")
    extra = draw(st.sampled_from(["", "bom", "nul", "latin1", "cut"]))
    if extra == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif extra == "nul":
        raw = raw[: len(raw) // 2] + b"\x00" + raw[len(raw) // 2:]
    elif extra == "latin1":
        raw = raw + "caf\u00e9".encode("latin-1")
    elif extra == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw, header


def _stream_read(path, names, y_col, by_position=False):
    """What big-file predictions read (nncli.inference: the one CSV reader in chunks, here of 2 rows,
    the model's columns, numbers), for comparison with what data.read reads from the whole file."""
    header, width, chunks = data.read_chunks(str(path), chunk_rows=2, header="position" if by_position else True,
                                             hint=data.PREDICT_NO_HEADER_HINT, n_inputs=len(names))
    idx, _, shown = data.model_columns(str(path), header, width, names, y_col, False, by_position)
    parts = [data.to_float(str(path), cells[:, idx], [shown[i] for i in idx], row_offset=first)
             for first, cells in chunks]
    return np.concatenate(parts) if parts else None


def _python_csv_rows(raw: bytes):
    """The reference for the one CSV reader: the rows Python's io and csv modules read from the whole
    file (decoded as utf-8-sig, trailing blank rows dropped), or the message the reader must give."""
    try:
        text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", newline="").read()
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (bad byte at offset {exc.start})"
    if "\x00" in text:
        return None, "contains NUL bytes; expected a CSV text file"
    # in file order, as a streaming reader meets them: a row of the wrong width is reported before a
    # malformed ending further on; blank rows count only when data follows them
    rows, pending = [], []
    try:
        for row in csv.reader(io.StringIO(text, newline=""), strict=True):
            if not any(c.strip() for c in row):
                pending.append(row)
                continue
            for r in pending + [row]:
                if rows and len(r) != len(rows[0]):
                    return None, f"line {len(rows) + 1}: expected {len(rows[0])} columns as in line 1, got {len(r)}"
                rows.append(r)
            pending = []
    except csv.Error as exc:
        return None, f"malformed CSV: {exc}"
    if not rows:
        return None, "the file is empty; expected a header row and data rows"
    return rows, None


def _check_reader_against_python_csv(path, raw):
    """The one reader (no header row: every row is data), whole and in chunks of 2 rows, reads
    the rows Python's csv module reads, or fails with the message the reference names."""
    rows, message = _python_csv_rows(raw)
    for chunk_rows in (None, 2):
        try:
            names, width, chunks = data.read_chunks(str(path), chunk_rows, header=False, delimiter=",")
            got = list(chunks)
        except NncliError as exc:
            one_line(exc)
            assert exc.message == f"{path}: {message}", (exc.message, message)
            continue
        assert message is None, message
        assert names is None and width == len(rows[0])
        assert [first for first, _ in got] == list(range(1, len(rows) + 1, chunk_rows or len(rows)))
        cells = np.concatenate([c for _, c in got])
        np.testing.assert_array_equal(cells, np.array(rows, dtype=str).reshape(len(rows), width))


def test_fuzz_csv_data(folder, monkeypatch):
    count = [0]
    path = folder / "data.csv"
    monkeypatch.setattr(csv_reader, "SCAN_BYTES", 7)  # the UTF-8 and NUL checks cross block boundaries

    @fuzz(CASES)
    @given(csv_files(), st.sampled_from([(None, None), ("a", "label"), (["a", "b"], "c"), (None, "y"), ("zz", None)]),
           st.sampled_from(["categorical_crossentropy", "binary_crossentropy", "mse"]), st.integers(1, 4))
    def case(file, cols, loss, units):
        count[0] += 1
        raw, header = file
        path.write_bytes(raw)
        _check_reader_against_python_csv(path, raw)
        table = expect_only_nncli_errors(data.read, path, *cols)
        if table is not None:
            assert table.x.dtype == np.float32 and np.isfinite(table.x).all() and len(table.y) == len(table.x) > 0
            enc = expect_only_nncli_errors(data.fit_encoding, table, loss, units)
            if enc is not None:
                t = expect_only_nncli_errors(data.encode_targets, table, enc, (units,))
                assert t is None or (t.shape[0] == len(table.x) and np.isfinite(t).all())
        # prediction: what a big file is read as (the reader in chunks, then the columns) and what
        # a small one is read as (data.read) are the same
        names = ["a", "b"] if draw_names(header) else ["x0", "x1"]
        for by_position in (False, True):  # columns by name, and in order (--by-position)
            try:
                whole = data.read(path, None, "label", with_targets=False, expect_x=names, by_position=by_position)
                whole_err = None
            except NncliError as exc:
                one_line(exc)
                whole, whole_err = None, exc.message
            try:
                chunked, chunked_err = _stream_read(path, names, "label", by_position), None
            except NncliError as exc:
                one_line(exc)
                chunked, chunked_err = None, exc.message
            # (the chunked reader cannot look ahead: with several problems it may name another one first)
            if whole_err is None:
                assert chunked_err is None, chunked_err
                np.testing.assert_array_equal(whole.x, chunked)
            else:
                assert chunked_err is not None, whole_err

    case()
    report("CSV data (data.read, encodings, the CSV reader against Python's csv module)", count[0])


def draw_names(header):
    return "a" in [h.strip() for h in header]


# --- HDF5 data -------------------------------------------------------------------------------

DSET_KINDS = ["f4", "f8", "i4", "u1", "bool", "bytes", "str", "c8", "compound", "group", "scalar", "empty-shape"]


@st.composite
def h5_specs(draw):
    items = []
    for name in draw(st.lists(st.sampled_from(["x", "y", "z", "inputs"]), max_size=3, unique=True)):
        kind = draw(st.sampled_from(DSET_KINDS))
        rows = draw(st.sampled_from([0, 1, 2, 5, 9]))
        extra = draw(st.sampled_from([(), (3,), (2, 2), (1, 2, 2)]))
        special = draw(st.sampled_from([None, None, "nan", "inf", "big"]))
        items.append((name, kind, rows, extra, special))
    return items, draw(st.sampled_from(["ok", "ok", "truncate", "garbage"])), draw(st.integers(0, 2**32 - 1))


def write_h5(path, spec):
    items, damage, seed = spec
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for name, kind, rows, extra, special in items:
            shape = (rows, *extra)
            if kind == "group":
                f.create_group(name).create_dataset("inner", data=np.zeros(3))
                continue
            if kind == "scalar":
                f[name] = 3.0
                continue
            if kind == "empty-shape":
                f.create_dataset(name, data=h5py.Empty("f4"))
                continue
            if kind in ("f4", "f8"):
                arr = rng.normal(size=shape).astype(kind)
                if special and arr.size:
                    arr.flat[rng.integers(arr.size)] = {"nan": np.nan, "inf": np.inf, "big": 3e38}[special]
            elif kind in ("i4", "u1"):
                arr = rng.integers(0, 3, size=shape).astype(kind)
            elif kind == "bool":
                arr = rng.integers(0, 2, size=shape).astype(bool)
            elif kind == "bytes":
                arr = np.array([b"a", b"b", b"\xff"] * 4)[:rows].reshape(rows) if rows else np.array([], "S1")
            elif kind == "str":
                arr = np.array(["red", "blue", "gr\u00fcn"] * 4, dtype=object)[:rows]
                f.create_dataset(name, data=arr, dtype=h5py.string_dtype())
                continue
            elif kind == "c8":
                arr = (rng.normal(size=shape) + 1j).astype("c8")
            else:
                arr = np.zeros(rows, dtype=[("a", "f4"), ("b", "i4")])
            f.create_dataset(name, data=arr)
    if damage != "ok":
        raw = path.read_bytes()
        raw = raw[: len(raw) // 2] if damage == "truncate" else raw[:100] + bytes(rng.integers(0, 256, 300, np.uint8))
        path.write_bytes(raw)


def test_fuzz_hdf5_data(folder):
    count = [0]
    path = folder / "data.h5"
    write_h5(path, ([("x", "f4", 10, (3,), None), ("y", "i4", 10, (), None)], "ok", 0))
    config = (folder / "h5.yaml")
    specs = []
    for budget in (0, 1000):  # streamed from disk, and in memory
        write_config(folder, f"""
data: {{train: {path}, normalize: standard, validation: 0.2, memory_budget_mb: {budget}}}
layers:
  - {{type: dense, units: 3, activation: softmax}}
""", name=config.name)
        specs.append(spec_mod.load(config))

    @fuzz(CASES)
    @given(h5_specs(), st.sampled_from([(None, None), ("x", "y"), ("inputs", "z"), ("z", "x")]))
    def case(spec, cols):
        count[0] += 1
        write_h5(path, spec)
        table = expect_only_nncli_errors(data.read, path, *cols)
        if table is not None:
            assert table.x.dtype == np.float32 and np.isfinite(table.x).all() and len(table.y) == len(table.x) > 0
            for loss, units in (("categorical_crossentropy", 3), ("mse", 1), ("binary_crossentropy", 1)):
                enc = expect_only_nncli_errors(data.fit_encoding, table, loss, units)
                if enc is not None:
                    expect_only_nncli_errors(data.encode_targets, table, enc, (units,))
        expect_only_nncli_errors(data.read, path, None, "y", with_targets=False, expect_x=["x"])
        for s in specs:
            prep = expect_only_nncli_errors(prepare, s)
            if prep is not None:
                first = next(iter(data.batches(prep.x_train, prep.t_train, 4)))
                assert np.isfinite(first[0]).all()

    case()
    report("HDF5 data (data.read, encodings, prepare streamed and in memory)", count[0])


# --- checkpoints ------------------------------------------------------------------------------

ATTR_VALUES = st.one_of(
    st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True), TEXT, st.binary(max_size=8),
    st.lists(st.integers(-5, 10**6), max_size=4).map(lambda v: np.asarray(v, dtype=np.int64)),
    st.sampled_from(["nncli-checkpoint", "[" * 20000 + "]" * 20000, "{}", "[]", "null", '{"shuffle": 1}',
                     "layers: [{type: dense, units: 1000000}]", "!!python/object/apply:os.system [ls]",
                     "categorical", "binary", "values", "standard", "minmax", "none"]),
)


def _objects(f):
    names = [""]
    f.visit(names.append)
    return names


@st.composite
def checkpoint_damage(draw):
    kind = draw(st.sampled_from(["truncate", "flip", "zero", "structure", "structure", "structure", "foreign"]))
    return kind, draw(st.integers(0, 2**32 - 1)), draw(st.lists(st.tuples(
        st.sampled_from(["delete", "replace", "attr", "del-attr", "add"]), st.integers(0, 10**6), ATTR_VALUES,
        st.sampled_from(["f4", "f8", "i8", "S3", "str", "bool"]), st.sampled_from([(), (0,), (1,), (3, 2), (2, 3, 1)])),
        min_size=1, max_size=3))


def damage_checkpoint(src, dst, damage):
    kind, seed, ops = damage
    rng = np.random.default_rng(seed)
    raw = bytearray(Path(src).read_bytes())
    if kind == "truncate":
        Path(dst).write_bytes(bytes(raw[: rng.integers(0, len(raw))]))
        return
    if kind in ("flip", "zero"):
        for _ in range(rng.integers(1, 20)):
            at = int(rng.integers(0, len(raw)))
            if kind == "flip":
                raw[at] ^= 1 << int(rng.integers(0, 8))
            else:
                raw[at:at + int(rng.integers(1, 64))] = bytes(min(64, len(raw) - at))[: len(raw[at:at + 64])]
        Path(dst).write_bytes(bytes(raw))
        return
    if kind == "foreign":
        with h5py.File(dst, "w") as f:
            f.attrs["format"] = "something-else" if seed % 2 else "nncli-checkpoint"
            f.create_dataset("x", data=rng.normal(size=(4, 2)))
            f.create_group("params").create_dataset("dense_1/W", data=np.zeros((2, 2)))
        return
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        for op, pick, value, dtype, shape in ops:
            names = _objects(f)
            name = names[pick % len(names)]
            obj = f[name] if name else f
            if op == "delete" and name:
                del f[name]
            elif op == "replace" and name:
                parent = obj.parent
                base = name.rsplit("/", 1)[-1]
                del f[name]
                if dtype == "str":
                    parent.create_dataset(base, data=np.array(["a"] * int(np.prod(shape)), dtype=object).reshape(shape),
                                          dtype=h5py.string_dtype())
                else:
                    parent.create_dataset(base, data=np.ones(shape, dtype=dtype))
            elif op == "attr":
                keys = list(obj.attrs.keys()) or ["format"]
                try:
                    obj.attrs[keys[pick % len(keys)]] = value
                except (TypeError, ValueError):
                    pass
            elif op == "del-attr" and len(obj.attrs):
                del obj.attrs[list(obj.attrs.keys())[pick % len(obj.attrs)]]
            elif op == "add" and isinstance(obj, h5py.Group):
                obj.require_group(f"junk{pick}")


def test_fuzz_checkpoints(folder, blobs_run):
    result, _ = blobs_run
    src = result.output / "model.h5"
    path = folder / "damaged.h5"
    count = [0]
    loaded = [0]

    @fuzz(CASES)
    @given(checkpoint_damage())
    def case(damage):
        count[0] += 1
        damage_checkpoint(src, path, damage)
        ck = expect_only_nncli_errors(checkpoint.load, path)
        model = expect_only_nncli_errors(inference.load_model, path, compile_backend=False)
        info = expect_only_nncli_errors(inference.inspect, path)
        if ck is not None and model is not None and info is not None:
            loaded[0] += 1
            json.dumps(info, default=str)

    case()
    print(f"\n  ({loaded[0]} of the damaged checkpoints still loaded: damage in parts that are not needed)")
    report("checkpoints (checkpoint.load, inference.load_model, inference.inspect)", count[0])


# --- expressions ----------------------------------------------------------------------------------

TOKENS = ["x", "y", "z1", "1", "2.5", "1e308", "1e-320", "0", ".5", "pi", "e", "+", "-", "*", "/", "**", "(", ")",
          ",", "sin", "cos", "exp", "log", "sqrt", "abs", "min", "max", "where", "eq", "sign", "tanh", "arcsin",
          "__import__", "os", ".", "[", "]", "lambda", ":", "'", "=", "<", "@", "x.real", "1j", "  "]


ATOMS = st.sampled_from(["x", "y", "1", "2.5", "0", "1e308", "1e-320", "pi", "e", "-1", "710", "(x-x)"])
FUNCS = ["sin", "cos", "tan", "exp", "log", "sqrt", "abs", "tanh", "arcsin", "arccos", "log1p", "expm1",
         "sigmoid", "softplus", "erf", "sign", "log2", "log10", "sinh", "cosh", "arctan"]
GRAMMAR = st.recursive(ATOMS, lambda e: st.one_of(
    st.tuples(e, st.sampled_from(["+", "-", "*", "/", "**"]), e).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
    st.tuples(st.sampled_from(FUNCS), e).map(lambda t: f"{t[0]}({t[1]})"),
    st.tuples(st.sampled_from(["min", "max", "eq"]), e, e).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
    e.map(lambda t: f"-{t}")), max_leaves=8)


@st.composite
def expressions(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=30))
    if kind == 1:
        return "".join(draw(st.lists(st.sampled_from(TOKENS), min_size=0, max_size=14)))
    text = draw(GRAMMAR)
    if kind == 2:  # valid, or broken in one place
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", "", ")", "(", "**", ",", "$", "x y", "\n"])) + text[at:]
    return text


def test_fuzz_expressions():
    from nncli.grad import derivatives, language

    count, computed = [0], [0]

    @fuzz(CASES)
    @given(expressions(), st.sampled_from([(), ("1",), ("x=0.5",), ("x=1", "y=-2"), ("x=1e308",), ("nan",)]))
    def case(text, at):
        count[0] += 1
        tree = expect_only_nncli_errors(language.parse, text)
        if tree is not None and computed[0] < 150:  # compiling is the slow part: a sample
            computed[0] += 1
            result = expect_only_nncli_errors(derivatives.compute, text, at)
            if result is not None:
                assert isinstance(result.finite, bool)

    case()
    print(f"\n  ({computed[0]} of the parsed expressions differentiated with derivatives.compute)")
    report("expressions (language.parse, derivatives.compute)", count[0])


# --- through the CLI ---------------------------------------------------------------------------

def snapshot(root: Path, skip: Path | None = None) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not (skip and skip in p.parents):
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def assert_cli_error(r, allowed=(1, 2)):
    assert r.exit_code in allowed, (r.exit_code, r.output, r.exception)
    lines = r.stderr.splitlines()
    errors = [l for l in lines if l.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert "Traceback" not in r.output and "internal error" not in r.stderr, r.stderr


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, blobs_run):
    """An output folder holding an earlier run's files, and a predictions file, both to be kept."""
    root = tmp_path_factory.mktemp("cli")
    result, _ = blobs_run
    out = root / "run"
    shutil.copytree(result.output, out)
    (root / "preds.csv").write_text("label\nkeep me\n")
    return root, out


def test_fuzz_cli(cli_run, folder, blobs_run):
    root, out = cli_run
    model = out / "model.h5"
    runner = CliRunner()
    counts = {"train: bad config": 0, "train: bad data": 0, "predict: bad input": 0,
              "inspect/predict: bad checkpoint": 0, "grad: bad expression": 0}
    shutil.copyfile(folder / "train.csv", root / "train.csv")
    keep = snapshot(root)

    reached = {k: 0 for k in counts}

    def check(args, allowed=(1, 2), what=None):
        if what:
            reached[what] += 1
        r = runner.invoke(main, args)
        assert_cli_error(r, allowed)
        now = snapshot(root)
        scratch = {k for k in now if k.startswith("case")}
        assert {k: v for k, v in now.items() if k not in scratch} == keep, "output replaced or a file written"
        return r

    bad_configs = config_texts().filter(lambda t: not _valid_config(root, t))

    @fuzz(CLI_CASES)
    @given(bad_configs)
    def train_config(text):
        counts["train: bad config"] += 1
        (root / "case.yaml").write_bytes(text)
        check(["train", str(root / "case.yaml"), "-o", str(out), "--epochs", "1"], what="train: bad config")

    @fuzz(CLI_CASES)
    @given(csv_files())
    def train_data(file):
        counts["train: bad data"] += 1
        raw, _ = file
        (root / "case.csv").write_bytes(raw)
        cfg = {k: v for k, v in BASE.items() if k != "early_stopping"}
        (root / "case.yaml").write_text(yaml.safe_dump({**cfg, "data": {"train": "case.csv"}}))
        if _valid_data(root / "case.yaml"):
            return
        check(["train", str(root / "case.yaml"), "-o", str(out)], what="train: bad data")

    @fuzz(CLI_CASES)
    @given(csv_files())
    def predict_input(file):
        counts["predict: bad input"] += 1
        raw, _ = file
        (root / "case-in.csv").write_bytes(raw)
        try:
            inference.read_inputs(inference.load_model(model, compile_backend=False), str(root / "case-in.csv"), False)
            return  # a good input: not this test's business
        except NncliError:
            pass
        check(["predict", str(model), str(root / "case-in.csv"), "-o", str(root / "preds.csv")], (1,),
              what="predict: bad input")

    @fuzz(CLI_CASES)
    @given(checkpoint_damage())
    def bad_checkpoint(damage):
        counts["inspect/predict: bad checkpoint"] += 1
        damage_checkpoint(model, root / "case.h5", damage)
        if expect_only_nncli_errors(inference.load_model, root / "case.h5", compile_backend=False) is not None:
            return
        check(["inspect", str(root / "case.h5")], (1,), what="inspect/predict: bad checkpoint")
        check(["predict", str(root / "case.h5"), str(root / "train.csv"), "-o", str(root / "preds.csv")], (1,))

    @fuzz(CLI_CASES)
    @given(expressions())
    def grad(text):
        counts["grad: bad expression"] += 1
        from nncli.grad import language

        if expect_only_nncli_errors(language.parse, text) is not None:
            return
        r = check(["grad", "--at", "1", "--", text], what="grad: bad expression")
        assert r.exit_code == 2

    for run in (train_config, train_data, predict_input, bad_checkpoint, grad):
        run()
    for name, n in counts.items():
        print(f"\nfuzz CLI {name}: {n} cases, {reached[name]} of them bad input checked through the CLI")
        assert n >= CLI_CASES


def _valid_config(root, text):
    path = root / "case-check.yaml"
    path.write_bytes(text)
    try:
        spec = spec_mod.load(path)
        prepare(spec)
        return True
    except NncliError:
        return False
    finally:
        path.unlink()


def _valid_data(config):
    """Would training accept this config's data? (The data checks of training: typed CSV columns
    since issue 14, so words and missing cells may be good data.)"""
    try:
        prepare(spec_mod.load(config))
        return True
    except NncliError:
        return False


# --- no unsafe YAML, no pickle -------------------------------------------------------------------

def test_yaml_is_only_read_with_the_safe_loader(folder, blobs_run, monkeypatch):
    result, config = blobs_run

    def forbidden(*a, **k):
        raise AssertionError("an unsafe YAML loader was used")
    for cls in (yaml.constructor.FullConstructor, yaml.constructor.UnsafeConstructor):
        monkeypatch.setattr(cls, "__init__", forbidden)
    monkeypatch.setattr(yaml, "unsafe_load", forbidden)
    monkeypatch.setattr(yaml, "full_load", forbidden)
    spec_mod.load(config)
    inference.load_model(result.output / "model.h5", compile_backend=False)
    inference.inspect(result.output / "model.h5")


UNPICKLE_GUARD = """
import pickle, sys
def forbidden(*a, **k):
    raise AssertionError("something was unpickled")
class Forbidden:
    def __init__(self, *a, **k):
        forbidden()
pickle.load = pickle.loads = forbidden
pickle.Unpickler = Forbidden
import _pickle
_pickle.load = _pickle.loads = forbidden
_pickle.Unpickler = Forbidden
import numpy as np
np_load = np.load
np.load = lambda *a, allow_pickle=False, **k: np_load(*a, allow_pickle=False, **k)
from nncli import checkpoint, inference
ck = checkpoint.load(sys.argv[1])
model = inference.load_model(sys.argv[1], compile_backend=False)
inference.inspect(sys.argv[1])
print("OK", ck.epoch, len(model.net.params) if hasattr(model.net, "params") else "")
"""


def test_nothing_is_unpickled_when_loading_a_checkpoint(blobs_run):
    """numpy imports pickle itself, so: every way to unpickle raises, then a checkpoint is loaded."""
    result, _ = blobs_run
    r = subprocess.run([sys.executable, "-c", UNPICKLE_GUARD, str(result.output / "model.h5")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr


# --- damaged resume state, and predict/inspect of damaged checkpoints, through the CLI -------------

def assert_cli_outcome(r):
    """Exit 0, or exactly one `Error:` line with exit 1 or 2: never `internal error`, never a traceback."""
    assert "Traceback" not in r.output and "internal error" not in r.stderr, r.stderr
    if r.exit_code != 0:
        assert_cli_error(r)


RNG_KEYS = ["batch", "sums", "shuffle", "shuffle.bit_generator", "shuffle.state", "shuffle.state.state",
            "shuffle.state.inc", "shuffle.has_uint32", "shuffle.uinteger", "batch_slices"]
RNG_VALUES = st.one_of(VALUES, st.integers(-2**130, 2**130), st.sampled_from(
    ["PCG64", "MT19937", "Philox", 0, 1, 2, 4, 5, 99, -1, 2**63, [], [0.0], [1.0, 2.0], [1.0, 2.0, 3.0],
     [float("nan"), 1.0], {}, {"state": 1, "inc": 1}, [2, 2], [1], [2, 5000], [True]]))
RESUME_EDITS = st.one_of(
    st.tuples(st.just("json"), VALUES),
    st.tuples(st.just("text"), st.sampled_from(["", "{", "[]", "null", "NaN", "{}", '"x"', "[" * 3000, "1e999"])),
    st.tuples(st.just("set"), st.sampled_from(RNG_KEYS), RNG_VALUES),
    st.tuples(st.just("delete"), st.sampled_from(RNG_KEYS)),
    st.tuples(st.just("slot"), st.sampled_from(["optimizer/m/dense_1/W", "optimizer/v/dense_2/b", "optimizer/iterations",
                                                "params/dense_1/W", "params/dense_2/b"]),
              st.sampled_from([(), (0,), (1,), (3,), (6,), (2, 8), (8, 2), (2, 3, 1)]),
              st.sampled_from(["f4", "f8", "i8", "bool"])),
)


def _edit_resume_state(f, edit):
    if edit[0] == "slot":
        _, key, shape, dtype = edit
        if key in f:
            del f[key]
        f.create_dataset(key, data=np.ones(shape, dtype=dtype))
        return
    try:
        state = json.loads(f["rng"].attrs["state"])
    except ValueError:  # an earlier "text" edit left no JSON: a "set" or "delete" has nothing to edit
        if edit[0] in ("set", "delete"):
            return
    if edit[0] == "json":
        state = edit[1]
    elif edit[0] == "text":
        f["rng"].attrs["state"] = edit[1]
        return
    else:
        *parents, last = edit[1].split(".")
        node = state
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if edit[0] == "set":
                node[last] = edit[2]
            else:
                node.pop(last, None)
    f["rng"].attrs["state"] = json.dumps(state)


def test_fuzz_resume_of_damaged_state(tmp_path_factory, blobs_run):
    """`train --resume` from a last.h5 with damaged /rng state or optimizer slots: exit 0, or one
    `Error:` line that leaves every file of the run as it was."""
    result, config = blobs_run
    root = tmp_path_factory.mktemp("fuzz-resume")
    out = root / "run"
    runner = CliRunner()
    count, refused = [0], [0]

    def state(folder):
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}

    @fuzz(CLI_CASES)
    @given(st.lists(RESUME_EDITS, min_size=1, max_size=2))
    def case(edits):
        count[0] += 1
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(result.output, out)
        with h5py.File(out / "last.h5", "r+") as f:
            for edit in edits:
                _edit_resume_state(f, edit)
        before = state(out)
        r = runner.invoke(main, ["train", str(config), "-o", str(out), "--resume", "--epochs", "7", "-q"])
        assert_cli_outcome(r)
        if r.exit_code != 0:
            refused[0] += 1
            assert state(out) == before, "a refused resume changed the run's files"

    case()
    print(f"\n  ({refused[0]} of the damaged resume states refused with one line)")
    report("CLI train --resume of damaged state", count[0])


def test_fuzz_predict_and_inspect_of_damaged_checkpoints(tmp_path_factory, blobs_run, blobs_csv):
    """Every damaged checkpoint, loadable or not: `inspect`, `inspect --json` (strict JSON) and
    `predict` exit 0 or print one `Error:` line."""
    result, _ = blobs_run
    root = tmp_path_factory.mktemp("fuzz-ckpt-cli")
    path = root / "case.h5"
    runner = CliRunner()
    count, worked = [0], [0]

    def no_constant(name):
        raise AssertionError(f"bare {name} in inspect --json")

    @fuzz(CLI_CASES)
    @given(checkpoint_damage())
    def case(damage):
        count[0] += 1
        damage_checkpoint(result.output / "model.h5", path, damage)
        r = runner.invoke(main, ["inspect", str(path)])
        assert_cli_outcome(r)
        r = runner.invoke(main, ["inspect", "--json", str(path)])
        assert_cli_outcome(r)
        if r.exit_code == 0:
            json.loads(r.stdout, parse_constant=no_constant)
        r = runner.invoke(main, ["predict", str(path), str(blobs_csv)])
        assert_cli_outcome(r)
        worked[0] += r.exit_code == 0

    case()
    print(f"\n  ({worked[0]} of the damaged checkpoints still predicted)")
    report("CLI inspect/predict of damaged checkpoints", count[0])
