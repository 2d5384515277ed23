"""Shared fixtures: small data files and trained runs, built once per session."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from nncli import progress

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DATA = ROOT / "data"

os.environ.setdefault("NNCLI_BACKEND", "jax")


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


@pytest.fixture(scope="module")
def jax_backend():
    """PyTensor's global mode set to the JAX backend on the CPU, for a test module's compiled graphs."""
    from nncli import backend

    backend.activate(backend.choose("jax", "cpu"))


@pytest.fixture
def machine(monkeypatch):
    """A CPU-only machine with every backend installed and a working BLAS (each part changeable)."""
    from nncli import backend, blas

    monkeypatch.delenv("NNCLI_BACKEND", raising=False)
    monkeypatch.delenv("NNCLI_BLAS_THREADS", raising=False)
    state = {"jax": True, "gpu": False, "numba": True, "cxx": "g++",
             "blas": blas.Blas("OpenBLAS test", "-lopenblas", "/x/libopenblas.so", "openblas_set_num_threads")}
    monkeypatch.setattr(backend, "jax_installed", lambda: state["jax"])
    monkeypatch.setattr(backend, "gpu_available", lambda: state["gpu"] and state["jax"])
    monkeypatch.setattr(backend, "numba_installed", lambda: state["numba"])
    monkeypatch.setattr(blas, "cxx_compiler", lambda: state["cxx"])
    monkeypatch.setattr(blas, "find", lambda: state["blas"])
    return state


def write_config(folder: Path, text: str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def xor_csv(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("xor")
    path = folder / "xor.csv"
    path.write_text("x1,x2,y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n")
    return path


@pytest.fixture(scope="session")
def blobs_csv(tmp_path_factory) -> Path:
    """Three well-separated 2-D classes with string labels, 90 rows."""
    rng = np.random.default_rng(0)
    centers = {"red": (0.0, 0.0), "green": (4.0, 0.0), "blue": (0.0, 4.0)}
    rows = ["a,b,colour"]
    for i in range(30):
        for name, (cx, cy) in centers.items():
            rows.append(f"{cx + rng.normal(0, .5):.4f},{cy + rng.normal(0, .5):.4f},{name}")
    path = tmp_path_factory.mktemp("blobs") / "blobs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


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


@pytest.fixture(scope="session")
def blobs_run(tmp_path_factory, blobs_csv):
    """A trained 3-class run (string labels, normalisation, validation split)."""
    from nncli.training import trainer

    folder = tmp_path_factory.mktemp("blobs_run")
    config = write_config(folder, BLOBS_CONFIG.format(train=blobs_csv))
    result = trainer.train(config, output=str(folder / "run"))
    return result, config
