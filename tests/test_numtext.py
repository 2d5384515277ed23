"""numtext writes numbers as Python's "%.9g" does, checked number by number against Python itself
on every kind of float64: float32 outputs, tiny and huge exponents, powers of ten and the values
next to them, halves, random bit patterns, zeros, infinities and NaNs."""

import numpy as np
import pytest

from nncli import numtext


def _python(values):
    return ["%.9g" % v for v in np.asarray(values, dtype=np.float64).reshape(-1).tolist()]


def _ours(values):
    cells = numtext.g9_cells(np.asarray(values))
    return [bytes(c[c != 0]).decode() for c in cells.reshape(-1, numtext.WIDTH)]


def _kinds():
    rng = np.random.default_rng(7)
    n = 100_000
    with np.errstate(over="ignore", invalid="ignore"):
        bits = np.frombuffer(rng.bytes(8 * n), dtype=np.float64).copy()
    tens = np.array([float(f"1e{k}") for k in range(-320, 309)])
    return {
        "float32 in [0, 1)": rng.random(n).astype(np.float32),
        "float32 of every exponent": (rng.standard_normal(n) * 10.0 ** rng.integers(-44, 38, n)).astype(np.float32),
        "float64 of every exponent": rng.standard_normal(n) * 10.0 ** rng.integers(-320, 308, n),
        "random bit patterns": bits,
        "powers of ten and their neighbours": np.concatenate([tens, np.nextafter(tens, 0), np.nextafter(tens, np.inf),
                                                               -tens]),
        "short decimals": np.array([k * 10.0 ** p for k in range(1, 1000) for p in range(-12, 12)]),
        "dyadic float32": np.arange(1, 2 ** 24, 97, dtype=np.float32) / np.float32(2 ** 24),
        "halves and ties": np.array([0.5, 2.5, 999999999.5, 999999998.5, 123456789.5, 1.0000000005, 1e9, 1e8,
                                     99999999.95, 999999999.4, 9.9999999995e-5, 0.00012345678949999]),
        "special": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324, -5e-324, 2.2250738585072014e-308,
                             1.7976931348623157e308, -1.7976931348623157e308]),
    }


@pytest.mark.parametrize("kind", list(_kinds()))
def test_every_number_is_pythons_text(kind):
    values = _kinds()[kind]
    assert _ours(values) == _python(values)


def test_the_fast_path_takes_almost_every_float32_output():
    """Most numbers must not take the Python path (else numtext is no faster): count them."""
    rng = np.random.default_rng(0)
    values = rng.random(200_000).astype(np.float32).astype(np.float64)
    calls = []
    real = numtext._python

    def counting(v):
        calls.append(len(v))
        return real(v)
    numtext._python, saved = counting, numtext._python
    try:
        numtext.g9_cells(values)
    finally:
        numtext._python = saved
    assert sum(calls) < 100


def test_csv_rows_equal_python_lines_with_labels_of_any_text():
    rng = np.random.default_rng(3)
    probs = rng.random((500, 3)).astype(np.float32)
    probs[:5] = [[0, 1, 1e-30], [np.nan, 0.5, 1e-5], [-0.0, 1e9, 123456789], [1, 1, 1], [0.1, 0.2, 0.3]]
    labels = ['"a,b"', "naïve", "x\0y"]  # a quoted cell, UTF-8, a NUL kept by length
    codes = rng.integers(0, 3, 500)
    want = "".join("%s,%.9g,%.9g,%.9g\n" % (labels[c], *row)
                   for c, row in zip(codes.tolist(), probs.astype(np.float64).tolist()))
    assert numtext.csv_rows(probs, labels, codes) == want
    want_plain = "".join("%.9g,%.9g,%.9g\n" % tuple(row) for row in probs.astype(np.float64).tolist())
    assert numtext.csv_rows(probs) == want_plain
    assert numtext.csv_rows(probs[:0]) == ""


def test_blocks_join_in_order(monkeypatch):
    monkeypatch.setattr(numtext, "BLOCK", 7)
    values = np.linspace(-3, 3, 50).reshape(10, 5)
    assert _ours(values) == _python(values)
