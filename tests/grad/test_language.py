"""`nncli grad`'s expression language (nncli.grad.language): semantics, variables, printing
that parses back, and the whitelist (nothing outside it ever runs)."""

from __future__ import annotations

import math

import pytest

from nncli.errors import ConfigError
from nncli.grad import derivatives, language

sin = math.sin


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
    assert math.isclose(derivatives.evaluate(text, point), want, rel_tol=1e-12)


def test_variables_in_order_of_appearance():
    assert language.variables(language.parse("z*sin(a) + b*z + a")) == ["z", "a", "b"]


@pytest.mark.parametrize("text", ["-x**2", "(-x)**2", "x**-2", "a - (b - c)", "a/(b*c)", "(a + b)*c",
                                  "-(a + b)", "2**3**2", "(2**3)**2", "-a*b", "a*-b", "exp(-x**2/2)"])
def test_unparse_round_trip(text):
    tree = language.parse(text)
    again = language.parse(language.unparse(tree))
    assert again == tree
    point = {"a": 1.3, "b": -0.7, "c": 2.1, "x": 0.9}
    simplified = language.unparse(language.simplify(tree))
    assert math.isclose(derivatives.evaluate(simplified, point), derivatives.evaluate(text, point), rel_tol=1e-12)


def test_library_raises_config_error_without_running_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ["__import__('os').system('touch SENTINEL')", "open('SENTINEL', 'w').write('x')",
                 "(lambda: __import__('os').system('touch SENTINEL'))()",
                 "[__import__('os').system('touch SENTINEL') for _ in '1']",
                 "getattr(__import__('os'), 'system')('touch SENTINEL')"]:
        with pytest.raises(ConfigError):
            language.parse(text)
    assert not (tmp_path / "SENTINEL").exists()
