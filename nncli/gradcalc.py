"""Derivatives of an expression at a point: the library behind `nncli grad`.

``compute("exp(sin(x**2))", ["15"])`` parses the expression (``nncli.expr``),
builds its float64 PyTensor graph, differentiates it with ``pytensor.grad``
(gradient, Hessian or an N-th derivative), compiles one function and calls
it once. The result carries the numbers, optionally the rewritten derivative
as readable text, and a ``warnings`` list when something is not finite.

Speed: a one-off evaluation should not wait for a C compiler. Functions are
compiled per call (never through ``pytensor.config``) with the pure-Python
linker and the graph rewrites minus fusion/inplace, which is the quickest to
start (see bench/bench_grad.py) and leaves a tidy graph to print. The compiled graph is run by
``nncli.libm.evaluate``: exp, sin, log, ... through the C library's math functions rather than
numpy's SIMD loops, which can be an ulp off on some CPUs.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import warnings
from dataclasses import dataclass, field

from nncli import expr, libm
from nncli.errors import ConfigError, NncliError

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


def _mode(rewrite: bool = True):
    """Pure-Python linker (no C compiler, quickest start); graph rewrites minus fusion/inplace."""
    from pytensor.compile.mode import Mode

    if not rewrite:
        return Mode(linker="py", optimizer=None)
    return Mode(linker="py", optimizer="fast_run").excluding("fusion", "inplace")


@contextlib.contextmanager
def _quiet():
    """Keep PyTensor's own warnings/log lines off stderr: the CLI prints one line per problem."""
    import logging

    logger = logging.getLogger("pytensor")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _compile(inputs, outputs, rewrite: bool = True):
    """(function, the outputs as rewritten). Falls back to no rewrites where the rewrites merged
    an op over more than 32 operands, which numpy ufuncs (the py linker) cannot run."""
    import pytensor

    with _quiet():
        fn = pytensor.function(inputs, outputs, mode=_mode(rewrite), on_unused_input="ignore")
        graphs = tuple(fn.maker.fgraph.outputs)
        if rewrite and any(len(a.inputs) + len(a.outputs) > 32 for a in fn.maker.fgraph.apply_nodes):
            fn = pytensor.function(inputs, outputs, mode=_mode(False), on_unused_input="ignore")
    return fn, graphs


def _function(inputs, outputs, rewrite: bool = True):
    return _compile(inputs, outputs, rewrite)[0]


def _size(inputs, outputs) -> int:
    from pytensor.graph.traversal import io_toposort

    return len(io_toposort(list(inputs), list(outputs)))


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
            if name in expr.CONSTANTS:
                raise ConfigError(f"--at {piece}: '{name}' is a constant, not a variable")
            raise ConfigError(f"--at {piece}: the expression has no variable '{name}'"
                              f"{expr.suggest(name, names)} (variables: {', '.join(names)})")
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
                              f"{expr.suggest(name, names)} (variables: {', '.join(names)})")
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

    tree = expr.parse(text)
    names = expr.variables(tree)
    inputs = {n: pt.scalar(n, dtype="float64") for n in names}
    f = expr.to_pytensor(tree, inputs)
    xs = [inputs[n] for n in wrt]

    def grad(cost, wrt_vars, step):
        size = _size(inputs.values(), [cost])
        if size > SIZE_LIMIT:
            raise ConfigError(f"the derivative graph is too large to differentiate further ({size} "
                              f"operations before derivative {step}); ask for a lower order or a "
                              "smaller expression")
        with _quiet():
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
    fn, graphs = _compile(ins, outs, rewrite=_size(ins, outs) <= REWRITE_LIMIT)
    return fn, names, labels, graphs[1:]


SHOW_LIMIT = 3000


def _show(graph) -> str:
    """The derivative as text in the expression language, or a note when it is too big to read."""
    try:
        tree = expr.from_pytensor(graph)
        size = expr.tree_size(tree)
        if size > SHOW_LIMIT:
            return f"(not shown: {size} operations when written out)"
        return expr.unparse(expr.simplify(tree))
    except RecursionError:
        return "(not shown: nested too deeply to write out)"


# --- the public entry point ----------------------------------------------------------------

def compute(text: str, at=(), wrt=(), order: int = 1, hessian: bool = False,
            show: bool = False) -> GradResult:
    """The derivative(s) of ``text`` at the point given by ``at`` (``--at`` strings or a dict)."""
    import numpy as np

    tree = expr.parse(text)
    names = expr.variables(tree)
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
        result.warnings = diagnose(tree, point, 2 if hessian else order)
    return result


@functools.lru_cache(maxsize=256)
def _value_function(text: str):
    import pytensor.tensor as pt

    tree = expr.parse(text)
    names = expr.variables(tree)
    inputs = {n: pt.scalar(n, dtype="float64") for n in names}
    fn = _function(list(inputs.values()), expr.to_pytensor(tree, inputs))
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


# --- where did inf/nan come from? -----------------------------------------------------------

def _describe(node, args) -> str:
    """The operation with its argument values, e.g. ``log(0.0)`` or ``1.0 / 0.0``."""
    shown = [repr(a) for a in args]
    if isinstance(node, expr.Call):
        return f"{node.func}({', '.join(shown)})"
    if isinstance(node, expr.Neg):
        return f"-({shown[0]})"
    return f"{shown[0]} {node.op} {shown[1]}"


