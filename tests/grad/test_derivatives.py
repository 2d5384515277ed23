"""`nncli grad`'s derivatives (nncli.grad.derivatives): gradients, N-th derivatives and Hessians.

Derivatives are checked against closed forms written here with ``math`` and
against central finite differences of the compiled value; printed (--show)
derivatives are parsed back with nncli's own parser (never ``eval``) and
evaluated at several points.
"""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from nncli.cli import main
from nncli.grad import derivatives, language

TUTORIAL = "4.347404090286685"

sin, cos, tan, exp, log, sqrt = math.sin, math.cos, math.tan, math.exp, math.log, math.sqrt


def sig(t):
    return 1 / (1 + exp(-t))


def run(*args):
    return CliRunner().invoke(main, ["grad", *args])


# --- closed forms: (expression, point, f, {variable: df/dvariable}) -------------------------

CASES = [
    ("exp(sin(x**2))", {"x": 15}, lambda x: exp(sin(x**2)),
     {"x": lambda x: 2 * x * cos(x**2) * exp(sin(x**2))}),
    ("sin(x)", {"x": 0.7}, sin, {"x": cos}),
    ("cos(x)", {"x": 0.7}, cos, {"x": lambda x: -sin(x)}),
    ("tan(x)", {"x": 0.4}, tan, {"x": lambda x: 1 / cos(x) ** 2}),
    ("arcsin(x)", {"x": 0.3}, math.asin, {"x": lambda x: 1 / sqrt(1 - x * x)}),
    ("arccos(x)", {"x": -0.6}, math.acos, {"x": lambda x: -1 / sqrt(1 - x * x)}),
    ("arctan(x)", {"x": 2.5}, math.atan, {"x": lambda x: 1 / (1 + x * x)}),
    ("sinh(x)", {"x": 1.3}, math.sinh, {"x": math.cosh}),
    ("cosh(x)", {"x": -1.3}, math.cosh, {"x": math.sinh}),
    ("tanh(x)", {"x": 0.8}, math.tanh, {"x": lambda x: 1 - math.tanh(x) ** 2}),
    ("exp(x)", {"x": 1.5}, exp, {"x": exp}),
    ("expm1(x)", {"x": 1e-3}, math.expm1, {"x": exp}),
    ("log(x)", {"x": 2.5}, log, {"x": lambda x: 1 / x}),
    ("log1p(x)", {"x": 0.25}, math.log1p, {"x": lambda x: 1 / (1 + x)}),
    ("log2(x)", {"x": 3.0}, math.log2, {"x": lambda x: 1 / (x * log(2))}),
    ("log10(x)", {"x": 7.0}, math.log10, {"x": lambda x: 1 / (x * log(10))}),
    ("sqrt(x)", {"x": 5.0}, sqrt, {"x": lambda x: 0.5 / sqrt(x)}),
    ("abs(x)", {"x": -2.0}, abs, {"x": lambda x: math.copysign(1, x)}),
    ("abs(x)", {"x": 3.0}, abs, {"x": lambda x: math.copysign(1, x)}),
    ("sigmoid(x)", {"x": 0.9}, sig, {"x": lambda x: sig(x) * (1 - sig(x))}),
    ("softplus(x)", {"x": -0.4}, lambda x: log(1 + exp(x)), {"x": sig}),
    ("erf(x)", {"x": 0.6}, math.erf, {"x": lambda x: 2 / sqrt(math.pi) * exp(-x * x)}),
    ("x**3 - 2*x + 1", {"x": 1.7}, lambda x: x**3 - 2 * x + 1, {"x": lambda x: 3 * x * x - 2}),
    ("-x**2", {"x": 3.0}, lambda x: -(x**2), {"x": lambda x: -2 * x}),
    ("(-x)**2", {"x": 3.0}, lambda x: x * x, {"x": lambda x: 2 * x}),
    ("1/x", {"x": 4.0}, lambda x: 1 / x, {"x": lambda x: -1 / x**2}),
    ("x**-3", {"x": 1.5}, lambda x: x**-3, {"x": lambda x: -3 * x**-4}),
    ("x**0.5 + 2.5e-1*x", {"x": 2.0}, lambda x: x**0.5 + 0.25 * x, {"x": lambda x: 0.5 * x**-0.5 + 0.25}),
    ("pi*x + e", {"x": 1.0}, lambda x: math.pi * x + math.e, {"x": lambda x: math.pi}),
    ("exp(-x**2/2)/sqrt(2*pi)", {"x": 0.3}, lambda x: exp(-x * x / 2) / sqrt(2 * math.pi),
     {"x": lambda x: -x * exp(-x * x / 2) / sqrt(2 * math.pi)}),
    ("log(1 + exp(x))", {"x": 2.0}, lambda x: log(1 + exp(x)), {"x": sig}),
    ("sin(cos(tan(x)))", {"x": 0.5}, lambda x: sin(cos(tan(x))),
     {"x": lambda x: cos(cos(tan(x))) * -sin(tan(x)) / cos(x) ** 2}),
    ("sqrt(1 + x**2)", {"x": -1.2}, lambda x: sqrt(1 + x * x), {"x": lambda x: x / sqrt(1 + x * x)}),
    ("x*exp(-x)*log(x)", {"x": 2.0}, lambda x: x * exp(-x) * log(x),
     {"x": lambda x: exp(-x) * log(x) - x * exp(-x) * log(x) + exp(-x)}),
    ("tanh(sigmoid(x))", {"x": 0.2}, lambda x: math.tanh(sig(x)),
     {"x": lambda x: (1 - math.tanh(sig(x)) ** 2) * sig(x) * (1 - sig(x))}),
    ("x**x", {"x": 1.5}, lambda x: x**x, {"x": lambda x: x**x * (log(x) + 1)}),
    ("min(x, 2)", {"x": 1.0}, lambda x: min(x, 2), {"x": lambda x: 1.0}),
    ("max(x, 2)", {"x": 1.0}, lambda x: max(x, 2), {"x": lambda x: 0.0}),
    ("log10(x)*log2(x)", {"x": 5.0}, lambda x: math.log10(x) * math.log2(x),
     {"x": lambda x: 2 * log(x) / (x * log(2) * log(10))}),
    ("arctan(x/2)**2", {"x": 1.0}, lambda x: math.atan(x / 2) ** 2,
     {"x": lambda x: 2 * math.atan(x / 2) * 0.5 / (1 + x * x / 4)}),
    # several variables
    ("x*y + sin(x)", {"x": 1.0, "y": 2.0}, lambda x, y: x * y + sin(x),
     {"x": lambda x, y: y + cos(x), "y": lambda x, y: x}),
    ("x/y", {"x": 1.0, "y": 2.0}, lambda x, y: x / y, {"x": lambda x, y: 1 / y, "y": lambda x, y: -x / y**2}),
    ("x**y", {"x": 2.0, "y": 3.0}, lambda x, y: x**y,
     {"x": lambda x, y: y * x ** (y - 1), "y": lambda x, y: x**y * log(x)}),
    ("max(x, y) - min(x, y)", {"x": 1.0, "y": 2.5}, lambda x, y: abs(x - y),
     {"x": lambda x, y: -1.0, "y": lambda x, y: 1.0}),
    ("exp(x*y*z) + x*z**2", {"x": 0.5, "y": -1.0, "z": 2.0}, lambda x, y, z: exp(x * y * z) + x * z * z,
     {"x": lambda x, y, z: y * z * exp(x * y * z) + z * z, "y": lambda x, y, z: x * z * exp(x * y * z),
      "z": lambda x, y, z: x * y * exp(x * y * z) + 2 * x * z}),
    ("sqrt(a**2 + b**2)", {"a": 3.0, "b": 4.0}, lambda a, b: math.hypot(a, b),
     {"a": lambda a, b: a / math.hypot(a, b), "b": lambda a, b: b / math.hypot(a, b)}),
    ("log(sigmoid(w*u + b0))", {"w": 0.5, "u": 2.0, "b0": -0.3},
     lambda w, u, b0: log(sig(w * u + b0)),
     {"w": lambda w, u, b0: (1 - sig(w * u + b0)) * u, "u": lambda w, u, b0: (1 - sig(w * u + b0)) * w,
      "b0": lambda w, u, b0: 1 - sig(w * u + b0)}),
    ("softplus(x - y)*erf(y)", {"x": 0.3, "y": 0.7},
     lambda x, y: log(1 + exp(x - y)) * math.erf(y),
     {"x": lambda x, y: sig(x - y) * math.erf(y),
      "y": lambda x, y: -sig(x - y) * math.erf(y) + log(1 + exp(x - y)) * 2 / sqrt(math.pi) * exp(-y * y)}),
    ("cosh(x)**2 - sinh(x)**2 + expm1(y)*log1p(y)", {"x": 0.9, "y": 0.4},
     lambda x, y: 1 + math.expm1(y) * math.log1p(y),
     {"x": lambda x, y: 0.0, "y": lambda x, y: exp(y) * math.log1p(y) + math.expm1(y) / (1 + y)}),
]
assert len(CASES) >= 40


