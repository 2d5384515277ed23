"""Spec -> layers -> symbolic graph.

A :class:`Network` knows its layers, the shape after each (checked at
validation time, before anything is compiled), its parameters as shared
variables named ``<layer>/<param>``, and builds the forward graph for
training (dropout on, batch statistics) or inference from the same spec.

The layers form a directed acyclic graph: each layer takes the outputs of the
earlier layers its spec's ``inputs`` names (resolved by nncli.spec.check_graph:
by default the previous layer, so a stack is the common case), and the last
layer is the network's output. The config order is a topological order, so
shapes, initial values (drawn in layer order: a stack draws exactly what it
always drew) and the forward pass all go through the layers once, in order.
A multi-input layer (``Layer.n_inputs``) receives lists; every other layer
one shape and one tensor.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt

from nncli import activations, initializers
from nncli.layers import LAYERS, Context, Layer, ShapeError
from nncli.spec import INPUT, LayerSpec, Spec, check_graph
from nncli.schema import Invalid

#: the most parameters (and state values) a network may have: 400 MB as float32, before the
#: optimizer's slots; checked before any weight is allocated
MAX_PARAMS = 100_000_000


class Network:
    def __init__(self, layer_specs: Sequence[LayerSpec], input_shape: tuple[int, ...]):
        specs = tuple(layer_specs)
        if any(not s.inputs for s in specs):   # not yet resolved (built from LayerSpecs directly)
            try:
                specs = check_graph(specs)
            except Invalid as exc:
                at = re.match(r"layers\[(\d+)\]", exc.path)
                raise LayerShapeError(specs[int(at.group(1)) if at else 0], exc.message, exc.path) from None
        self.specs = specs
        self.input_shape = tuple(int(d) for d in input_shape)
        self.layers: list[Layer] = [LAYERS.get(s.type)(s.name, dict(s.config)) for s in self.specs]
        index = {INPUT: -1, **{s.name: i for i, s in enumerate(self.specs)}}
        #: per layer, the indices of its inputs (-1: the network's input), in the order of its `inputs:`
        self.sources: list[tuple[int, ...]] = [tuple(index[n] for n in s.inputs) for s in self.specs]
        self.shapes: list[tuple[int, ...]] = []
        for spec, layer in zip(self.specs, self.layers):
            shapes = self.input_shapes(len(self.shapes))
            try:
                shape = tuple(int(d) for d in layer.output_shape(shapes))
            except ShapeError as exc:
                if layer.multi_input():
                    named = ", ".join(f"{n} {tuple(s)}" for n, s in zip(spec.inputs, shapes))
                    raise LayerShapeError(spec, f"{exc} (inputs: {named})", f"{spec.path}.inputs") from None
                raise LayerShapeError(spec, str(exc)) from None
            self.shapes.append(shape)
        self._check_budget()
        self.params: dict[str, Any] = {}   # "<layer>/<param>" -> shared (trainable)
        self.state: dict[str, Any] = {}    # "<layer>/<name>" -> shared (non-trainable)

    def input_shapes(self, i: int):
        """What layer i's methods take as input shape: one shape, or a list for a multi-input layer."""
        shapes = [self.input_shape if j < 0 else self.shapes[j] for j in self.sources[i]]
        return shapes if self.layers[i].multi_input() else shapes[0]

    def _check_budget(self) -> None:
        """At most MAX_PARAMS values in all, counted before any weight is allocated."""
        total = 0
        for i, (spec, layer) in enumerate(zip(self.specs, self.layers)):
            total += _count_params(layer, self.input_shapes(i), MAX_PARAMS - total)
            if total > MAX_PARAMS:
                raise LayerShapeError(spec, f"the network would have more than {MAX_PARAMS:,} parameters "
                                            f"with this layer (nncli's parameter budget); use fewer units")

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1]

    @property
    def last_activation(self) -> str | None:
        """The activation the output passes through last: the output layer's, or, through layers
        without keys that take one input (flatten), the one before; anything else ends the search."""
        i = len(self.layers) - 1
        while i >= 0:
            layer = self.layers[i]
            if layer.activation is not None:
                return layer.activation
            if layer.keys or layer.multi_input():  # a layer with its own output (e.g. recurrent, add)
                return None
            i = self.sources[i][0]
        return None

    def initial_values(self, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Initial (trainable parameters, non-trainable state), drawn from `rng` in layer order."""
        params, state = {}, {}
        for i, layer in enumerate(self.layers):
            shape = self.input_shapes(i)
            params.update({f"{layer.name}/{n}": v for n, v in layer.init_params(shape, rng).items()})
            state.update({f"{layer.name}/{n}": v for n, v in layer.init_state(shape).items()})
        return params, state

    def create_shared(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        floatx = pytensor.config.floatX

        def shared(key, value):
            arr = np.asarray(value)
            return pytensor.shared(arr.astype(floatx) if arr.dtype.kind == "f" else arr, name=key)

        self.params = {k: shared(k, v) for k, v in params.items()}
        self.state = {k: shared(k, v) for k, v in state.items()}

    def values(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v.get_value()) for k, v in {**self.params, **self.state}.items()}

    def set_values(self, values: dict[str, np.ndarray]) -> None:
        for key, var in {**self.params, **self.state}.items():
            var.set_value(np.asarray(values[key], dtype=var.dtype))

    def forward(self, x, ctx: Context):
        """Return (output, pre-activation of the last layer, last activation name)."""
        z, act, outs = x, None, []
        every = {**self.params, **self.state}
        for layer, src in zip(self.layers, self.sources):
            params = {k.split("/", 1)[1]: v for k, v in every.items() if k.split("/", 1)[0] == layer.name}
            xs = [x if j < 0 else outs[j] for j in src]
            if layer.multi_input():   # static per-example shapes: e.g. concatenate's gradient (a Split)
                # then splits at constant sizes, which JAX needs (a shared weight has no static shape)
                xs = [pt.specify_shape(v, (None, *(self.input_shape if j < 0 else self.shapes[j])))
                      for v, j in zip(xs, src)]
            z = layer.linear(xs if layer.multi_input() else xs[0], params, ctx)
            act = layer.activation
            outs.append(activations.apply(act, z) if act else z)
        return (outs[-1] if outs else x), z, act

    def summary(self, params: dict[str, np.ndarray]) -> list[tuple[str, str, tuple[int, ...], int]]:
        """(name, type, output shape, trainable parameter count) per layer."""
        return [(layer.name, spec.type, out_shape,
                 sum(int(np.prod(np.shape(v))) for k, v in params.items() if k.split("/", 1)[0] == layer.name))
                for spec, layer, out_shape in zip(self.specs, self.layers, self.shapes)]


class _OverBudget(Exception):
    pass


def trainable_counts(net: Network) -> list[int]:
    """Trainable parameters per layer (what `inspect` shows), counted without allocating weights."""
    return [_count_params(layer, net.input_shapes(i), MAX_PARAMS, state=False) for i, layer in enumerate(net.layers)]


def _count_params(layer: Layer, input_shape, budget: int, state: bool = True) -> int:
    """How many values `layer` creates (parameters and state) on inputs of `input_shape`.

    Its own init_params/init_state run with every weight initializer replaced by a view of
    one zero that allocates nothing, so the count follows the layers' code exactly; a weight
    that would take the count past `budget` stops it before anything of its size exists.
    """
    counted = [0]

    def make(name, shape, rng, dtype="float32"):
        counted[0] += int(np.prod(shape, dtype=object))
        if counted[0] > budget:
            raise _OverBudget
        return np.broadcast_to(np.zeros((), dtype=dtype), tuple(shape))

    real = initializers.make
    initializers.make = make
    try:
        values = {**layer.init_params(input_shape, None), **(layer.init_state(input_shape) if state else {})}
    except _OverBudget:
        return budget + 1
    finally:
        initializers.make = real
    return sum(int(np.prod(np.shape(v), dtype=object)) for v in values.values())


class LayerShapeError(Exception):
    def __init__(self, spec: LayerSpec, message: str, path: str | None = None):
        super().__init__(message)
        self.spec, self.message, self.path = spec, message, path or spec.path


def build(spec: Spec, input_shape: tuple[int, ...]) -> Network:
    """Build a network for `spec` on inputs of `input_shape`; shape errors name the layer."""
    try:
        return Network(spec.layers, input_shape)
    except LayerShapeError as exc:
        raise spec.error(exc.path, f"{exc.spec.type} '{exc.spec.name}': {exc.message}") from None
