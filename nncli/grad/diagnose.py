"""Where did inf/nan come from? The operation that first made a result of `nncli grad` non-finite.

``diagnose(tree, point, order)`` evaluates every operation of the expression
at the point (arguments before the operation) and names the first one whose
arguments are finite but whose value is not, e.g. ``log(x) (column 1) is
-inf: log(0.0)``. When every value is finite, it differentiates each
operation on its own (up to the order asked for) and names the first local
derivative that is not finite.

This module imports PyTensor only inside its functions.
"""

from __future__ import annotations

import math

from nncli.grad import compiling, language


def _describe(node, args) -> str:
    """The operation with its argument values, e.g. ``log(0.0)`` or ``1.0 / 0.0``."""
    shown = [repr(a) for a in args]
    if isinstance(node, language.Call):
        return f"{node.func}({', '.join(shown)})"
    if isinstance(node, language.Neg):
        return f"-({shown[0]})"
    return f"{shown[0]} {node.op} {shown[1]}"


def diagnose(tree, point: dict, order: int = 1) -> list:
    """Name the operations that first produce inf/nan, in the value or in a derivative."""
    import numpy as np
    import pytensor.tensor as pt

    inputs = {n: pt.scalar(n, dtype="float64") for n in language.variables(tree)}
    record: dict = {}
    language.to_pytensor(tree, inputs, record)
    nodes = []

    def walk(node):  # post-order: arguments before the operation
        for child in (node.args if isinstance(node, language.Call) else (node.operand,)
                      if isinstance(node, language.Neg) else (node.left, node.right)
                      if isinstance(node, language.BinOp) else ()):
            walk(child)
        if id(node) in record:
            nodes.append(node)

    walk(tree)
    subtrees = {id(n): n for n in nodes}

    def children(node):
        return list(node.args) if isinstance(node, language.Call) else [node.operand] \
            if isinstance(node, language.Neg) else [node.left, node.right]

    def leaf_value(node):
        if isinstance(node, language.Num):
            return node.value
        if isinstance(node, language.Const):
            return language.CONSTANTS[node.name]
        return point[node.name]

    fn = compiling.function(list(inputs.values()), [record[id(n)] for n in nodes], rewrite=False)
    with np.errstate(all="ignore"):
        values = {id(n): float(v) for n, v in zip(nodes, fn(*[point[k] for k in inputs]))}

    def value(node):
        return values[id(node)] if id(node) in subtrees else leaf_value(node)

    found = []
    for node in nodes:
        args = [value(c) for c in children(node)]
        if all(math.isfinite(a) for a in args) and not math.isfinite(value(node)):
            found.append(f"{language.unparse(node)} (column {node.col}) is {value(node)!r}: "
                         f"{_describe(node, args)}")
            break
    if not found:
        for node, dname, dvalue in _local_derivatives(nodes, children, value, order):
            if not math.isfinite(dvalue):
                found.append(f"{dname} of {language.unparse(node)} (column {node.col}) is {dvalue!r} "
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
            [node.func, tuple(language.Var(f"a{i}") for i in range(len(kids)))] if isinstance(node, language.Call)
            else [language.Var("a0")] if isinstance(node, language.Neg)
            else [node.op, language.Var("a0"), language.Var("a1")]))
        out = language.to_pytensor(local, fresh)
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
    fn = compiling.function([s for s, _ in scalars], outputs)
    with np.errstate(all="ignore"):
        results = [float(v) for v in fn(*[v for _, v in scalars])]
    return [(node, name, v) for (node, name), v in zip(labels, results)]
