"""The C backend's BLAS (nncli/blas.py): scipy's OpenBLAS linked through -D renames, and its
threads per workload (the `machine` fixture of conftest.py: a CPU machine with a working BLAS)."""

from __future__ import annotations

import os

import pytest

from nncli import backend, blas
from nncli.layers import LAYERS

DENSE = [LAYERS.get(t).kind for t in ("dense", "dropout", "dense")]   # what `choose` gets: layer kinds
RNN = [LAYERS.get(t).kind for t in ("lstm", "dense")]


def test_blas_threads_per_workload(machine, monkeypatch):
    assert backend.choose("c", "cpu", RNN, 1024).blas_threads == 1
    assert backend.choose("c", "cpu", DENSE, 32).blas_threads == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert backend.choose("c", "cpu", DENSE, 1024).blas_threads == 4
    assert backend.choose("c", "cpu", RNN, 1024).blas_threads == 1
    monkeypatch.setenv("NNCLI_BLAS_THREADS", "3")
    assert backend.choose("c", "cpu", RNN, 32).blas_threads == 3
    assert "BLAS OpenBLAS test, 3 threads" in backend.choose("c", "cpu", RNN).describe()
    assert backend.choose("jax", "cpu", DENSE).blas_threads == 0


def test_wheel_blas_flags_rename_the_prefixed_symbols():
    """On a pip install, scipy's bundled OpenBLAS is found and linked through -D renames."""
    if not blas.cxx_compiler() or not blas.wheel_openblas():
        pytest.skip("no C++ compiler or no OpenBLAS in scipy's wheel here")
    found = blas.find()
    assert found is not None and found.ok, found
    if "scipy_" in found.threads_symbol:
        assert "-Dsgemm_=scipy_sgemm_" in found.ldflags and "-Dsdot_=scipy_sdot_" in found.ldflags
