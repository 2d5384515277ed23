"""A signal that lands inside an Optuna call must not break the study: the sweep driver turns
SIGINT/SIGTERM into a flag and stops at its own safe points. The regression: a KeyboardInterrupt
raised between the rename and the unlink in Optuna's journal lock release made the driver exit 1
with FileNotFoundError (seen once in CI, in the Ctrl-C test of test_sweep.py). Here the signal is
sent from inside that very function, so the race is hit every time, in process, without trials."""

from __future__ import annotations

import os
import signal
from concurrent.futures import Future
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from nncli.errors import Interrupted  # noqa: E402
from nncli.sweep import results, spec, study  # noqa: E402
from nncli.sweep.executors import Handle, Outcome  # noqa: E402

BASE = """
name: tiny
data: {train: tiny.csv}
layers:
  - {type: dense, units: 2, activation: softmax}
epochs: 1
"""


class InstantExecutor:
    """Each trial is done the moment it is submitted (return code 0, no metrics: Optuna gets FAIL)."""

    def __init__(self):
        self.submitted, self.stopped = [], []

    def submit(self, job):
        self.submitted.append(job.number)
        future = Future()
        future.set_result(Outcome(job.number, 0))
        handle = Handle(job, future)
        handle.stop = lambda n=job.number: self.stopped.append(n)
        return handle


def _sweep(tmp_path: Path, samples: int) -> spec.Sweep:
    (tmp_path / "tiny.csv").write_text("a,b,y\n0,1,p\n1,0,q\n")
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "samples": samples, "parallel": 1,
                                    "sampler": {"type": "random", "seed": 0},
                                    "parameters": {"learning_rate": {"space": "uniform", "lower": 0.01,
                                                                     "upper": 0.1}}}))
    return spec.load(path)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_inside_the_journal_lock_release_stops_cleanly(tmp_path, monkeypatch, signum, code):
    sweep = _sweep(tmp_path, samples=50)
    lock = optuna.storages.journal.JournalFileSymlinkLock
    original, calls = lock.release, []

    def release(self):
        calls.append(1)
        if len(calls) == 12:  # some trials in: the signal arrives while the lock is being let go
            os.kill(os.getpid(), signum)
        original(self)

    monkeypatch.setattr(lock, "release", release)
    out = tmp_path / "out"
    executor = InstantExecutor()
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info:
        study.run(sweep, out, executor)
    assert info.value.exit_code == code and "--resume" in str(info.value)
    assert len(calls) >= 12 and 0 < len(executor.submitted) < 50
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert not [p.name for p in out.iterdir() if ".lock" in p.name]  # no lock or half-renamed lock left
    monkeypatch.setattr(lock, "release", original)
    # the journal is whole: resume reads it and finishes the sweep
    summary = study.run(sweep, out, InstantExecutor(), resume=True)
    trials = optuna.load_study(study_name=sweep.name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / study.JOURNAL)))).trials
    assert len(trials) == 50 and all(t.state.is_finished() for t in trials)
    assert len(results.read_outcomes(out)) == 50 and summary["folder"] == out.resolve()