def diagnose(tree, point: dict, order: int = 1) -> list:
    """Name the operations that first produce inf/nan, in the value or in a derivative."""
    import numpy as np
    import pytensor.tensor as pt

    inputs = {n: pt.scalar(n, dtype="float64") for n in expr.variables(tree)}
    record: dict = {}
    expr.to_pytensor(tree, inputs, record)
    nodes = []

    def walk(node):  # post-order: arguments before the operation
        for child in (node.args if isinstance(node, expr.Call) else (node.operand,)
                      if isinstance(node, expr.Neg) else (node.left, node.right)
                      if isinstance(node, expr.BinOp) else ()):
            walk(child)
        if id(node) in record:
            nodes.append(node)

    walk(tree)
    subtrees = {id(n): n for n in nodes}

    def children(node):
        return list(node.args) if isinstance(node, expr.Call) else [node.operand] \
            if isinstance(node, expr.Neg) else [node.left, node.right]

    def leaf_value(node):
        if isinstance(node, expr.Num):
            return node.value
        if isinstance(node, expr.Const):
            return expr.CONSTANTS[node.name]
        return point[node.name]

    fn = _function(list(inputs.values()), [record[id(n)] for n in nodes], rewrite=False)
    with np.errstate(all="ignore"):
        values = {id(n): float(v) for n, v in zip(nodes, fn(*[point[k] for k in inputs]))}

    def value(node):
        return values[id(node)] if id(node) in subtrees else leaf_value(node)

    found = []
    for node in nodes:
        args = [value(c) for c in children(node)]
        if all(math.isfinite(a) for a in args) and not math.isfinite(value(node)):
            found.append(f"{expr.unparse(node)} (column {node.col}) is {value(node)!r}: "
                         f"{_describe(node, args)}")
            break
    if not found:
        for node, dname, dvalue in _local_derivatives(nodes, children, value, order):
            if not math.isfinite(dvalue):
                found.append(f"{dname} of {expr.unparse(node)} (column {node.col}) is {dvalue!r} "
                             f"at {_describe(node, [value(c) for c in children(node)])}")
                break
    return found or ["the result is not finite: finite parts combine into inf or nan "
                     "(for example inf - inf or 0 * inf)"]


def _local_derivatives(nodes, children, value, order):
    """For each operation whose value and arguments are finite: its own partial derivatives."""
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    scalars, outputs, labels = [], [], []
    for node in nodes:
        kids = children(node)
        if not (math.isfinite(value(node)) and all(math.isfinite(value(c)) for c in kids)):
            continue
        fresh = {f"a{i}": pt.scalar(f"a{i}", dtype="float64") for i in range(len(kids))}
        local = type(node)(*(
            [node.func, tuple(expr.Var(f"a{i}") for i in range(len(kids)))] if isinstance(node, expr.Call)
            else [expr.Var("a0")] if isinstance(node, expr.Neg)
            else [node.op, expr.Var("a0"), expr.Var("a1")]))
        out = expr.to_pytensor(local, fresh)
        for i, kid in enumerate(kids):
            g = out
            for k in range(1, order + 1):
                g = pytensor.grad(g, fresh[f"a{i}"], disconnected_inputs="ignore",
                                  return_disconnected="zero")
                outputs.append(g)
                labels.append((node, "the derivative" if k == 1 else f"derivative {k}"))
            scalars.append((fresh[f"a{i}"], value(kid)))
    if not outputs:
        return []
    fn = _function([s for s, _ in scalars], outputs)
    with np.errstate(all="ignore"):
        results = [float(v) for v in fn(*[v for _, v in scalars])]
    return [(node, name, v) for (node, name), v in zip(labels, results)]


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
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise NncliError("--plot needs matplotlib: pip install 'nncli[plot]'") from None
    from nncli import fileio

    target = fileio.output_target(path, picture=True, what="picture")
    fn = _vector_function(text, name, result.order)
    xs = np.linspace(lo, hi, points)
    others = [result.point[n] for n in result.variables if n != name]
    with np.errstate(all="ignore"):
        fx, dfx = (np.asarray(v, dtype=float) for v in fn(xs, *others))
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
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
    try:
        with fileio.open_output(target, binary=True) as fh:
            fig.savefig(fh, format="png", dpi=100)
    except OSError as exc:
        raise NncliError(f"{target.path}: cannot write the picture: {exc.strerror or exc}") from None
    return target.path


@functools.lru_cache(maxsize=32)
def _vector_function(text: str, name: str, order: int):
    import pytensor
    import pytensor.tensor as pt

    tree = expr.parse(text)
    names = expr.variables(tree)
    inputs = {n: (pt.vector(n, dtype="float64") if n == name else pt.scalar(n, dtype="float64"))
              for n in names}
    f = expr.to_pytensor(tree, inputs)
    f = f + pt.zeros_like(inputs[name])  # a constant f still gives one value per x
    g = f
    for _ in range(order):
        g = pytensor.grad(g.sum(), inputs[name], disconnected_inputs="ignore", return_disconnected="zero")
    ins = [inputs[name]] + [inputs[n] for n in names if n != name]
    return _function(ins, [f, g], rewrite=_size(ins, [f, g]) <= REWRITE_LIMIT)
