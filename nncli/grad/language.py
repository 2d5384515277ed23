"""A small, safe expression language for `nncli grad`.

``parse(text)`` turns text such as ``exp(sin(x**2))`` into a tree of the
node classes below. It is built on ``ast.parse(mode="eval")``, which only
parses and never runs anything, and then accepts a whitelist of node types:
numbers, variable names, the constants ``pi`` and ``e``, ``+ - * / **``,
unary minus, parentheses and calls of the functions in ``FUNCTIONS``.
Everything else (attributes, subscripts, strings, lambdas, comprehensions,
calls of anything outside the table, ...) is a ``ConfigError``.

``to_pytensor(tree, variables)`` builds the PyTensor graph (float64
throughout); derivatives are ``pytensor.grad`` on that graph (see
``nncli.grad.derivatives``). ``from_pytensor(var)`` reads a (rewritten) PyTensor
scalar graph back into this tree, ``simplify`` tidies it (signs, products
and quotients, repeated factors), and ``unparse`` prints it with the fewest
parentheses; the printed text parses back with ``parse``.

This module imports PyTensor only inside the functions that need it.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
import warnings
from dataclasses import dataclass, field

from nncli.errors import ConfigError

MAX_LENGTH = 1000
MAX_DEPTH = 50

# name -> number of arguments. The last three are not in the table:
# the printed derivatives of abs, min/max and x**y use them, so they are
# part of the language to keep every printed derivative parseable.
FUNCTIONS: dict[str, int] = {
    "sin": 1, "cos": 1, "tan": 1, "arcsin": 1, "arccos": 1, "arctan": 1,
    "sinh": 1, "cosh": 1, "tanh": 1, "exp": 1, "expm1": 1, "log": 1, "log1p": 1,
    "log2": 1, "log10": 1, "sqrt": 1, "abs": 1, "sigmoid": 1, "softplus": 1, "erf": 1,
    "min": 2, "max": 2,
    "sign": 1,   # -1, 0 or 1 (the derivative of abs)
    "eq": 2,     # 1 where a == b else 0 (derivatives of min/max)
    "where": 3,  # where(c, a, b): a where c != 0 else b (derivative of x**y)
}
CONSTANTS = {"pi": math.pi, "e": math.e}

_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


# --- the tree -------------------------------------------------------------------

@dataclass(frozen=True)
class Num:
    value: float
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Var:
    name: str
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Const:
    name: str  # "pi" or "e"
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Neg:
    operand: object
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / **
    left: object
    right: object
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple
    col: int = field(default=0, compare=False)


def variables(tree) -> list[str]:
    """The variable names of ``tree`` in order of first appearance (left to right)."""
    seen: dict[str, None] = {}

    def walk(node):
        if isinstance(node, Var):
            seen.setdefault(node.name, None)
        elif isinstance(node, Neg):
            walk(node.operand)
        elif isinstance(node, BinOp):
            walk(node.left)
            walk(node.right)
        elif isinstance(node, Call):
            for a in node.args:
                walk(a)

    walk(tree)
    return list(seen)


def tree_size(tree) -> int:
    """How many nodes ``tree`` has when written out (shared subtrees counted each time)."""
    memo: dict = {}

    def size(node):
        if id(node) not in memo:
            kids = node.args if isinstance(node, Call) else (node.operand,) if isinstance(node, Neg) \
                else (node.left, node.right) if isinstance(node, BinOp) else ()
            memo[id(node)] = 1 + sum(size(k) for k in kids)
        return memo[id(node)]

    return size(tree)


# --- parsing --------------------------------------------------------------------

def _caret(text: str, col: int) -> str:
    return f"{text!r} (caret: {(' ' * (max(col, 1) - 1) + '^')!r})"


def _error(text: str, col: int, what: str, tail: str = "") -> ConfigError:
    return ConfigError(f"{what} at column {col}: {_caret(text, col)}{tail}")


def suggest(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_FOREIGN = {
    ast.Attribute: "attribute access", ast.Subscript: "subscripting", ast.Lambda: "lambda",
    ast.ListComp: "a comprehension", ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension", ast.Compare: "comparison", ast.BoolOp: "and/or",
    ast.IfExp: "if/else", ast.NamedExpr: "assignment", ast.Starred: "a starred argument",
    ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set",
    ast.JoinedStr: "a string", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.Slice: "a slice",
}


def parse(text: str):
    """Parse ``text`` into a tree; every mistake is a one-line ``ConfigError``."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("empty expression: give one such as 'exp(sin(x**2))'")
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"expression too long: {len(text)} characters (the limit is {MAX_LENGTH})")
    for i, ch in enumerate(text):
        if ch in "\r\n" or not ch.isprintable():
            raise _error(text, i + 1, "control characters (such as a newline) are not allowed")
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth > MAX_DEPTH:
            raise _error(text, i + 1, f"expression nested too deeply (more than {MAX_DEPTH} levels)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        lead = len(text) - len(text.lstrip())
        col = min(max((exc.offset or 1) + lead, 1), len(text) + 1)
        reason = (exc.msg or "invalid syntax").split("\n")[0]
        raise ConfigError(f"syntax error in expression at column {col} ({reason}): {_caret(text, col)}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ConfigError(f"expression nested too deeply (more than {MAX_DEPTH} levels)") from None
    lead = len(text) - len(text.lstrip())
    return _Converter(text, lead).convert(tree.body, 0)


class _Converter:
    def __init__(self, text: str, lead: int):
        self.text = text
        self.lead = lead

    def col(self, node) -> int:
        line = getattr(node, "lineno", 1)
        return (getattr(node, "col_offset", 0) or 0) + self.lead + 1 if line == 1 else 1

    def fail(self, node, what: str, tail: str = "") -> ConfigError:
        return _error(self.text, self.col(node), what, tail)

    def convert(self, node, depth: int):
        if depth > MAX_DEPTH:
            raise self.fail(node, f"expression nested too deeply (more than {MAX_DEPTH} levels)")
        col = self.col(node)
        if isinstance(node, ast.Constant):
            value = node.value
            source = ast.get_source_segment(self.text.strip(), node) or ""
            if isinstance(value, (str, bytes)):
                raise self.fail(node, "a string is not part of the expression language")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not _NUMBER.fullmatch(source):
                raise self.fail(node, f"{source or value!r} is not a number of the expression language "
                                      "(numbers are decimal or scientific, e.g. 2, 0.5, 1e-3)")
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise self.fail(node, f"number {source} is too large")
            return Num(number, col)
        if isinstance(node, ast.Name):
            name = node.id
            if not _IDENT.fullmatch(name):
                raise self.fail(node, f"name {name!r} is not allowed (names are ASCII letters, digits "
                                      "and _, starting with a letter)")
            if name in CONSTANTS:
                return Const(name, col)
            if name in FUNCTIONS:
                raise self.fail(node, f"'{name}' is a function: call it as {name}(...)")
            return Var(name, col)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return Neg(self.convert(node.operand, depth + 1), col)
            if isinstance(node.op, ast.UAdd):
                return self.convert(node.operand, depth + 1)
            raise self.fail(node, "operator is not part of the expression language (use + - * / **)")
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise self.fail(node, "operator is not part of the expression language (use + - * / **)")
            return BinOp(op, self.convert(node.left, depth + 1), self.convert(node.right, depth + 1), col)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                return self.reject(node.func)
            name = node.func.id
            if name not in FUNCTIONS:
                raise self.fail(node, f"unknown function '{name}'",
                                f"{suggest(name, FUNCTIONS)} (known: {', '.join(FUNCTIONS)})")
            if node.keywords:
                raise self.fail(node, f"{name}() takes no keyword arguments")
            arity = FUNCTIONS[name]
            if len(node.args) != arity:
                raise self.fail(node, f"{name}() takes {arity} argument{'s' if arity > 1 else ''} "
                                      f"(got {len(node.args)})")
            return Call(name, tuple(self.convert(a, depth + 1) for a in node.args), col)
        return self.reject(node)

    def reject(self, node):
        what = _FOREIGN.get(type(node), f"'{type(node).__name__}'")
        if isinstance(node, ast.Attribute):  # point at the dot
            node = ast.Constant(None, lineno=1, col_offset=node.value.end_col_offset)
        raise self.fail(node, f"{what} is not part of the expression language")


# --- tree -> PyTensor -------------------------------------------------------------

def _pt_functions():
    import pytensor.tensor as pt

    def f64(v):
        return pt.cast(v, "float64")

    return {
        "sin": pt.sin, "cos": pt.cos, "tan": pt.tan, "arcsin": pt.arcsin, "arccos": pt.arccos,
        "arctan": pt.arctan, "sinh": pt.sinh, "cosh": pt.cosh, "tanh": pt.tanh, "exp": pt.exp,
        "expm1": pt.expm1, "log": pt.log, "log1p": pt.log1p, "log2": pt.log2, "log10": pt.log10,
        "sqrt": pt.sqrt, "abs": pt.abs, "sigmoid": pt.sigmoid, "softplus": pt.softplus, "erf": pt.erf,
        "min": pt.minimum, "max": pt.maximum, "sign": pt.sign,
        "eq": lambda a, b: f64(pt.eq(a, b)),
        "where": lambda c, a, b: pt.switch(pt.neq(c, 0), a, b),
    }


def to_pytensor(tree, inputs: dict, record: dict | None = None):
    """Build the float64 PyTensor graph of ``tree``; ``inputs`` maps variable names to tensors.

    With ``record``, every operation node's graph is stored there under ``id(node)``.
    """
    import numpy as np
    import pytensor.tensor as pt

    funcs = _pt_functions()

    def const(v):
        return pt.constant(np.float64(v))

    def build(node):
        var = _build(node)
        if record is not None and isinstance(node, (Neg, BinOp, Call)):
            record[id(node)] = var
        return var

    def _build(node):
        if isinstance(node, Num):
            return const(node.value)
        if isinstance(node, Const):
            return const(CONSTANTS[node.name])
        if isinstance(node, Var):
            return inputs[node.name]
        if isinstance(node, Neg):
            return -build(node.operand)
        if isinstance(node, BinOp):
            a, b = build(node.left), build(node.right)
            return {"+": pt.add, "-": pt.sub, "*": pt.mul, "/": pt.true_div, "**": pt.pow}[node.op](a, b)
        if isinstance(node, Call):
            return funcs[node.func](*(build(a) for a in node.args))
        raise TypeError(f"not an expression node: {node!r}")

    out = build(tree)
    return out if out.dtype == "float64" else pt.cast(out, "float64")


# --- PyTensor -> tree ---------------------------------------------------------------

_SCALAR_NAMES: dict | None = None


def _scalar_names() -> dict:
    """Scalar-op class -> language function, found by building each function once."""
    global _SCALAR_NAMES
    if _SCALAR_NAMES is None:
        import pytensor.tensor as pt

        x = pt.scalar("x", dtype="float64")
        names = {}
        for name, fn in _pt_functions().items():
            if FUNCTIONS[name] == 1:
                names[type(fn(x).owner.op.scalar_op)] = name
        names[type(pt.maximum(x, x).owner.op.scalar_op)] = "max"
        names[type(pt.minimum(x, x).owner.op.scalar_op)] = "min"
        _SCALAR_NAMES = names
    return _SCALAR_NAMES


def from_pytensor(var):
    """Read a scalar PyTensor graph (e.g. a rewritten derivative) back into a tree."""
    import numpy as np
    from pytensor.graph.basic import Constant
    import pytensor.scalar.basic as ps

    names = _scalar_names()
    memo: dict = {}

    def read(v):
        if v in memo:
            return memo[v]
        memo[v] = tree = _read(v)
        return tree

    def _read(v):
        if isinstance(v, Constant):
            value = float(np.asarray(v.data).reshape(()))
            return Neg(Num(-value)) if value < 0 or (value == 0 and math.copysign(1, value) < 0) \
                else Num(value)
        if v.owner is None:
            return Var(v.name)
        op = v.owner.op
        args = [read(i) for i in v.owner.inputs]
        scalar = op.scalar_op if hasattr(op, "scalar_op") else op if isinstance(op, ps.ScalarOp) else None
        if scalar is None and len(args) == 1 or isinstance(scalar, (ps.Identity, ps.Cast, type(ps.second))):
            # DeepCopyOp, DimShuffle, casts, fill(a, b) == b for scalars
            return args[-1]
        if isinstance(scalar, ps.Composite):  # a fused scalar graph: read its inside
            memo.update(zip(scalar.fgraph.inputs, args))
            return read(scalar.fgraph.outputs[v.owner.outputs.index(v)])
        kind = type(scalar)
        if scalar is None:
            return Call(type(op).__name__.lower(), tuple(args))
        if kind in names:
            return Call(names[kind], tuple(args))
        if isinstance(scalar, ps.Add):
            return _chain("+", args)
        if isinstance(scalar, ps.Mul):
            return _chain("*", args)
        if isinstance(scalar, ps.Sub):
            return BinOp("-", *args)
        if isinstance(scalar, ps.TrueDiv):
            return BinOp("/", *args)
        if isinstance(scalar, ps.Pow):
            return BinOp("**", *args)
        if isinstance(scalar, ps.Neg):
            return Neg(args[0])
        if isinstance(scalar, ps.Sqr):
            return BinOp("**", args[0], Num(2.0))
        if isinstance(scalar, ps.Reciprocal):
            return BinOp("/", Num(1.0), args[0])
        if isinstance(scalar, ps.EQ):
            return Call("eq", tuple(args))
        if isinstance(scalar, ps.NEQ) and args[1] == Num(0.0):
            return args[0]
        if isinstance(scalar, ps.Switch):
            return Call("where", tuple(args))
        # anything else is printed by its PyTensor name (it will not parse back)
        return Call(getattr(scalar, "name", None) or kind.__name__.lower(), tuple(args))

    return read(var)


def _chain(op, args):
    tree = args[0]
    for a in args[1:]:
        tree = BinOp(op, tree, a)
    return tree


# --- simplifying (cosmetic, value preserving) ---------------------------------------

def simplify(tree):
    """Tidy signs, sums, products and quotients so the tree prints like a textbook."""
    if isinstance(tree, Neg):
        return _sum_tree(_terms(tree, 1))
    if isinstance(tree, Call):
        return Call(tree.func, tuple(simplify(a) for a in tree.args))
    if isinstance(tree, BinOp):
        if tree.op in "+-":
            return _sum_tree(_terms(tree, 1))
        if tree.op in "*/":
            return _product_tree(*_factors(tree))
        base, power = simplify(tree.left), simplify(tree.right)
        if isinstance(power, Neg) and isinstance(power.operand, Num):
            return _product_tree(1.0, [], [BinOp("**", base, power.operand) if power.operand.value != 1
                                           else base])
        if isinstance(power, Num) and power.value == 1:
            return base
        if isinstance(power, Num) and power.value == int(power.value) and isinstance(base, BinOp) \
                and base.op == "**" and isinstance(base.right, Num):  # (x**2)**3 -> x**6
            return BinOp("**", base.left, Num(base.right.value * power.value))
        return BinOp("**", base, power)
    return tree


def _terms(tree, sign):
    """Flatten a sum into (sign, simplified term) pairs."""
    if isinstance(tree, BinOp) and tree.op in "+-":
        return _terms(tree.left, sign) + _terms(tree.right, sign if tree.op == "+" else -sign)
    if isinstance(tree, Neg):
        return _terms(tree.operand, -sign)
    term = simplify(tree)
    if isinstance(term, Neg):
        return [(-sign, term.operand)]
    return [(sign, term)]


def _sum_tree(terms):
    """Rebuild a sum, merging like terms (2*a + 3*a -> 5*a) and putting positive terms first."""
    merged: dict = {}
    for sign, term in terms:
        coef, num, den = _factors(term)
        num = sorted(_powers(num), key=_factor_key)
        den = sorted(_powers(den), key=_factor_key)
        key = unparse(_product_tree(1.0, num, den))
        old = merged.get(key, (0.0, num, den))[0]
        merged[key] = (old + sign * coef, num, den)
    flat = []
    for coef, num, den in merged.values():
        if coef != 0 or math.isnan(coef):
            flat.append((1 if coef > 0 else -1, _product_tree(abs(coef), num, den), not num and not den))
    if not flat:
        return Num(0.0)
    flat.sort(key=lambda st: (st[2], st[0] < 0))  # stable: constants last, positive terms first
    flat = [(s, t) for s, t, _ in flat]
    s, tree = flat[0]
    tree = Neg(tree) if s < 0 else tree
    for s, t in flat[1:]:
        tree = BinOp("+" if s > 0 else "-", tree, t)
    return tree


def _factors(tree):
    """Flatten a product/quotient into (coefficient, numerator factors, denominator factors)."""
    coef, num, den = 1.0, [], []

    def walk(node, up):
        nonlocal coef
        if isinstance(node, BinOp) and node.op == "*":
            walk(node.left, up)
            walk(node.right, up)
        elif isinstance(node, BinOp) and node.op == "/":
            walk(node.left, up)
            walk(node.right, not up)
        elif isinstance(node, Neg):
            coef = -coef
            walk(node.operand, up)
        else:
            node = simplify(node)
            if isinstance(node, Neg):
                coef = -coef
                node = node.operand
            if isinstance(node, Num):
                coef = coef * node.value if up else coef / node.value
            elif isinstance(node, BinOp) and node.op in "*/":
                walk(node, up)
            else:
                (num if up else den).append(node)

    walk(tree, True)
    return coef, num, den


def _powers(factors):
    """Merge equal factors: x*x -> x**2 (order of first appearance kept)."""
    counts: dict = {}
    for f in factors:
        counts[f] = counts.get(f, 0) + 1
    out = []
    for f, n in counts.items():
        out.append(f if n == 1 else BinOp("**", f, Num(float(n))))
    return out


def _factor_key(f):
    if isinstance(f, Const):
        return (0, f.name, "")
    if isinstance(f, Var):
        return (1, f.name, "")
    if isinstance(f, BinOp) and f.op == "**" and isinstance(f.left, Var):
        return (2, f.left.name, unparse(f.right))
    text = unparse(f)
    return (3, len(text), text)


def _product_tree(coef, num, den):
    num = sorted(_powers(num), key=_factor_key)
    den = sorted(_powers(den), key=_factor_key)
    if coef == 0:
        return Num(0.0)
    negative = coef < 0
    coef = abs(coef)
    top = _chain("*", ([_number(coef)] if coef != 1 or not num else []) + num)
    tree = top if not den else BinOp("/", top, _chain("*", den))
    return Neg(tree) if negative else tree


_NAMED = [
    (math.pi, Const("pi")), (math.e, Const("e")),
    (math.log(2), Call("log", (Num(2.0),))), (math.log(10), Call("log", (Num(10.0),))),
    (1 / math.log(2), BinOp("/", Num(1.0), Call("log", (Num(2.0),)))),
    (1 / math.log(10), BinOp("/", Num(1.0), Call("log", (Num(10.0),)))),
    (2 / math.sqrt(math.pi), BinOp("/", Num(2.0), Call("sqrt", (Const("pi"),)))),
    (math.sqrt(2), Call("sqrt", (Num(2.0),))),
]


def _number(value: float):
    for known, tree in _NAMED:
        if value == known:
            return tree
    return Num(value)


# --- printing -----------------------------------------------------------------------

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "**": 4}


def _fmt_number(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def unparse(tree) -> str:
    """Print a tree with the fewest parentheses; ``parse(unparse(t))`` means the same."""
    return _unparse(tree)[0]


def _unparse(tree):
    if isinstance(tree, Num):
        text = _fmt_number(tree.value)
        return (text, 5) if tree.value >= 0 else (f"-{_fmt_number(-tree.value)}", 3)
    if isinstance(tree, (Var, Const)):
        return tree.name, 5
    if isinstance(tree, Call):
        return f"{tree.func}({', '.join(_unparse(a)[0] for a in tree.args)})", 5
    if isinstance(tree, Neg):
        inner = tree.operand
        if isinstance(inner, BinOp) and inner.op in "*/":  # -a*b reads as -(a*b); same value
            text, prec = _unparse(inner.left)
            left = f"({text})" if prec < 3 else text
            right, rprec = _unparse(inner.right)
            right = f"({right})" if rprec <= 2 else right
            return f"-{left}{inner.op}{right}", 2
        text, prec = _unparse(inner)
        return (f"-{text}" if prec >= 3 else f"-({text})"), 3
    if isinstance(tree, BinOp):
        p = _PREC[tree.op]
        left, lp = _unparse(tree.left)
        right, rp = _unparse(tree.right)
        if tree.op == "**":
            left = f"({left})" if lp <= p else left      # (-x)**2, (a*b)**2, (a**b)**c
            right = f"({right})" if rp < p else right    # right-associative: a**b**c
        else:
            left = f"({left})" if lp < p else left
            right = f"({right})" if rp <= p else right   # a - (b + c), a / (b * c)
        sep = " " if p == 1 else ""
        return f"{left}{sep}{tree.op}{sep}{right}", p
    raise TypeError(f"not an expression node: {tree!r}")
