"""Evaluate a compiled scalar PyTensor graph with the C library's math functions.

numpy's SIMD loops for exp/sin/log/... (AVX-512 builds of numpy 2.x) can be a unit in the last
place off: on one Sapphire Rapids machine `np.exp(-0.9300948780045254)` gave ...8064 where the
correctly rounded value is ...807, so `nncli grad "exp(sin(x**2))" --at 15` printed
4.347404090286684 instead of the tutorial's (correctly rounded) 4.347404090286685. Python's `math`
calls the platform libm (glibc: < 1 ulp, in practice correctly rounded), the same on every machine.

`evaluate` walks the rewritten graph of a function compiled with the py linker: 0-d float64
elementwise ops listed in `_LIBM` run through `math`; everything else (and a domain error, where
numpy gives nan/inf with its own rules) runs through the op's own `perform`, as the py linker would.
"""

from __future__ import annotations

import math

import numpy as np


def _libm_table() -> dict:
    import pytensor.scalar.basic as b
    import pytensor.scalar.math as m

    return {
        b.Exp: math.exp, b.Exp2: lambda x: math.pow(2.0, x), b.Expm1: math.expm1,
        b.Log: math.log, b.Log2: math.log2, b.Log10: math.log10, b.Log1p: math.log1p,
        b.Sin: math.sin, b.Cos: math.cos, b.Tan: math.tan,
        b.ArcSin: math.asin, b.ArcCos: math.acos, b.ArcTan: math.atan, b.ArcTan2: math.atan2,
        b.Sinh: math.sinh, b.Cosh: math.cosh, b.Tanh: math.tanh,
        b.ArcSinh: math.asinh, b.ArcCosh: math.acosh, b.ArcTanh: math.atanh,
        b.Sqrt: math.sqrt, b.Pow: math.pow,
        m.Erf: math.erf, m.Erfc: math.erfc, m.Gamma: math.gamma, m.GammaLn: math.lgamma,
    }


_TABLE: dict | None = None


def _libm(node):
    """The `math` function for a 0-d float64 elementwise node, or None."""
    global _TABLE
    from pytensor.tensor.elemwise import Elemwise

    if not isinstance(node.op, Elemwise) or len(node.outputs) != 1:
        return None
    out = node.outputs[0].type
    if out.ndim != 0 or out.dtype != "float64" or any(getattr(v.type, "ndim", 1) != 0 for v in node.inputs):
        return None
    if _TABLE is None:
        _TABLE = _libm_table()
    return _TABLE.get(type(node.op.scalar_op))


def evaluate(fn, *args) -> list:
    """The outputs of `fn` (a py-linker pytensor function) at `args`, transcendental ops through libm."""
    fgraph = fn.maker.fgraph
    values: dict = {}
    for var, arg in zip(fgraph.inputs, args, strict=True):
        values[var] = np.asarray(arg, dtype=var.type.dtype)

    def value(var):
        return values[var] if var in values else var.data  # a constant

    for node in fgraph.toposort():
        ins = [value(v) for v in node.inputs]
        fn_libm = _libm(node)
        if fn_libm is not None:
            try:
                result = fn_libm(*(float(a) for a in ins))
            except (ValueError, OverflowError):  # outside the domain: numpy's nan/inf below
                result = None
            if result is not None:
                values[node.outputs[0]] = np.asarray(result, dtype="float64")
                continue
        storage = [[None] for _ in node.outputs]
        with np.errstate(all="ignore"):
            node.op.perform(node, ins, storage)
        for var, cell in zip(node.outputs, storage):
            values[var] = cell[0]
    return [value(v) for v in fgraph.outputs]
