"""Spec -> layers -> symbolic graph.

A :class:`Network` knows its layers, the shape after each (checked at
validation time, before anything is compiled), its parameters as shared
variables named ``<layer>/<param>``, and builds the forward graph for
training (dropout on, batch statistics) or inference from the same spec.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytensor

from nncli import activations, initializers
from nncli.layers import LAYERS, Context, Layer, ShapeError
from nncli.spec import LayerSpec, Spec

#: the most parameters (and state values) a network may have: 400 MB as float32, before the
#: optimizer's slots; checked before any weight is allocated
MAX_PARAMS = 100_000_000


class Network:
    def __init__(self, layer_specs: Sequence[LayerSpec], input_shape: tuple[int, ...]):
        self.specs = tuple(layer_specs)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.layers: list[Layer] = [LAYERS.get(s.type)(s.name, dict(s.config)) for s in self.specs]
        self.shapes: list[tuple[int, ...]] = []
        shape = self.input_shape
        for spec, layer in zip(self.specs, self.layers):
            try:
                shape = tuple(int(d) for d in layer.output_shape(shape))
            except ShapeError as exc:
                raise LayerShapeError(spec, str(exc)) from None
            self.shapes.append(shape)
        self._check_budget()
        self.params: dict[str, Any] = {}   # "<layer>/<param>" -> shared (trainable)
        self.state: dict[str, Any] = {}    # "<layer>/<name>" -> shared (non-trainable)

    def _check_budget(self) -> None:
        """At most MAX_PARAMS values in all, counted before any weight is allocated."""
        total, shape = 0, self.input_shape
        for spec, layer, out_shape in zip(self.specs, self.layers, self.shapes):
            total += _count_params(layer, shape, MAX_PARAMS - total)
            if total > MAX_PARAMS:
                raise LayerShapeError(spec, f"the network would have more than {MAX_PARAMS:,} parameters "
                                            f"with this layer (nncli's parameter budget); use fewer units")
            shape = out_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1]

    @property
    def last_activation(self) -> str | None:
        for layer in reversed(self.layers):
            if layer.activation is not None:
                return layer.activation
            if layer.keys:  # a layer with its own output (e.g. a recurrent layer) ends the search
                return None
        return None

    def initial_values(self, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Initial (trainable parameters, non-trainable state), drawn from `rng` in layer order."""
        params, state = {}, {}
        shape = self.input_shape
        for layer, out_shape in zip(self.layers, self.shapes):
            params.update({f"{layer.name}/{n}": v for n, v in layer.init_params(shape, rng).items()})
            state.update({f"{layer.name}/{n}": v for n, v in layer.init_state(shape).items()})
            shape = out_shape
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
        z, act = x, None
        for layer in self.layers:
            params = {k.split("/", 1)[1]: v for k, v in {**self.params, **self.state}.items()
                      if k.split("/", 1)[0] == layer.name}
            z = layer.linear(x, params, ctx)
            act = layer.activation
            x = activations.apply(act, z) if act else z
        return x, z, act

    def summary(self, params: dict[str, np.ndarray]) -> list[tuple[str, str, tuple[int, ...], int]]:
        """(name, type, output shape, trainable parameter count) per layer."""
        return [(layer.name, spec.type, out_shape,
                 sum(int(np.prod(np.shape(v))) for k, v in params.items() if k.split("/", 1)[0] == layer.name))
                for spec, layer, out_shape in zip(self.specs, self.layers, self.shapes)]


class _OverBudget(Exception):
    pass


def trainable_counts(net: Network) -> list[int]:
    """Trainable parameters per layer (what `inspect` shows), counted without allocating weights."""
    shapes = [net.input_shape, *net.shapes[:-1]]
    return [_count_params(layer, shape, MAX_PARAMS, state=False) for layer, shape in zip(net.layers, shapes)]


def _count_params(layer: Layer, input_shape: tuple[int, ...], budget: int, state: bool = True) -> int:
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
    def __init__(self, spec: LayerSpec, message: str):
        super().__init__(message)
        self.spec, self.message = spec, message


def build(spec: Spec, input_shape: tuple[int, ...]) -> Network:
    """Build a network for `spec` on inputs of `input_shape`; shape errors name the layer."""
    try:
        return Network(spec.layers, input_shape)
    except LayerShapeError as exc:
        raise spec.error(exc.spec.path, f"{exc.spec.type} '{exc.spec.name}': {exc.message}") from None
