"""`nncli grad`, the command: what it prints, its options, one-line errors for bad input, --plot,
a real process, and a CLI that imports no PyTensor."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from support import nncli_executable
from nncli.cli import main

TUTORIAL = "4.347404090286685"

sin, cos, exp = math.sin, math.cos, math.exp


def run(*args):
    return CliRunner().invoke(main, ["grad", *args])


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
