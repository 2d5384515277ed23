"""Merge layers: add, subtract, multiply, average, maximum, concatenate.

Each takes several inputs, named by the layer's ``inputs:`` (see nncli.network), and is a
multi-input layer in the sense of :class:`nncli.layers.base.Layer`: its methods receive one
shape / tensor per input, in the order of ``inputs:``.

- add, multiply, average, maximum: two or more inputs of one shape, element-wise
  (as Keras' Add, Multiply, Average, Maximum; no broadcasting).
- subtract: exactly two inputs of one shape: inputs[0] - inputs[1].
- concatenate: two or more inputs joined along ``axis`` (per example, the batch axis
  excluded: 0 is the first feature axis; negative counts from the end; default -1, the last
  axis); every other axis must match.

None has parameters or an activation (follow with ``{type: activation, ...}``).
"""

from __future__ import annotations

import pytensor.tensor as pt

from nncli.layers.base import LAYERS, Layer, Shape, ShapeError
from nncli.schema import Key, integer


def _shapes(shapes) -> str:
    return ", ".join(f"inputs[{i}] {tuple(s)}" for i, s in enumerate(shapes))


class _Elementwise(Layer):
    n_inputs = (2, None)
    word = ""

    def output_shape(self, shapes: list[Shape]) -> Shape:
        first = tuple(shapes[0])
        for i, s in enumerate(shapes[1:], 1):
            if tuple(s) != first:
                raise ShapeError(f"{self.word} needs inputs of one shape; inputs[0] has shape {first}, "
                                 f"inputs[{i}] has shape {tuple(s)}")
        return first

    def combine(self, xs):
        raise NotImplementedError

    def linear(self, xs, params, ctx):
        return self.combine(list(xs))


@LAYERS.register("add")
class Add(_Elementwise):
    """The element-wise sum of two or more inputs of one shape (a residual connection: [h, f(h)])."""

    word = "add"

    def combine(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


@LAYERS.register("subtract")
class Subtract(_Elementwise):
    """inputs[0] - inputs[1] (exactly two inputs of one shape)."""

    word = "subtract"
    n_inputs = (2, 2)

    def combine(self, xs):
        return xs[0] - xs[1]


@LAYERS.register("multiply")
class Multiply(_Elementwise):
    """The element-wise product of two or more inputs of one shape."""

    word = "multiply"

    def combine(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


@LAYERS.register("average")
class Average(_Elementwise):
    """The element-wise mean of two or more inputs of one shape."""

    word = "average"

    def combine(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out / len(xs)


@LAYERS.register("maximum")
class Maximum(_Elementwise):
    """The element-wise maximum of two or more inputs of one shape (the gradient goes to the larger)."""

    word = "maximum"

    def combine(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = pt.maximum(out, x)
        return out


@LAYERS.register("concatenate")
class Concatenate(Layer):
    """Two or more inputs joined along `axis` (per example: 0 is the first axis after the batch
    axis, -1 the last); every other axis must match."""

    n_inputs = (2, None)
    keys = {"axis": Key(integer(min=-8, max=7), -1,
                        "axis to join along, per example (0: the first after the batch axis; negative: from "
                        "the end; default -1, the last)")}

    def _axis(self, rank: int) -> int:
        axis = self.config["axis"]
        if not -rank <= axis < rank:
            raise ShapeError(f"concatenate axis {axis} is out of range for inputs with {rank} axes per example "
                             f"(use {-rank} .. {rank - 1})")
        return axis % rank

    def output_shape(self, shapes: list[Shape]) -> Shape:
        first = tuple(shapes[0])
        if not first:
            raise ShapeError("concatenate needs inputs with at least one axis per example, got shape ()")
        for i, s in enumerate(shapes[1:], 1):
            if len(s) != len(first):
                raise ShapeError(f"concatenate needs inputs with the same number of axes; inputs[0] has shape "
                                 f"{first}, inputs[{i}] has shape {tuple(s)}")
        axis = self._axis(len(first))
        for i, s in enumerate(shapes[1:], 1):
            if any(a != b for j, (a, b) in enumerate(zip(first, s)) if j != axis):
                raise ShapeError(f"concatenate along axis {self.config['axis']} needs every other axis to match; "
                                 f"inputs[0] has shape {first}, inputs[{i}] has shape {tuple(s)}")
        return (*first[:axis], sum(int(s[axis]) for s in shapes), *first[axis + 1:])

    def linear(self, xs, params, ctx):
        xs = list(xs)
        return pt.concatenate(xs, axis=self._axis(xs[0].ndim - 1) + 1)
