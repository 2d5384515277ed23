"""Big data in bounded memory: HDF5 training files streamed from disk in blocks, and
`nncli predict` on a big CSV in chunks of rows. The two expensive tests (a 2 GB HDF5 file,
a 1,000,000-row CSV) measure the peak RSS of a real `nncli` subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from support import InterruptAt, nncli_executable, write_config
from nncli import checkpoint, data, inference, steps
from nncli.training import trainer
from nncli.training.prepare import prepare
from nncli import spec as spec_mod
from nncli.cli import main
from nncli.errors import Interrupted

MB = 1 << 20

STREAM_CONFIG = """
name: streamed
seed: 5
data: {{train: {train}, validation: {validation}, normalize: {normalize}, memory_budget_mb: {budget}}}
layers:
  - {{type: dense, units: 8, activation: tanh}}
  - {{type: dense, units: 3, activation: softmax}}
optimizer: adam
learning_rate: 0.02
epochs: 3
batch_size: 50
checkpoint_interval: 0
early_stopping: false
"""


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(3001, 5)) * [1, 2, 3, 4, 5] + [0, 1, 2, 3, 4]).astype(np.float32)
    y = np.argmax(x[:, :3] - [0, 1, 2], axis=1).astype(np.int64)
    path = folder / "small.h5"
    with h5py.File(path, "w") as f:
        f["x"], f["y"] = x, y
    return folder, path, x, y


def config_for(folder, train, budget=0.01, validation=0.2, normalize="standard", name="config.yaml"):
    return write_config(folder, STREAM_CONFIG.format(train=train, budget=budget, validation=validation,
                                                     normalize=normalize), name)


def test_a_file_over_the_budget_is_streamed(small_h5):
    folder, path, x, _ = small_h5
    streamed = prepare(spec_mod.load(config_for(folder, path, budget=0.01, name="s.yaml")))
    in_memory = prepare(spec_mod.load(config_for(folder, path, budget=100, name="m.yaml")))
    assert isinstance(streamed.x_train, data.XStream) and isinstance(streamed.x_val, data.XStream)
    assert isinstance(in_memory.x_train, np.ndarray)
    assert len(streamed.x_train) + len(streamed.x_val) == len(x)
    assert 0.1 < len(streamed.x_val) / len(x) < 0.3
    assert len(streamed.t_train) == len(streamed.x_train) and streamed.t_train.shape[1:] == (3,)


def test_chunked_statistics_equal_the_in_memory_ones(small_h5):
    folder, path, x, _ = small_h5
    for kind in ("standard", "minmax"):
        prep = prepare(spec_mod.load(config_for(folder, path, normalize=kind, name=f"{kind}.yaml")))
        rows = np.concatenate([x[a:b] for a, b in prep.x_train.blocks])
        expected = data.Normalizer.fit(kind, rows)
        np.testing.assert_allclose(prep.normalizer.shift, expected.shift, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(prep.normalizer.scale, expected.scale, rtol=1e-6)


def test_an_epoch_yields_every_training_row_once_in_a_seeded_order(small_h5):
    folder, path, x, y = small_h5
    prep = prepare(spec_mod.load(config_for(folder, path, normalize="none", name="none.yaml")))
    xs, ts = prep.x_train, prep.t_train

    def epoch(rng):
        order = xs.shuffle_order(rng)
        got = [(xb[wb > 0], tb[wb > 0]) for xb, tb, wb in data.batches(xs, ts, 64, order)]
        assert all(len(xb) == 64 for xb, _, _ in data.batches(xs, ts, 64, order))
        return np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])

    a, ta = epoch(np.random.default_rng(1))
    b, _ = epoch(np.random.default_rng(1))
    c, _ = epoch(np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)  # the same generator state: the same batches
    assert not np.array_equal(a, c)
    expected = np.concatenate([x[lo:hi] for lo, hi in xs.blocks])
    assert len(a) == len(xs) == len(expected)
    key = lambda arr: arr[np.lexsort(arr.T[::-1])]
    np.testing.assert_array_equal(key(a), key(expected))  # every training row exactly once
    # targets travel with their rows
    onehot = np.eye(3, dtype=np.float32)[y]
    lookup = {r.tobytes(): t for r, t in zip(x, onehot)}
    assert all(np.array_equal(lookup[r.tobytes()], t) for r, t in zip(a[:500], ta[:500]))


def test_streamed_training_resumes_bit_exactly(small_h5, tmp_path):
    folder, path, _, _ = small_h5
    config = config_for(tmp_path, path)
    full, part = tmp_path / "full", tmp_path / "part"
    result = trainer.train(config, output=str(full))
    assert result.history["val_accuracy"][-1] > 0.8
    stop = InterruptAt(epoch=2, batch=17)
    with pytest.raises(Interrupted):
        trainer.train(config, output=str(part), reporter=stop)
    # several minibatches per call (auto): the interrupt lands after the call that did the 17th
    assert 17 <= stop.fired_at < 17 + steps.AUTO_STEPS
    assert checkpoint.load(part / "last.h5").rng["batch"] == stop.fired_at
    trainer.train(config, output=str(part), resume=True)
    a, b = checkpoint.load(full / "last.h5"), checkpoint.load(part / "last.h5")
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    assert a.history["loss"] == b.history["loss"]


# --- predict on a big CSV, in chunks ------------------------------------------------------

@pytest.fixture(scope="module")
def csv_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("csvmodel")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    labels = np.array(["red", "green", "blue, dark"])[np.argmax(x[:, :3], 1)]
    (folder / "train.csv").write_text("a,b,c,d,label\n" + "".join(
        ",".join(f"{v:.4f}" for v in row) + f',"{lab}"\n' for row, lab in zip(x, labels)))
    config = write_config(folder, f"""
