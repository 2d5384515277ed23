"""Evaluation through the C library's math functions (nncli.grad.libm)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nncli.grad import derivatives


@pytest.mark.parametrize("name, fn, lo, hi", [
    ("exp", math.exp, -20, 20), ("log", math.log, 1e-3, 1e3), ("sin", math.sin, -300, 300),
    ("cos", math.cos, -300, 300), ("tan", math.tan, -3, 3), ("tanh", math.tanh, -5, 5),
    ("sqrt", math.sqrt, 0, 1e4), ("erf", math.erf, -3, 3), ("log1p", math.log1p, 0, 10),
])
def test_transcendental_functions_are_evaluated_by_libm(name, fn, lo, hi):
    """Bit-equal to Python's math (the platform libm) at many points, whatever numpy's SIMD loops give."""
    rng = np.random.default_rng(len(name))
    for x in rng.uniform(lo, hi, 40):
        got = derivatives.evaluate(f"{name}(x)", {"x": float(x)})
        assert got == fn(float(x)), (name, x)


def test_libm_domain_errors_fall_back_to_numpy_semantics():
    assert math.isnan(derivatives.evaluate("sqrt(x)", {"x": -1.0}))
    assert derivatives.evaluate("log(x)", {"x": 0.0}) == -math.inf
    assert derivatives.evaluate("exp(x)", {"x": 1000.0}) == math.inf
