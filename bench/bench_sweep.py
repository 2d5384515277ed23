"""`nncli sweep` overhead: seconds from a command's start to a trial's first epoch line, for
`nncli train` alone, a local sweep and a sweep on a loopback Dask cluster (a scheduler and one
worker started here as separate processes); then wall times of a 20-trial sweep of
configs/iris.yaml with parallel 1 and 2. Not part of the test suite.

    python bench/bench_sweep.py [--repeats 3] [--no-iris]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SWEEP = """name: bench
base: {base}
samples: {samples}
parallel: {parallel}
sampler: {{type: tpe, seed: 0}}
parameters:
  learning_rate: {{space: loguniform, lower: 1.0e-3, upper: 1.0e-1}}
  layers[0].units: {{space: int, lower: 4, upper: 64, log: true}}
"""


def first_epoch(cmd: list[str], log: Path | None, cwd: Path) -> tuple[float, float]:
    """(seconds to the first epoch line, seconds to the end)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = None
    if log is None:
        for line in p.stdout:
            if first is None and line.startswith('{"epoch"'):
                first = time.perf_counter() - t0
    else:
        while p.poll() is None and first is None:
            if log.exists() and any(l.startswith('{"epoch"') for l in log.read_text().splitlines()):
                first = time.perf_counter() - t0
            time.sleep(0.01)
        p.communicate()
    p.wait()
    assert p.returncode == 0, cmd
    return first, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-iris", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    base = ROOT / "configs" / "iris.yaml"
    nncli = str(BIN / "nncli")
    print(f"CPU: {cpu_model()}; {os.cpu_count()} cores")
    rows = {"train alone": [], "sweep, local": [], "sweep, loopback Dask": []}
    (tmp / "one.yaml").write_text(SWEEP.format(base=base, samples=1, parallel=1))
    sched = tmp / "scheduler.json"
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--scheduler-file", str(sched), "--host", "127.0.0.1",
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        while not sched.exists():
            time.sleep(0.1)
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", "--scheduler-file", str(sched), "--nthreads", "1",
                                       "--no-dashboard", "--local-directory", str(tmp / "w")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(5)
        for i in range(args.repeats):
            rows["train alone"].append(first_epoch(
                [nncli, "train", str(base), "-o", str(tmp / f"t{i}"), "--log-json", "-q", "--epochs", "5"], None, tmp))
            out = tmp / f"s{i}"
            rows["sweep, local"].append(first_epoch(
                [nncli, "sweep", str(tmp / "one.yaml"), "-o", str(out)], out / "logs" / "trial-000.jsonl", tmp))
            out = tmp / f"d{i}"
            rows["sweep, loopback Dask"].append(first_epoch(
                [nncli, "sweep", str(tmp / "one.yaml"), "-o", str(out), "--scheduler-file", str(sched)],
                out / "logs" / "trial-000.jsonl", tmp))
    finally:
        for p in procs[::-1]:
            p.terminate()
            p.wait(timeout=30)
    print("| command | to the first epoch, s (median of %d) |" % args.repeats)
    print("|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {statistics.median(f for f, _ in v):.2f} |")
    if args.no_iris:
        return
    for parallel in (1, 2):
        (tmp / f"iris{parallel}.yaml").write_text(SWEEP.format(base=base, samples=20, parallel=parallel))
        t0 = time.perf_counter()
        out = tmp / f"iris{parallel}"
        subprocess.run([nncli, "sweep", str(tmp / f"iris{parallel}.yaml"), "-o", str(out)], check=True,
                       stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        with open(out / "results.csv") as f:
            best = min(float(r["val_loss"]) for r in csv.DictReader(f) if r["val_loss"])
        print(f"iris, 20 trials, parallel {parallel}: {wall:.1f} s wall; best val_loss {best:.4f}")
    ref = tmp / "shipped"
    subprocess.run([nncli, "train", str(base), "-o", str(ref), "-q"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(ref / "metrics.csv") as f:
        print(f"shipped configs/iris.yaml: best val_loss {min(float(r['val_loss']) for r in csv.DictReader(f)):.4f}")


if __name__ == "__main__":
    main()