data: {{train: {folder / 'train.csv'}, normalize: standard}}
layers:
  - {{type: dense, units: 16, activation: tanh}}
  - {{type: dense, units: 3, activation: softmax}}
epochs: 3
batch_size: 16
""")
    trainer.train(config, output=str(folder / "run"))
    return folder, folder / "run" / "model.h5"


def write_big_csv(path, n, seed=0, with_label=True):
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        fh.write("a,b,c,d" + (",label" if with_label else "") + "\n")
        for start in range(0, n, 100_000):
            cells = np.char.mod("%.4f", rng.normal(size=(min(100_000, n - start), 4))).tolist()
            tail = ",red\n" if with_label else "\n"
            fh.write(tail.join(",".join(r) for r in cells) + tail)


def test_chunked_predict_gives_the_same_text_as_in_memory(csv_model, tmp_path, monkeypatch):
    folder, model = csv_model
    src = tmp_path / "in.csv"
    write_big_csv(src, 3000)
    runner = CliRunner()
    whole = runner.invoke(main, ["predict", str(model), str(src)])
    assert whole.exit_code == 0, whole.stderr
    monkeypatch.setattr(inference, "PREDICT_STREAM_BYTES", 0)
    monkeypatch.setattr(inference, "PREDICT_CHUNK_ROWS", 700)
    assert inference.streams_csv(src)
    chunked = runner.invoke(main, ["predict", str(model), str(src)])
    assert chunked.exit_code == 0, chunked.stderr
    assert chunked.stdout == whole.stdout and '"blue, dark"' in chunked.stdout
    out = tmp_path / "out.csv"
    r = runner.invoke(main, ["predict", str(model), str(src), "-o", str(out), "--no-proba"])
    assert r.exit_code == 0 and "wrote 3000 predictions" in r.stderr
    no_proba = [line.split(",")[0] for line in whole.stdout.splitlines()]
    assert out.read_text().splitlines()[1:] == [l if l != '"blue' else '"blue, dark"' for l in no_proba[1:]]
    assert_a_bad_cell_is_worded_as_in_memory(model, src, out, monkeypatch)


def assert_a_bad_cell_is_worded_as_in_memory(model, src, out, monkeypatch):
    """A bad cell deep in `src` (streamed): exit 1 and, as the one line, the message a read in
    memory gives; the earlier `out` is kept and no temporary file is left."""
    lines = src.read_text().splitlines()
    lines[2500] = lines[2500].replace(lines[2500].split(",")[1], "oops", 1)
    src.write_text("\n".join(lines) + "\n")
    before = out.read_bytes()
    runner = CliRunner()
    bad = runner.invoke(main, ["predict", str(model), str(src), "-o", str(out)])
    monkeypatch.setattr(inference, "PREDICT_STREAM_BYTES", 1 << 40)
    bad_whole = runner.invoke(main, ["predict", str(model), str(src), "-o", str(out)])
    assert bad.exit_code == bad_whole.exit_code == 1
    assert bad.stderr == bad_whole.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "line 2501, column 'b': expected a number, got 'oops'" in bad.stderr
    assert out.read_bytes() == before and not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_chunked_predict_of_plain_numbers_goes_through_fastcsv_and_words_a_bad_cell_as_in_memory(
        csv_model, tmp_path, monkeypatch):
    """Inputs without the label column: plain numbers, so the chunks are parsed by fastcsv. The
    same text as in memory; a bad cell deep in the file: exit 1, the in-memory message as the
    one line, the earlier -o output kept and no temporary file left."""
    from nncli.data import fastcsv

    folder, model = csv_model
    src, out = tmp_path / "plain.csv", tmp_path / "out.csv"
    write_big_csv(src, 3000, with_label=False)
    runner = CliRunner()
    whole = runner.invoke(main, ["predict", str(model), str(src), "-o", str(out)])
    assert whole.exit_code == 0, whole.stderr
    taken, real = [], fastcsv.parse_block

    def counting(*args):
        block = real(*args)
        taken.append(block is not None)
        return block
    monkeypatch.setattr(fastcsv, "parse_block", counting)
    monkeypatch.setattr(inference, "PREDICT_STREAM_BYTES", 0)
    monkeypatch.setattr(inference, "PREDICT_CHUNK_ROWS", 700)
    chunked = runner.invoke(main, ["predict", str(model), str(src)])
    assert chunked.exit_code == 0, chunked.stderr
    assert chunked.stdout == out.read_text() and taken == [True] * 3  # 3,000 rows in chunks of 1,024
    assert_a_bad_cell_is_worded_as_in_memory(model, src, out, monkeypatch)


def test_chunked_predict_of_json_lines_gives_the_same_text_as_in_memory(csv_model, tmp_path, monkeypatch):
    """A big .jsonl input streams through the same raw-rows path as a CSV (rows_to_float)."""
    import json

    folder, model = csv_model
    rng = np.random.default_rng(4)
    rows = rng.normal(size=(1500, 4))
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, **dict(zip("abcd", map(float, r)))}) + "\n"
                           for i, r in enumerate(rows)))
    runner = CliRunner()
    whole = runner.invoke(main, ["predict", str(model), str(src)])
    assert whole.exit_code == 0, whole.stderr
    monkeypatch.setattr(inference, "PREDICT_STREAM_BYTES", 0)
    monkeypatch.setattr(inference, "PREDICT_CHUNK_ROWS", 400)
    assert inference.streams_csv(src)
    chunked = runner.invoke(main, ["predict", str(model), str(src)])
    assert chunked.exit_code == 0, chunked.stderr
    assert chunked.stdout == whole.stdout and len(chunked.stdout.splitlines()) == 1501


# A small launcher starts the command and reports its peak RSS. (Measured from this process,
# ru_maxrss would include the moment between fork and exec, when the child is a copy of pytest.)
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
print(f"MAXRSS_KB {usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


STREAMED = """
import sys
from nncli import cli, inference
inference.PREDICT_STREAM_BYTES = 0
cli.main(sys.argv[1:], prog_name="nncli")
"""


def run_measured(args) -> tuple[int, float, float, str]:
    """Run a command; return (exit status, seconds, peak RSS in MB of that process, stderr)."""
    env = dict(os.environ)
    env.setdefault("NNCLI_BACKEND", "jax")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", LAUNCHER, *args], stderr=subprocess.PIPE, env=env, text=True)
    seconds = time.perf_counter() - t0
    lines = r.stderr.splitlines()
    rss = [int(l.split()[1]) for l in lines if l.startswith("MAXRSS_KB ")]
    assert rss, r.stderr
    return r.returncode, seconds, rss[-1] / 1024, "\n".join(l for l in lines if not l.startswith("MAXRSS_KB "))


def test_predict_a_million_rows_in_bounded_memory(csv_model, tmp_path):
    folder, model = csv_model
    src, out = tmp_path / "million.csv", tmp_path / "preds.csv"
    write_big_csv(src, 1_000_000, with_label=False)
    small = tmp_path / "small.csv"
    write_big_csv(small, 1000, with_label=False)
    # the same command on 1,000 rows read the same way, in chunks (a file that small is otherwise
    # read whole): the baseline of interpreter, libraries and compiled code (the forward pass and
    # fastcsv's parse loop, about 150 MB for numba; more where jax's CUDA plugin is installed), so
    # the bound is on what the data adds
    code, _, base, err = run_measured([sys.executable, "-c", STREAMED, "predict", str(model), str(small), "-o", str(out)])
    assert code == 0, err
    try:
        code, seconds, rss, err = run_measured([nncli_executable(), "predict", str(model), str(src), "-o", str(out)])
        assert code == 0, err
        with open(out, "rb") as fh:
            assert sum(1 for _ in fh) == 1_000_001
        print(f"\npredict 1,000,000 rows ({src.stat().st_size / MB:.0f} MB CSV): {seconds:.1f}s "
              f"({1_000_000 / seconds:,.0f} rows/s end to end), peak RSS {rss:.0f} MB ({base:.0f} MB for 1,000 rows)")
        assert rss < base + 150  # the whole file in memory would add > 1 GB
    finally:
        src.unlink(missing_ok=True)
        out.unlink(missing_ok=True)


BIG_CONFIG = """
name: big
seed: 0
data: {{train: {train}, validation: 0.05, normalize: standard, memory_budget_mb: 256}}
layers:
  - {{type: dense, units: 1}}
