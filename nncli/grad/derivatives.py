"""Derivatives of an expression at a point: the library behind `nncli grad`.

``compute("exp(sin(x**2))", ["15"])`` parses the expression (``nncli.grad.language``),
builds its float64 PyTensor graph, differentiates it with ``pytensor.grad``
(gradient, Hessian or an N-th derivative), compiles one function
(``nncli.grad.compiling``: the py linker, the quickest to start) and calls
it once. The result carries the numbers, optionally the rewritten derivative
as readable text, and a ``warnings`` list when something is not finite
(``nncli.grad.diagnose``). The compiled graph is run by
``nncli.grad.libm.evaluate``: exp, sin, log, ... through the C library's math functions rather than
numpy's SIMD loops, which can be an ulp off on some CPUs.

``plot`` draws f and its derivative along one variable (matplotlib through ``nncli.plot``).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

from nncli import fileio
from nncli import plot as plot_mod
from nncli.errors import ConfigError
from nncli.grad import compiling, diagnose, language, libm

MAX_ORDER = 10
# --hessian differentiates each of the n first derivatives again: n*n entries, each a graph of the
# expression's size. 16 variables (256 entries) stay within seconds; 128 took 92 s.
MAX_HESSIAN_VARIABLES = 16
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


# Graphs up to this many operations get PyTensor's rewrites (simpler, more stable, printable);
# bigger ones (high orders) are run as built, which compiles much faster.
REWRITE_LIMIT = 400
# Refuse to differentiate a graph bigger than this: each further order multiplies it.
SIZE_LIMIT = 1500


@dataclass
class GradResult:
    expression: str
    variables: list          # every variable, in order of appearance
    point: dict              # name -> value
    wrt: list                # the variables differentiated, in order of appearance
    order: int
    value: float             # f at the point
    derivative: dict         # name -> first (or order-th) derivative
    hessian: list | None = None           # rows/columns in the order of ``wrt``
    shown: dict = field(default_factory=dict)  # label ("d/dx") -> derivative as text
    warnings: list = field(default_factory=list)

    @property
    def finite(self) -> bool:
        numbers = [self.value, *self.derivative.values()]
        numbers += [v for row in self.hessian or [] for v in row]
        return all(math.isfinite(v) for v in numbers)

    def to_dict(self) -> dict:
        """A JSON-ready dict; a non-finite number becomes the string "inf", "-inf" or "nan"."""
        out = {"expression": self.expression, "point": {k: _json(v) for k, v in self.point.items()},
               "wrt": list(self.wrt), "value": _json(self.value)}
        if self.order == 1:
            out["gradient"] = {k: _json(v) for k, v in self.derivative.items()}
        else:
            out["order"] = self.order
            out["derivative"] = {k: _json(v) for k, v in self.derivative.items()}
        if self.hessian is not None:
            out["hessian"] = [[_json(v) for v in row] for row in self.hessian]
        if self.shown:
            out["show"] = dict(self.shown)
        out["finite"] = self.finite
        out["warnings"] = list(self.warnings)
        return out


def _json(v: float):
    return v if math.isfinite(v) else repr(v)


# --- the point and the variables ---------------------------------------------------------

def parse_number(text: str, what: str) -> float:
    t = text.strip()
    if not _NUMBER.fullmatch(t):
        raise ConfigError(f"{what}: {text.strip()!r} is not a number (e.g. 1.5, -2, 3e-4)")
    value = float(t)
    if not math.isfinite(value):
        raise ConfigError(f"{what}: {text.strip()!r} is too large")
    return value


def parse_point(at, names: list) -> dict:
    """``--at`` values (``15``, ``x=1``, ``x=1,y=2``) -> {name: value} for exactly ``names``."""
    pieces = [p for item in at for p in item.split(",")]
    point: dict = {}
    for piece in pieces:
        if "=" not in piece:
            if len(pieces) != 1 or len(names) != 1:
                raise ConfigError(f"--at {piece!r}: give each value with its name, e.g. "
                                  f"--at {','.join(n + '=1' for n in names)}")
            point[names[0]] = parse_number(piece, "--at")
            continue
        name, _, text = piece.partition("=")
        name = name.strip()
        if name not in names:
            if name in language.CONSTANTS:
                raise ConfigError(f"--at {piece}: '{name}' is a constant, not a variable")
            raise ConfigError(f"--at {piece}: the expression has no variable '{name}'"
                              f"{language.suggest(name, names)} (variables: {', '.join(names)})")
        if name in point:
            raise ConfigError(f"--at {piece}: '{name}' is given twice")
        point[name] = parse_number(text, f"--at {name}")
    for name in names:
        if name not in point:
            raise ConfigError(f"variable '{name}' has no value: give it with --at {name}=VALUE")
    return point


def parse_wrt(wrt, names: list) -> list:
    if not wrt:
        return list(names)
    chosen = {p.strip() for item in wrt for p in item.split(",") if p.strip()}
    for name in chosen:
        if name not in names:
            raise ConfigError(f"--wrt {name}: the expression has no variable '{name}'"
                              f"{language.suggest(name, names)} (variables: {', '.join(names)})")
    return [n for n in names if n in chosen]


# --- compiling --------------------------------------------------------------------------

def _label(wrt, order, i=None, j=None):
    if i is not None:
        a, b = wrt[i], wrt[j]
        return f"d^2/d{a}^2" if a == b else f"d^2/d{a}d{b}"
    return f"d/d{wrt[0]}" if order == 1 else f"d^{order}/d{wrt[0]}^{order}"


@functools.lru_cache(maxsize=256)
def _compiled(text: str, wrt: tuple, order: int, hessian: bool):
    """(function, variable names, labels, derivative graphs to print) for one question."""
    import pytensor
    import pytensor.tensor as pt

    tree = language.parse(text)
    names = language.variables(tree)
    inputs = {n: pt.scalar(n, dtype="float64") for n in names}
    f = language.to_pytensor(tree, inputs)
    xs = [inputs[n] for n in wrt]

    def grad(cost, wrt_vars, step):
        size = compiling.graph_size(inputs.values(), [cost])
        if size > SIZE_LIMIT:
            raise ConfigError(f"the derivative graph is too large to differentiate further ({size} "
                              f"operations before derivative {step}); ask for a lower order or a "
                              "smaller expression")
        with compiling.quiet():
            return pytensor.grad(cost, wrt_vars, disconnected_inputs="ignore", return_disconnected="zero")

    if hessian:
        first = grad(f, xs, 1)
        derivs = first + [g for gi in first for g in grad(gi, xs, 2)]
        labels = [_label([n], 1) for n in wrt]
        labels += [_label(wrt, 2, i, j) for i in range(len(xs)) for j in range(len(xs))]
    elif order == 1:
        derivs = grad(f, xs, 1)
        labels = [_label([n], 1) for n in wrt]
    else:
        g = f
        for step in range(1, order + 1):
            g = grad(g, xs, step)[0]
        derivs, labels = [g], [_label(wrt, order)]
    ins, outs = [inputs[n] for n in names], [f, *derivs]
    fn, graphs = compiling.compile_graph(ins, outs, rewrite=compiling.graph_size(ins, outs) <= REWRITE_LIMIT)
    return fn, names, labels, graphs[1:]


SHOW_LIMIT = 3000


def _show(graph) -> str:
    """The derivative as text in the expression language, or a note when it is too big to read."""
    try:
        tree = language.from_pytensor(graph)
        size = language.tree_size(tree)
        if size > SHOW_LIMIT:
            return f"(not shown: {size} operations when written out)"
        return language.unparse(language.simplify(tree))
    except RecursionError:
        return "(not shown: nested too deeply to write out)"


# --- the public entry point ----------------------------------------------------------------

def compute(text: str, at=(), wrt=(), order: int = 1, hessian: bool = False,
            show: bool = False) -> GradResult:
    """The derivative(s) of ``text`` at the point given by ``at`` (``--at`` strings or a dict)."""
    import numpy as np

    tree = language.parse(text)
    names = language.variables(tree)
    if not names:
        raise ConfigError(f"the expression {text.strip()!r} has no variables to differentiate")
    if isinstance(at, dict):
        at = [f"{k}={v!r}" for k, v in at.items()]
    point = parse_point(at, names)
    chosen = parse_wrt(wrt, names)
    if not 1 <= order <= MAX_ORDER:
        raise ConfigError(f"--order {order}: must be between 1 and {MAX_ORDER}")
    if hessian and order != 1:
        raise ConfigError("--hessian and --order are alternatives: give one of them")
    if hessian and len(chosen) > MAX_HESSIAN_VARIABLES:
        raise ConfigError(f"--hessian of {len(chosen)} variables: at most {MAX_HESSIAN_VARIABLES} (its "
                          f"{len(chosen) ** 2} entries take time quadratic in the variables); choose "
                          "some with --wrt")
    if order > 1 and len(chosen) != 1:
        raise ConfigError(f"--order {order} needs one variable, the expression has {', '.join(chosen)}: "
                          "choose one with --wrt")
    fn, names, labels, graphs = _compiled(text, tuple(chosen), order, hessian)
    with np.errstate(all="ignore"):
        outs = [float(v) for v in libm.evaluate(fn, *[point[n] for n in names])]
    value, derivs = outs[0], outs[1:]
    n = len(chosen)
    result = GradResult(expression=text.strip(), variables=names, point=point, wrt=chosen, order=order,
                        value=value, derivative=dict(zip(chosen, derivs[:n])))
    if hessian:
        result.hessian = [derivs[n + i * n: n + (i + 1) * n] for i in range(n)]
    if show:
        result.shown = {label: _show(g) for label, g in zip(labels, graphs)}
    if not result.finite:
        result.warnings = diagnose.diagnose(tree, point, 2 if hessian else order)
    return result


@functools.lru_cache(maxsize=256)
def _value_function(text: str):
    import pytensor.tensor as pt

    tree = language.parse(text)
    names = language.variables(tree)
    inputs = {n: pt.scalar(n, dtype="float64") for n in names}
    fn = compiling.function(list(inputs.values()), language.to_pytensor(tree, inputs))
    return fn, names


def evaluate(text: str, point: dict) -> float:
    """f at ``point`` (a dict that may hold extra names); for checking printed derivatives."""
    import numpy as np

    fn, names = _value_function(text)
    missing = [n for n in names if n not in point]
    if missing:
        raise ConfigError(f"variable '{missing[0]}' has no value")
    with np.errstate(all="ignore"):
        return float(libm.evaluate(fn, *[float(point[n]) for n in names])[0])


# --- plotting -------------------------------------------------------------------------------

def parse_range(text: str | None, centre: float) -> tuple:
    if text is None:
        return centre - 3.0, centre + 3.0
    lo, sep, hi = text.partition(":")
    if not sep:
        raise ConfigError(f"--range {text!r}: expected a:b, e.g. --range -3:3")
    a, b = parse_number(lo, "--range"), parse_number(hi, "--range")
    if not a < b:
        raise ConfigError(f"--range {text!r}: the start must be below the end")
    return a, b


def plot(text: str, result: GradResult, path, span: str | None = None, points: int = 400) -> str:
    """Plot f and its derivative along the one ``wrt`` variable; write a PNG atomically
    (`path`: a file name or a checked :class:`nncli.fileio.OutputTarget`)."""
    import numpy as np

    if len(result.wrt) != 1:
        raise ConfigError(f"--plot draws one variable, the expression has {', '.join(result.wrt)}: "
                          "choose one with --wrt")
    name = result.wrt[0]
    lo, hi = parse_range(span, result.point[name])
    fig = plot_mod.new_figure("--plot", figsize=(7, 4.5))
    target = fileio.output_target(path, picture=True, what="picture")
    fn = _vector_function(text, name, result.order)
    xs = np.linspace(lo, hi, points)
    others = [result.point[n] for n in result.variables if n != name]
    with np.errstate(all="ignore"):
        fx, dfx = (np.asarray(v, dtype=float) for v in fn(xs, *others))
    ax = fig.add_subplot()
    label = "f'" if result.order == 1 else f"d^{result.order}f/d{name}^{result.order}"
    ax.plot(xs, fx, label=f"f = {result.expression}")
    ax.plot(xs, dfx, label=label if result.order > 1 else f"df/d{name}")
    p = result.point[name]
    if lo <= p <= hi:
        ax.axvline(p, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel(name)
    ax.legend()
    ax.grid(alpha=0.3)
    plot_mod.save_png(fig, target, dpi=100)
    return target.path


@functools.lru_cache(maxsize=32)
def _vector_function(text: str, name: str, order: int):
    import pytensor
    import pytensor.tensor as pt

    tree = language.parse(text)
    names = language.variables(tree)
    inputs = {n: (pt.vector(n, dtype="float64") if n == name else pt.scalar(n, dtype="float64"))
              for n in names}
    f = language.to_pytensor(tree, inputs)
    f = f + pt.zeros_like(inputs[name])  # a constant f still gives one value per x
    g = f
    for _ in range(order):
        g = pytensor.grad(g.sum(), inputs[name], disconnected_inputs="ignore", return_disconnected="zero")
    ins = [inputs[name]] + [inputs[n] for n in names if n != name]
    return compiling.function(ins, [f, g], rewrite=compiling.graph_size(ins, [f, g]) <= REWRITE_LIMIT)
