"""`nncli grad`: the expression language, its derivatives and the command.

Derivatives are checked against closed forms written here with ``math`` and
against central finite differences of the compiled value; printed (--show)
derivatives are parsed back with nncli's own parser (never ``eval``) and
evaluated at several points.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import nncli_executable
from nncli import expr, gradcalc
from nncli.cli import main
from nncli.errors import ConfigError

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
    return (gradcalc.evaluate(text, up) - gradcalc.evaluate(text, down)) / (2 * h)


@pytest.mark.parametrize("text,point,f,grads", CASES, ids=[f"{c[0]}@{c[1]}" for c in CASES])
def test_gradient_matches_closed_form_and_finite_differences(text, point, f, grads):
    result = gradcalc.compute(text, point, show=True)
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
        expr.parse(printed)
        for shift in (0.0, 0.01, -0.02):
            p = {k: v + shift for k, v in point.items()}
            if not all(math.isfinite(v) for v in (f(*p.values()), grads[name](*p.values()))):
                continue
            assert math.isclose(gradcalc.evaluate(printed, p), grads[name](*p.values()), rel_tol=1e-9, abs_tol=1e-12)


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
    result = gradcalc.compute(text, {"x": x}, order=order, show=True)
    got = result.derivative["x"]
    assert _close(got, closed(x), rel=1e-9)
    lower = gradcalc.compute(text, {"x": x}, order=order - 1, show=True) if order > 1 else None
    h = 1e-6 * max(1.0, abs(x))
    lo_label = "d/dx" if order == 2 else f"d^{order - 1}/dx^{order - 1}"
    fd = (gradcalc.evaluate(lower.shown[lo_label], {"x": x + h})
          - gradcalc.evaluate(lower.shown[lo_label], {"x": x - h})) / (2 * h)
    assert math.isclose(got, fd, rel_tol=1e-5, abs_tol=1e-6)
    printed = result.shown[f"d^{order}/dx^{order}"]
    for shift in (0.0, 0.05):
        assert math.isclose(gradcalc.evaluate(printed, {"x": x + shift}), closed(x + shift), rel_tol=1e-8)


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
    result = gradcalc.compute(text, point, hessian=True, show=True)
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
            fd = (gradcalc.evaluate(d_a, dict(point, **{b: point[b] + h}))
                  - gradcalc.evaluate(d_a, dict(point, **{b: point[b] - h}))) / (2 * h)
            assert math.isclose(got, fd, rel_tol=1e-6, abs_tol=1e-7)
            label = f"d^2/d{a}^2" if a == b else f"d^2/d{a}d{b}"
            assert math.isclose(gradcalc.evaluate(result.shown[label], point), want[i][j], rel_tol=1e-9,
                                abs_tol=1e-12)


def test_high_orders_big_graphs_and_their_limits():
    result = gradcalc.compute("tanh(x*sigmoid(x))/log1p(x**2)", {"x": 1.0}, order=4)
    h = 1e-4
    third = [gradcalc.compute("tanh(x*sigmoid(x))/log1p(x**2)", {"x": 1.0 + s}, order=3).derivative["x"]
             for s in (h, -h)]
    assert math.isclose(result.derivative["x"], (third[0] - third[1]) / (2 * h), rel_tol=1e-6)
    shown = gradcalc.compute("exp(sin(x**2))", {"x": 1.0}, order=5, show=True).shown["d^5/dx^5"]
    assert shown.startswith("(not shown: ")
    r = run("exp(sin(x**2))", "--at", "1", "--order", "7")
    assert r.exit_code == 2 and "too large to differentiate further" in r.stderr


def test_ops_with_more_than_32_operands_still_run():
    # the rewrites merge this sum into one 40-input Add, more than numpy ufuncs (py linker) take
    text = "+".join(f"sin(x+{k})" for k in range(1, 41))
    result = gradcalc.compute(text, {"x": 0.5}, show=True)
    assert _close(result.derivative["x"], sum(cos(0.5 + k) for k in range(1, 41)))
    assert result.shown["d/dx"].startswith("cos(x + 1) + cos(x + 2) + ")
    assert _close(gradcalc.evaluate(result.shown["d/dx"], {"x": 0.5}), result.derivative["x"])


def test_constant_and_zero_derivatives():
    assert gradcalc.compute("3*x", ["1"], show=True).shown == {"d/dx": "3"}
    assert gradcalc.compute("x - x + 2", ["1"], show=True).shown == {"d/dx": "0"}
    result = gradcalc.compute("eq(x, 1) + where(x, 1, 2)*x + sign(x)", ["1"])
    assert result.derivative == {"x": 1.0} and result.value == 3.0


def test_partial_nth_derivative_with_wrt():
    result = gradcalc.compute("x**3*y", {"x": 2.0, "y": 5.0}, wrt=["x"], order=2)
    assert result.derivative == {"x": 6 * 2.0 * 5.0}


# --- the language ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,point,want", [
    ("-x**2", {"x": 3}, -9.0),
    ("2**3**2", {"x": 0}, 512.0),
    ("x - 1 - 2", {"x": 10}, 7.0),
    ("x/2/5", {"x": 10}, 1.0),
    ("-2*x + +x", {"x": 4}, -4.0),
    ("1.5e-3*x + .5 + 5. + 2E2", {"x": 1000}, 207.0),
    ("(x + 1)*(x - 1)", {"x": 3}, 8.0),
    ("pi + e + x*0", {"x": 1}, math.pi + math.e),
    ("min(x, 3) + max(x, 3)", {"x": 1}, 4.0),
    ("sign(x) + eq(x, 2) + where(x - 2, 10, 20)", {"x": 2}, 1 + 1 + 20),
    ("  sin(x)  ", {"x": 0.5}, sin(0.5)),
])
def test_language_semantics(text, point, want):
    assert math.isclose(gradcalc.evaluate(text, point), want, rel_tol=1e-12)


def test_variables_in_order_of_appearance():
    assert expr.variables(expr.parse("z*sin(a) + b*z + a")) == ["z", "a", "b"]


@pytest.mark.parametrize("text", ["-x**2", "(-x)**2", "x**-2", "a - (b - c)", "a/(b*c)", "(a + b)*c",
                                  "-(a + b)", "2**3**2", "(2**3)**2", "-a*b", "a*-b", "exp(-x**2/2)"])
def test_unparse_round_trip(text):
    tree = expr.parse(text)
    again = expr.parse(expr.unparse(tree))
    assert again == tree
    point = {"a": 1.3, "b": -0.7, "c": 2.1, "x": 0.9}
    simplified = expr.unparse(expr.simplify(tree))
    assert math.isclose(gradcalc.evaluate(simplified, point), gradcalc.evaluate(text, point), rel_tol=1e-12)


def test_tutorial_show_is_readable():
    result = gradcalc.compute("exp(sin(x**2))", ["15"], show=True)
    assert result.shown == {"d/dx": "2*x*cos(x**2)*exp(sin(x**2))"}
    assert gradcalc.compute("x*y + sin(x)", {"x": 1, "y": 2}, show=True).shown == {
        "d/dx": "y + cos(x)", "d/dy": "x"}


def test_float64_even_when_floatx_is_float32():
    import pytensor

    with pytensor.config.change_flags(floatX="float32"):
        result = gradcalc.compute("exp(sin(x**2)) + 0*x", ["15"])
    assert repr(result.derivative["x"]) == TUTORIAL


# --- the command ----------------------------------------------------------------------------

def test_cli_tutorial_value_exactly():
    r = run("exp(sin(x**2))", "--at", "15")
    assert r.exit_code == 0, r.output
    assert r.stdout == TUTORIAL + "\n"
    assert r.stderr == ""


def test_cli_several_variables_both_spellings_and_wrt():
    a = run("x*y + sin(x)", "--at", "x=1", "--at", "y=2")
    b = run("x*y + sin(x)", "--at", "x=1,y=2")
    assert a.exit_code == b.exit_code == 0
    assert a.stdout == b.stdout == f"x {2 + cos(1.0)!r}\ny 1.0\n"
    c = run("x*y + sin(x)", "--at", "x=1,y=2", "--wrt", "y")
    assert c.stdout == "1.0\n"


def test_cli_show_value_order_hessian():
    r = run("exp(sin(x**2))", "--at", "15", "--show", "--value")
    assert r.exit_code == 0
    assert r.stdout.splitlines() == [f"value {exp(sin(225.0))!r}", TUTORIAL,
                                     "d/dx = 2*x*cos(x**2)*exp(sin(x**2))"]
    r = run("log(x)", "--at", "2", "--order", "3")
    assert r.exit_code == 0 and float(r.stdout) == 0.25
    r = run("x*y + sin(x)", "--at", "x=1,y=2", "--hessian")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[2] == "hessian:"
    assert lines[3] == f"x {-sin(1.0)!r} 1.0" and lines[4] == "y 1.0 0.0"


def test_cli_expression_starting_with_minus_and_negative_point():
    r = run("-x**2", "--at", "-3")
    assert r.exit_code == 0, r.output
    assert r.stdout == "6.0\n"


def test_cli_json():
    r = run("x*y + sin(x)", "--at", "x=1,y=2", "--json", "--hessian", "--show")
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data["point"] == {"x": 1.0, "y": 2.0}
    assert data["value"] == 2 + sin(1.0)
    assert data["gradient"] == {"x": 2 + cos(1.0), "y": 1.0}
    assert data["hessian"] == [[-sin(1.0), 1.0], [1.0, 0.0]]
    assert data["show"]["d/dx"] == "y + cos(x)"
    assert data["finite"] is True and data["warnings"] == []
    r = run("exp(x)", "--at", "1", "--order", "2", "--json")
    data = json.loads(r.stdout)
    assert data["order"] == 2 and data["derivative"] == {"x": math.e}


@pytest.mark.parametrize("text,at,printed,operation", [
    ("log(x)", "0", "inf", "log(0.0)"),
    ("sqrt(x)", "-1", "nan", "sqrt(-1.0)"),
    ("sqrt(x)", "0", "inf", "sqrt(0.0)"),
    ("x + 1/y", "x=1,y=0", "x 1.0\ny -inf", "1.0 / 0.0"),
])
def test_non_finite_prints_value_warns_and_exits_1(text, at, printed, operation):
    r = run(text, "--at", at)
    assert r.exit_code == 1
    assert r.stdout == printed + "\n"
    assert r.stderr.startswith("Warning: ") and operation in r.stderr
    assert "Traceback" not in r.stderr
    result = gradcalc.compute(text, [at])
    assert not result.finite and result.warnings


def test_non_finite_json_is_strict_json():
    r = run("log(x)", "--at", "0", "--json")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["value"] == "-inf" and data["gradient"] == {"x": "inf"} and data["finite"] is False


BAD = [
    # (args, fragment of the message)
    (["x +* y", "--at", "x=1,y=2"], "syntax error in expression at column 4"),
    (["sinn(x)", "--at", "1"], "unknown function 'sinn' at column 1: 'sinn(x)' (caret: '^'); did you mean 'sin'?"),
    (["lgo(x)", "--at", "1"], "did you mean 'log'?"),
    (["x*y", "--at", "x=1"], "variable 'y' has no value"),
    (["x*y"], "variable 'x' has no value"),
    (["sin(x)", "--at", "abc"], "'abc' is not a number"),
    (["sin(x)", "--at", "x=nan"], "'nan' is not a number"),
    (["sin(x)", "--at", "x=1e999"], "too large"),
    (["x*y", "--at", "x=1,y=2", "--order", "2"], "--order 2 needs one variable"),
    (["", "--at", "1"], "empty expression"),
    (["   ", "--at", "1"], "empty expression"),
    (["x" + "+x" * 600, "--at", "1"], "expression too long: 1201 characters (the limit is 1000)"),
    (["(" * 80 + "x" + ")" * 80, "--at", "1"], "nested too deeply"),
    (["-" * 200 + "x", "--at", "1"], "nested too deeply"),
    (["sin(" * 60 + "x" + ")" * 60, "--at", "1"], "nested too deeply"),
    (["__import__('os').system('touch SENTINEL')"], "attribute access is not part of the expression language"),
    (["__import__('os')"], "unknown function '__import__'"),
    (["x.__class__", "--at", "1"], "attribute access is not part of the expression language at column 2"),
    (["open('SENTINEL', 'w')"], "unknown function 'open'"),
    (["exec('open(1)')"], "unknown function 'exec'"),
    (["lambda: open('SENTINEL', 'w')"], "lambda is not part of the expression language"),
    (["[open('SENTINEL', 'w') for x in y]"], "a comprehension is not part of the expression language"),
    (["x[0]", "--at", "1"], "subscripting is not part of the expression language"),
    (["'abc'"], "a string is not part of the expression language"),
    (["x if x else 1", "--at", "1"], "if/else is not part of"),
    (["x // 2", "--at", "1"], "operator is not part of"),
    (["0x1f*x", "--at", "1"], "'0x1f' is not a number of the expression language"),
    (["sin(x, x)", "--at", "1"], "sin() takes 1 argument (got 2)"),
    (["max(x)", "--at", "1"], "max() takes 2 arguments (got 1)"),
    (["sin + x", "--at", "1"], "'sin' is a function: call it as sin(...)"),
    (["sin(x)", "--at", "y=1"], "the expression has no variable 'y'"),
    (["sin(x)", "--at", "x=1", "--at", "x=2"], "'x' is given twice"),
    (["sin(x)*y", "--at", "1"], "give each value with its name"),
    (["sin(x)", "--at", "1", "--wrt", "z"], "--wrt z: the expression has no variable 'z'"),
    (["sin(x)", "--at", "1", "--order", "2", "--hessian"], "alternatives"),
    (["sin(x)", "--at", "1", "--order", "99"], "--order 99: must be between 1 and 10"),
    (["sin(pi)"], "has no variables"),
    (["x\n+1", "--at", "1"], "control characters"),
    (["sin(x)", "--at", "1", "--range", "0:1"], "--range is only used with --plot"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[repr(b[0][0])[:40] for b in BAD])
def test_bad_input_one_line_exit_2_nothing_runs(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(*args)
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert message in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []  # no SENTINEL, nothing written


def test_library_raises_config_error_without_running_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ["__import__('os').system('touch SENTINEL')", "open('SENTINEL', 'w').write('x')",
                 "(lambda: __import__('os').system('touch SENTINEL'))()",
                 "[__import__('os').system('touch SENTINEL') for _ in '1']",
                 "getattr(__import__('os'), 'system')('touch SENTINEL')"]:
        with pytest.raises(ConfigError):
            expr.parse(text)
    assert not (tmp_path / "SENTINEL").exists()


# --- plotting ------------------------------------------------------------------------------------

def test_plot_writes_png_atomically(tmp_path):
    out = tmp_path / "out.png"
    r = run("exp(sin(x**2))", "--at", "1", "--plot", str(out), "--range", "-2:2")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == repr(2 * cos(1.0) * exp(sin(1.0)))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    r = run("x*y", "--at", "x=1,y=2", "--wrt", "x", "--order", "2", "--plot", str(out))
    assert r.exit_code == 0, r.output


def test_plot_errors(tmp_path, monkeypatch):
    r = run("x*y", "--at", "x=1,y=2", "--plot", str(tmp_path / "p.png"))
    assert r.exit_code == 2 and "--plot draws one variable" in r.stderr
    r = run("sin(x)", "--at", "1", "--plot", str(tmp_path / "p.png"), "--range", "3:1")
    assert r.exit_code == 2 and "the start must be below the end" in r.stderr
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    r = run("sin(x)", "--at", "1", "--plot", str(tmp_path / "p.png"))
    assert r.exit_code == 1
    assert "pip install 'nncli[plot]'" in r.stderr and len(r.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# --- a real process ---------------------------------------------------------------------------------

def test_subprocess_entry_point(tmp_path):
    exe = nncli_executable()
    ok = subprocess.run([exe, "grad", "exp(sin(x**2))", "--at", "15"], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == TUTORIAL + "\n" and ok.stderr == ""
    bad = subprocess.run([exe, "grad", "__import__('os').system('touch SENTINEL')"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stdout == "" and len(bad.stderr.splitlines()) == 1 and "Traceback" not in bad.stderr
    assert not (tmp_path / "SENTINEL").exists()
    nan = subprocess.run([exe, "grad", "sqrt(x)", "--at", "-1"], capture_output=True, text=True, timeout=60)
    assert nan.returncode == 1 and nan.stdout == "nan\n" and "sqrt(-1.0)" in nan.stderr


def test_importing_the_cli_does_not_import_pytensor():
    code = "import sys, nncli.cli; print('pytensor' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ))
    assert out.stdout.strip() == "False"


# --- evaluation through the C library's math functions (nncli.libm) ---------------------------

@pytest.mark.parametrize("name, fn, lo, hi", [
    ("exp", math.exp, -20, 20), ("log", math.log, 1e-3, 1e3), ("sin", math.sin, -300, 300),
    ("cos", math.cos, -300, 300), ("tan", math.tan, -3, 3), ("tanh", math.tanh, -5, 5),
    ("sqrt", math.sqrt, 0, 1e4), ("erf", math.erf, -3, 3), ("log1p", math.log1p, 0, 10),
])
def test_transcendental_functions_are_evaluated_by_libm(name, fn, lo, hi):
    """Bit-equal to Python's math (the platform libm) at many points, whatever numpy's SIMD loops give."""
    rng = np.random.default_rng(len(name))
    for x in rng.uniform(lo, hi, 40):
        got = gradcalc.evaluate(f"{name}(x)", {"x": float(x)})
        assert got == fn(float(x)), (name, x)


def test_libm_domain_errors_fall_back_to_numpy_semantics():
    assert math.isnan(gradcalc.evaluate("sqrt(x)", {"x": -1.0}))
    assert gradcalc.evaluate("log(x)", {"x": 0.0}) == -math.inf
    assert gradcalc.evaluate("exp(x)", {"x": 1000.0}) == math.inf