loss: mse
optimizer: adam
learning_rate: 0.01
epochs: 1
batch_size: 4096
early_stopping: false
"""


def test_two_gigabyte_hdf5_trains_one_epoch_in_bounded_memory(tmp_path):
    path = tmp_path / "big.h5"
    features, rows = 256, 2_100_000  # 2.15e9 bytes of float32 inputs
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    w = np.linspace(-1, 1, features).astype(np.float32)
    try:
        with h5py.File(path, "w") as f:
            xs = f.create_dataset("x", (rows, features), dtype="f4")
            ys = f.create_dataset("y", (rows,), dtype="f4")
            for a in range(0, rows, 65536):
                xb = rng.random((min(65536, rows - a), features), dtype=np.float32)
                xs[a:a + len(xb)] = xb
                ys[a:a + len(xb)] = xb @ w + rng.normal(0, 0.1, len(xb)).astype(np.float32)
        size = path.stat().st_size
        assert size >= 2 * 10**9
        made = time.perf_counter() - t0
        with h5py.File(tmp_path / "small.h5", "w") as f:  # the baseline: the same config on 8,192 rows
            xb = rng.random((8192, features), dtype=np.float32)
            f["x"], f["y"] = xb, xb @ w
        small = write_config(tmp_path, BIG_CONFIG.format(train=tmp_path / "small.h5"), "small.yaml")
        code, _, base, err = run_measured([nncli_executable(), "train", str(small), "-o", str(tmp_path / "small")])
        assert code == 0, err
        config = write_config(tmp_path, BIG_CONFIG.format(train=path))
        code, seconds, rss, err = run_measured([nncli_executable(), "train", str(config), "-o", str(tmp_path / "run")])
        assert code == 0, err
        epoch = [l for l in err.splitlines() if l.startswith("epoch")]
        ck = checkpoint.load(tmp_path / "run" / "last.h5")
        assert ck.epoch == 1 and ck.history["val_loss"][0] < 0.5
        print(f"\n2 GB HDF5 ({size / MB:.0f} MB, generated in {made:.1f}s): trained 1 epoch in {seconds:.1f}s "
              f"end to end ({epoch[0] if epoch else ''}), {rows / seconds:,.0f} rows/s, peak RSS {rss:.0f} MB "
              f"({base:.0f} MB for 8,192 rows)")
        assert rss < base + 256 + 100  # data.memory_budget_mb plus slack; loading it whole would add 2 GB
    finally:
        path.unlink(missing_ok=True)


TYPED_CONFIG = """
name: typed
seed: 0
data: {{train: {train}, y: y, validation: 0.2, normalize: standard, memory_budget_mb: 1}}
layers:
  - {{type: dense, units: 3, activation: softmax}}
