"""Helpers shared by the tests (fixtures live in conftest.py): paths of the shipped configs and
data, the installed `nncli` executable, checkpoint comparisons, error-line checks and configs."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np

from nncli import progress

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DATA = ROOT / "data"


def nncli_executable() -> str:
    """The installed `nncli` entry point next to this Python."""
    exe = Path(sys.executable).with_name("nncli")
    return str(exe) if exe.exists() else shutil.which("nncli")


def checkpoint_arrays(path, groups=("params",)) -> dict:
    """Every dataset under the given groups of a checkpoint, read with h5py alone."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for group in groups:
            f[group].visititems(lambda k, v: out.__setitem__(f"{group}/{k}", v[()])
                                if isinstance(v, h5py.Dataset) else None)
    return out


def assert_same_arrays(a, b, groups=("params",)) -> None:
    """Two checkpoints hold bit-identical arrays under `groups`."""
    pa, pb = checkpoint_arrays(a, groups), checkpoint_arrays(b, groups)
    assert pa.keys() == pb.keys() and pa
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


class InterruptAt(progress.Silent):
    """A reporter that sends this process SIGINT once a given epoch has done at least `batch`
    minibatches; `fired_at` is how many it had done (a call may train several, nncli/steps.py)."""

    def __init__(self, epoch, batch):
        self.epoch, self.at, self.current, self.fired_at = epoch, batch, 0, None

    def epoch_start(self, epoch, epochs, batches, start_batch=0):
        self.current = epoch

    def batch(self, done, logs, samples):
        if self.current == self.epoch and done >= self.at and self.fired_at is None:
            self.fired_at = done
            os.kill(os.getpid(), signal.SIGINT)


def write_config(folder: Path, text: str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def error_line(stderr: str) -> str:
    """The one `Error:` line, last on stderr (progress lines may precede it); no traceback."""
    lines = stderr.splitlines()
    errors = [l for l in lines if l.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    return errors[0]


BLOBS_CONFIG = """
name: blobs
seed: 1
data:
  train: {train}
  validation: 0.2
  normalize: standard
layers:
  - {{type: dense, units: 8, activation: tanh}}
  - {{type: dense, units: 3, activation: softmax}}
optimizer: adam
learning_rate: 0.05
epochs: 6
batch_size: 16
checkpoint_interval: 0
"""


def invoke(*args):
    """`nncli ARGS` in this process (click's CliRunner): the result has exit_code, stdout, stderr."""
    from click.testing import CliRunner

    from nncli.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])
