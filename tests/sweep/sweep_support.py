"""What the sweep tests share: the data and configs of a sweep folder, running `nncli`, reading
results.csv and metrics.csv, finding and killing a trial's process, and the uninterrupted
reference run of a trial."""

from __future__ import annotations

import csv
from contextlib import contextmanager
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from support import nncli_executable

psutil = pytest.importorskip("psutil")

NNCLI = nncli_executable()
DASK = str(Path(sys.executable).with_name("dask"))

SMALL = """
name: small
seed: 1
data: {train: small.csv, validation: 0.2, normalize: standard}
layers:
  - {type: dense, units: 8, activation: tanh}
  - {type: dense, units: 3, activation: softmax}
optimizer: adam
learning_rate: 0.05
epochs: 3
batch_size: 16
checkpoint_interval: 0
"""

LONG = """
name: long
seed: 1
data: {train: big.csv, validation: 0.2, normalize: standard}
layers:
  - {type: dense, units: 8, activation: tanh}
  - {type: dense, units: 3, activation: softmax}
optimizer: adam
learning_rate: 0.01
epochs: 16
batch_size: 4
checkpoint_interval: 0
"""


def _blobs(path: Path, per_class: int, spread: float, gap: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = ["a,b,colour"]
    for _ in range(per_class):
        for name, (cx, cy) in {"red": (0, 0), "green": (gap, 0), "blue": (0, gap)}.items():
            rows.append(f"{cx + rng.normal(0, spread):.4f},{cy + rng.normal(0, spread):.4f},{name}")
    path.write_text("\n".join(rows) + "\n")


def make_folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sweep")
    _blobs(d / "small.csv", 30, 0.5, 4.0)
    _blobs(d / "big.csv", 2000, 1.0, 3.0)
    (d / "small.yaml").write_text(SMALL)
    (d / "long.yaml").write_text(LONG)
    return d


def write_sweep(folder: Path, name: str, **keys) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(keys, sort_keys=False))
    return path


def run(args, cwd, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([NNCLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def metric_column(run_folder: Path, name: str) -> list[float]:
    return [float(r[name]) for r in table(run_folder / "metrics.csv")]


PARAMS = {"learning_rate": {"space": "loguniform", "lower": 1.0e-3, "upper": 0.1},
          "layers[0].units": {"space": "int", "lower": 4, "upper": 16, "log": True},
          "optimizer.type": {"space": "choice", "values": ["adam", "sgd"]}}


def check_results(out: Path, n: int, metric: str, maximize: bool) -> list[dict]:
    rows = table(out / "results.csv")
    assert [int(r["number"]) for r in rows] == list(range(n))
    for r in rows:
        assert r["status"] == "complete", r
        values = metric_column(out / f"trial-{int(r['number']):03d}", metric)
        best = max(values) if maximize else min(values)
        assert float(r[metric]) == pytest.approx(best, abs=1e-12)
        assert int(r["best_epoch"]) == values.index(best) + 1 and int(r["epochs"]) == len(values)
    return rows




def _children_with(pid: int, text: str) -> list:
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            if text in " ".join(p.cmdline()) and "train" in p.cmdline():
                out.append(p)
        except psutil.Error:
            pass
    return out


def _epochs_logged(log: Path) -> int:
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for l in lines if l.startswith('{"epoch"'))


def _kill_trial_mid_run(parent_pid: int, out: Path, number: int, deadline: float) -> int:
    """Wait for 3 epochs of the trial, then SIGKILL its `nncli train`; the pid killed."""
    log = out / "logs" / f"trial-{number:03d}.jsonl"
    while time.monotonic() < deadline:
        if _epochs_logged(log) >= 3:
            procs = _children_with(parent_pid, f"trial-{number:03d}")
            if procs:
                procs[0].send_signal(signal.SIGKILL)
                return procs[0].pid
        time.sleep(0.05)
    raise AssertionError("the trial never reached epoch 3")


def _reference(folder: Path, tmp_path: Path, sets: list[str]) -> Path:
    ref = tmp_path / "reference"
    args = ["train", "long.yaml", "-o", str(ref), "-q"]
    for s in sets:
        args += ["--set", s]
    r = run(args, folder)
    assert r.returncode == 0, r.stderr
    return ref



@contextmanager
def reaped(proc: subprocess.Popen):
    """The started `proc`, killed and waited for on the way out if it is still running."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