loss: categorical_crossentropy
"""

# prepare() with tracemalloc, which follows every numpy buffer: the peak and the end of what the
# Python heap holds (deterministic, unlike the RSS of a small run, which the allocator and HDF5's
# caches blur by tens of MB); chunks of 8,192 rows, so that both files are read in several
PREPARE = """
import sys, tracemalloc
from nncli import spec
from nncli.data import columns
from nncli.training.prepare import prepare
columns.CHUNK_ROWS = 8192
tracemalloc.start()
p = prepare(spec.load(sys.argv[1]))
now, peak = tracemalloc.get_traced_memory()
print(f"HEAP {now} {peak} {p.t_train.nbytes + p.t_val.nbytes} {type(p.x_train).__name__}")
"""


def write_typed_csv(path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("x,cat,y\n")
        for a in range(0, rows, 100_000):
            n = min(100_000, rows - a)
            x = np.char.mod("%.3f", rng.normal(0, 1, n))
            x[rng.random(n) < 0.05] = "NA"
            cat = np.char.add("level", rng.integers(0, 20, n).astype(str))
            y = np.array(["small", "medium", "large"])[rng.integers(0, 3, n)]
            f.write("".join(f"{p},{q},{r}\n" for p, q, r in zip(x.tolist(), cat.tolist(), y.tolist())))


def test_typed_csv_prepare_holds_only_the_encoded_targets_per_row(tmp_path):
    """The typed-column passes over a CSV bigger than the memory budget: the inputs are spilled to
    disk, and what grows with the rows is the encoded targets (3 classes: 12 bytes a row as
    float32, the same contract as a streamed HDF5 file); the labels are never held as strings
    (that was ~70 bytes a row). Measured on 20,000 and 220,000 rows: the heap prepare() leaves
    and its peak, as tracemalloc counts them. (`python bench/tabular.py prepare` reports the RSS.)"""
    heap = {}
    for rows in (20_000, 220_000):
        csv_path = tmp_path / f"t{rows}.csv"
        write_typed_csv(csv_path, rows)
        config = write_config(tmp_path, TYPED_CONFIG.format(train=csv_path), f"t{rows}.yaml")
        r = subprocess.run([sys.executable, "-c", PREPARE, str(config)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        now, peak, targets, kind = r.stdout.split()[-4:]
        assert kind == "XStream" and int(targets) == rows * 12
        heap[rows] = int(now), int(peak)
    held = (heap[220_000][0] - heap[20_000][0]) / 200_000
    peak = (heap[220_000][1] - heap[20_000][1]) / 200_000
    print(f"\ntyped CSV prepare, bytes a row (20,000 -> 220,000 rows): held {held:.1f}, peak {peak:.1f}")
    assert 12 <= held < 13  # the encoded targets, and nothing else per row
    assert peak < 30        # with the codes and masks of the split; 126 when the labels were strings