def _close(a, b, rel=1e-9, abs_=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def central_difference(text, point, name, h=None):
    h = h or 1e-6 * max(1.0, abs(point[name]))
    up, down = dict(point, **{name: point[name] + h}), dict(point, **{name: point[name] - h})
    return (derivatives.evaluate(text, up) - derivatives.evaluate(text, down)) / (2 * h)


@pytest.mark.parametrize("text,point,f,grads", CASES, ids=[f"{c[0]}@{c[1]}" for c in CASES])
def test_gradient_matches_closed_form_and_finite_differences(text, point, f, grads):
    result = derivatives.compute(text, point, show=True)
    assert result.finite and not result.warnings
    assert list(result.derivative) == list(grads)  # order of appearance
    assert _close(result.value, f(*point.values()))
    for name, df in grads.items():
        got = result.derivative[name]
        assert _close(got, df(*point.values())), (name, got, df(*point.values()))
        assert math.isclose(got, central_difference(text, point, name), rel_tol=1e-6, abs_tol=1e-6)
    # the printed derivative parses back (own parser) and has the same value near the point
    for name, label in zip(grads, result.shown):
        assert label == f"d/d{name}"
        printed = result.shown[label]
        language.parse(printed)
        for shift in (0.0, 0.01, -0.02):
            p = {k: v + shift for k, v in point.items()}
            if not all(math.isfinite(v) for v in (f(*p.values()), grads[name](*p.values()))):
                continue
            assert math.isclose(derivatives.evaluate(printed, p), grads[name](*p.values()), rel_tol=1e-9, abs_tol=1e-12)


# --- higher order ----------------------------------------------------------------------------

ORDER_CASES = [
    ("exp(sin(x**2))", 15.0, 2, lambda x: exp(sin(x * x)) * (4 * x * x * cos(x * x) ** 2 + 2 * cos(x * x)
                                                           - 4 * x * x * sin(x * x))),
    ("sin(x)", 0.3, 4, sin),
    ("x**5", 1.3, 3, lambda x: 60 * x * x),
    ("log(x)", 2.0, 3, lambda x: 2 / x**3),
    ("exp(2*x)", 0.1, 5, lambda x: 32 * exp(2 * x)),
    ("tanh(x)", 0.5, 2, lambda x: -2 * math.tanh(x) * (1 - math.tanh(x) ** 2)),
    ("sigmoid(x)", 0.5, 2, lambda x: sig(x) * (1 - sig(x)) * (1 - 2 * sig(x))),
    ("1/x", 2.0, 2, lambda x: 2 / x**3),
    ("erf(x)", 0.4, 2, lambda x: -4 * x / sqrt(math.pi) * exp(-x * x)),
    ("arctan(x)", 0.7, 2, lambda x: -2 * x / (1 + x * x) ** 2),
]


@pytest.mark.parametrize("text,x,order,closed", ORDER_CASES, ids=[f"{c[0]}^{c[2]}" for c in ORDER_CASES])
def test_nth_derivative(text, x, order, closed):
    result = derivatives.compute(text, {"x": x}, order=order, show=True)
    got = result.derivative["x"]
    assert _close(got, closed(x), rel=1e-9)
    lower = derivatives.compute(text, {"x": x}, order=order - 1, show=True) if order > 1 else None
    h = 1e-6 * max(1.0, abs(x))
    lo_label = "d/dx" if order == 2 else f"d^{order - 1}/dx^{order - 1}"
    fd = (derivatives.evaluate(lower.shown[lo_label], {"x": x + h})
          - derivatives.evaluate(lower.shown[lo_label], {"x": x - h})) / (2 * h)
    assert math.isclose(got, fd, rel_tol=1e-5, abs_tol=1e-6)
    printed = result.shown[f"d^{order}/dx^{order}"]
    for shift in (0.0, 0.05):
        assert math.isclose(derivatives.evaluate(printed, {"x": x + shift}), closed(x + shift), rel_tol=1e-8)


HESSIAN_CASES = [
    ("x*y + sin(x)", {"x": 1.0, "y": 2.0}, lambda x, y: [[-sin(x), 1.0], [1.0, 0.0]]),
    ("x**2*y**3", {"x": 1.5, "y": -0.5}, lambda x, y: [[2 * y**3, 6 * x * y * y], [6 * x * y * y, 6 * x * x * y]]),
    ("exp(x*y)", {"x": 0.3, "y": 0.7},
     lambda x, y: [[y * y * exp(x * y), (1 + x * y) * exp(x * y)], [(1 + x * y) * exp(x * y), x * x * exp(x * y)]]),
    ("log(x + 2*y + 3*z)", {"x": 1.0, "y": 1.0, "z": 1.0},
     lambda x, y, z: [[-a * b / (x + 2 * y + 3 * z) ** 2 for b in (1, 2, 3)] for a in (1, 2, 3)]),
    ("sin(x)*cos(y)", {"x": 0.4, "y": 1.1},
     lambda x, y: [[-sin(x) * cos(y), -cos(x) * sin(y)], [-cos(x) * sin(y), -sin(x) * cos(y)]]),
]


@pytest.mark.parametrize("text,point,closed", HESSIAN_CASES, ids=[c[0] for c in HESSIAN_CASES])
def test_hessian(text, point, closed):
    result = derivatives.compute(text, point, hessian=True, show=True)
    names = list(point)
    assert result.wrt == names
    want = closed(*point.values())
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            got = result.hessian[i][j]
            assert _close(got, want[i][j]), (a, b, got, want[i][j])
            # finite differences of the printed first derivative
            d_a = result.shown[f"d/d{a}"]
            h = 1e-5
            fd = (derivatives.evaluate(d_a, dict(point, **{b: point[b] + h}))
                  - derivatives.evaluate(d_a, dict(point, **{b: point[b] - h}))) / (2 * h)
            assert math.isclose(got, fd, rel_tol=1e-6, abs_tol=1e-7)
            label = f"d^2/d{a}^2" if a == b else f"d^2/d{a}d{b}"
            assert math.isclose(derivatives.evaluate(result.shown[label], point), want[i][j], rel_tol=1e-9,
                                abs_tol=1e-12)


def test_high_orders_big_graphs_and_their_limits():
    result = derivatives.compute("tanh(x*sigmoid(x))/log1p(x**2)", {"x": 1.0}, order=4)
    h = 1e-4
    third = [derivatives.compute("tanh(x*sigmoid(x))/log1p(x**2)", {"x": 1.0 + s}, order=3).derivative["x"]
             for s in (h, -h)]
    assert math.isclose(result.derivative["x"], (third[0] - third[1]) / (2 * h), rel_tol=1e-6)
    shown = derivatives.compute("exp(sin(x**2))", {"x": 1.0}, order=5, show=True).shown["d^5/dx^5"]
    assert shown.startswith("(not shown: ")
    r = run("exp(sin(x**2))", "--at", "1", "--order", "7")
    assert r.exit_code == 2 and "too large to differentiate further" in r.stderr


def test_ops_with_more_than_32_operands_still_run():
    # the rewrites merge this sum into one 40-input Add, more than numpy ufuncs (py linker) take
    text = "+".join(f"sin(x+{k})" for k in range(1, 41))
    result = derivatives.compute(text, {"x": 0.5}, show=True)
    assert _close(result.derivative["x"], sum(cos(0.5 + k) for k in range(1, 41)))
    assert result.shown["d/dx"].startswith("cos(x + 1) + cos(x + 2) + ")
    assert _close(derivatives.evaluate(result.shown["d/dx"], {"x": 0.5}), result.derivative["x"])


def test_constant_and_zero_derivatives():
    assert derivatives.compute("3*x", ["1"], show=True).shown == {"d/dx": "3"}
    assert derivatives.compute("x - x + 2", ["1"], show=True).shown == {"d/dx": "0"}
    result = derivatives.compute("eq(x, 1) + where(x, 1, 2)*x + sign(x)", ["1"])
    assert result.derivative == {"x": 1.0} and result.value == 3.0


def test_partial_nth_derivative_with_wrt():
    result = derivatives.compute("x**3*y", {"x": 2.0, "y": 5.0}, wrt=["x"], order=2)
    assert result.derivative == {"x": 6 * 2.0 * 5.0}


def test_tutorial_show_is_readable():
    result = derivatives.compute("exp(sin(x**2))", ["15"], show=True)
    assert result.shown == {"d/dx": "2*x*cos(x**2)*exp(sin(x**2))"}
    assert derivatives.compute("x*y + sin(x)", {"x": 1, "y": 2}, show=True).shown == {
        "d/dx": "y + cos(x)", "d/dy": "x"}


def test_float64_even_when_floatx_is_float32():
    import pytensor

    with pytensor.config.change_flags(floatX="float32"):
        result = derivatives.compute("exp(sin(x**2)) + 0*x", ["15"])
    assert repr(result.derivative["x"]) == TUTORIAL
