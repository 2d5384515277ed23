"""A non-finite result of `nncli grad` (nncli.grad.diagnose): the value is printed, a warning names
the operation that made it inf or nan, the exit code is 1, and --json stays strict JSON."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nncli.cli import main
from nncli.grad import derivatives


def run(*args):
    return CliRunner().invoke(main, ["grad", *args])


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
    result = derivatives.compute(text, [at])
    assert not result.finite and result.warnings


def test_non_finite_json_is_strict_json():
    r = run("log(x)", "--at", "0", "--json")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["value"] == "-inf" and data["gradient"] == {"x": "inf"} and data["finite"] is False
