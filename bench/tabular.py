"""Typed CSV columns at scale: generate a mixed CSV, time the preprocessing, the time from
`nncli train` to the first batch, and the peak RSS. Not part of the test suite.

    python bench/tabular.py generate /tmp/mixed.csv --rows 1000000
    python bench/tabular.py generate /tmp/big.csv --bytes 2e9 --note     # ~2 GB (an ignored text column)
    python bench/tabular.py prepare /tmp/mixed.csv     # the chunked passes, rows/s and peak RSS
    python bench/tabular.py prepare /tmp/big.csv --budget-mb 64   # encoded inputs spilled to disk
    python bench/tabular.py first-batch /tmp/mixed.csv # nncli's train entry point -> the first batch

The table: x1 (normal, 5% NA), x2 (integer), cat (20 levels, 3% empty), kind (4 levels),
flag (yes/no), day (ISO date), optionally note (text, ignored), y (3 classes from the others).
`prepare` runs nncli's prepare step (the three chunked passes of typed columns: targets, fitting
on the training rows, encoding; then the targets' encoding and the normaliser) and reports the peak
RSS of the process (resource.getrusage), the encoded inputs included when they are held in memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import cpu_model  # noqa: E402

CHUNK = 500_000


def _chunk(rng: np.random.Generator, n: int, note: bool) -> str:
    x1 = rng.normal(0, 1, n)
    x2 = rng.integers(0, 100, n)
    cat = rng.integers(0, 20, n)
    kind = rng.integers(0, 4, n)
    flag = rng.integers(0, 2, n)
    day = rng.integers(0, 3650, n)
    score = x1 + (cat < 5) - (kind == 2) + 0.01 * x2 * flag
    y = np.digitize(score, [-0.2, 0.8])
    x1s = np.char.mod("%.4f", x1)
    x1s[rng.random(n) < 0.05] = "NA"
    cats = np.char.add("c", cat.astype(str))
    cats[rng.random(n) < 0.03] = ""
    days = (np.datetime64("2015-01-01") + day.astype("timedelta64[D]")).astype(str)
    cols = [x1s, x2.astype(str), cats, np.array(["alpha", "beta", "gamma", "delta"])[kind],
            np.array(["no", "yes"])[flag], days]
    if note:
        cols.append(np.char.add("free text field number ", rng.integers(0, 10**9, n).astype(str)))
    cols.append(np.array(["low", "mid", "high"])[y])
    return "\n".join(",".join(r) for r in zip(*[c.tolist() for c in cols])) + "\n"


def generate(path: str, rows: int | None, size: float | None, note: bool, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    header = "x1,x2,cat,kind,flag,day," + ("note," if note else "") + "y\n"
    t0, written, n = time.perf_counter(), 0, 0
    with open(path, "w") as fh:
        fh.write(header)
        while (rows is not None and n < rows) or (size is not None and written < size):
            k = min(CHUNK, rows - n) if rows is not None else CHUNK
            text = _chunk(rng, k, note)
            fh.write(text)
            written += len(text)
            n += k
    print(f"wrote {n:,} rows, {written / 1e9:.2f} GB to {path} in {time.perf_counter() - t0:.0f} s")


CONFIG = """name: tabular-bench
data:
  train: {train}
  memory_budget_mb: {budget}
  normalize: standard
  columns:
    day: {{type: date, parts: [year, month, weekday]}}
    {note}
layers:
  - {{type: dense, units: 32, activation: relu}}
  - {{type: dense, units: 3, activation: softmax}}
loss: categorical_crossentropy
optimizer: adam
epochs: 1
batch_size: 256
"""


def _config(folder: Path, csv_path: str, budget_mb: float) -> Path:
    note = "note: ignore" if "note" in Path(csv_path).open().readline() else ""
    path = folder / "bench.yaml"
    path.write_text(CONFIG.format(train=str(Path(csv_path).resolve()), note=note, budget=budget_mb))
    return path


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def prepare(csv_path: str, budget_mb: float) -> None:
    from nncli import spec as spec_mod
    from nncli.training import prepare as prep_mod

    with tempfile.TemporaryDirectory() as tmp:
        spec = spec_mod.load(_config(Path(tmp), csv_path, budget_mb), {})
        rss0 = _peak_rss_gb()
        t0 = time.perf_counter()
        p = prep_mod.prepare(spec)
        dt = time.perf_counter() - t0
        cols = p.columns
        spilled = isinstance(p.x_train, prep_mod.data.XStream)
        n = len(p.x_train) + (len(p.x_val) if p.x_val is not None else 0)
        targets_mb = (p.t_train.nbytes + (p.t_val.nbytes if p.t_val is not None else 0)) / 1e6
    where = "spilled to a temporary HDF5 file" if spilled else "in memory"
    print("\n".join(cols.lines()))
    print(f"{n:,} rows, {cols.width} inputs: prepare (the chunked passes, the targets, the normaliser) in "
          f"{dt:.1f} s = {n / dt:,.0f} rows/s; encoded inputs {4 * n * cols.width / 1e9:.2f} GB {where}; encoded "
          f"targets {targets_mb:.0f} MB in memory; peak RSS {_peak_rss_gb():.2f} GB (before: {rss0:.2f} GB); "
          f"file {Path(csv_path).stat().st_size / 1e9:.2f} GB  (CPU: {cpu_model()})")


class _FirstBatch:
    def __init__(self, t0: float):
        from nncli import progress

        self.inner = progress.Reporter(sys.stderr)
        self.t0, self.first, self.marks = t0, None, []

    def info(self, message):
        self.marks.append((time.perf_counter() - self.t0, message))
        self.inner.info(f"[{time.perf_counter() - self.t0:6.1f} s] {message}")

    def batch(self, done, logs, samples):
        if self.first is None:
            self.first = time.perf_counter() - self.t0
            raise KeyboardInterrupt  # enough: stop the run here

    def __getattr__(self, name):
        return getattr(self.inner, name)


def first_batch(csv_path: str, budget_mb: float) -> None:
    t0 = time.perf_counter()
    from nncli.training import trainer

    rep = _FirstBatch(t0)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            trainer.train(_config(Path(tmp), csv_path, budget_mb), output=str(Path(tmp) / "run"), reporter=rep,
                          backend_name="jax")
        except KeyboardInterrupt:
            pass
    print(f"time from nncli train (imports included) to the first batch: {rep.first:.1f} s; peak RSS "
          f"{_peak_rss_gb():.2f} GB  (CPU: {cpu_model()})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("path")
    g.add_argument("--rows", type=int)
    g.add_argument("--bytes", type=float)
    g.add_argument("--note", action="store_true", help="add an ignored free-text column (longer rows)")
    for name in ("prepare", "first-batch"):
        p = sub.add_parser(name)
        p.add_argument("path")
        p.add_argument("--budget-mb", type=float, default=512.0,
                       help="data.memory_budget_mb: encoded inputs above it are spilled to disk and streamed")
    a = ap.parse_args(argv)
    if a.cmd == "generate":
        if (a.rows is None) == (a.bytes is None):
            ap.error("give --rows or --bytes")
        generate(a.path, a.rows, a.bytes, a.note)
    elif a.cmd == "prepare":
        prepare(a.path, a.budget_mb)
    else:
        first_batch(a.path, a.budget_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
