"""Shared fixtures: small data files and trained runs, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from support import BLOBS_CONFIG, write_config

os.environ.setdefault("NNCLI_BACKEND", "jax")


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


@pytest.fixture(scope="session")
def blobs_run(tmp_path_factory, blobs_csv):
    """A trained 3-class run (string labels, normalisation, validation split)."""
    from nncli.training import trainer

    folder = tmp_path_factory.mktemp("blobs_run")
    config = write_config(folder, BLOBS_CONFIG.format(train=blobs_csv))
    result = trainer.train(config, output=str(folder / "run"))
    return result, config
