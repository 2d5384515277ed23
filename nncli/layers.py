"""Layers, by YAML name.

A layer declares its config keys (validated by nncli.schema), computes its
output shape from its input shape at validation time (shapes exclude the
batch axis), creates its initial parameters with numpy, and builds its
symbolic forward pass. A layer with an ``activation`` key returns its
pre-activation from :meth:`Layer.linear`; the network applies the
activation, so losses can use the stable pre-activation form.

Other layer families (convolution, pooling, recurrent, ...) live in their
own modules and register into the same ``LAYERS`` registry; importing
``nncli.layers`` loads them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytensor.tensor as pt

from nncli import initializers
from nncli.activations import ACTIVATIONS
from nncli.initializers import INITIALIZERS
from nncli.registry import Registry
from nncli.schema import Key, boolean, integer, list_of, name_in

LAYERS: Registry = Registry("layer type")

Shape = tuple[int, ...]


class ShapeError(Exception):
    """The layer cannot take this input shape; the message says why and what would work."""


@dataclass
class Context:
    """What a forward pass may need besides its input.

    training: build the training graph (dropout active, batch statistics).
    sample_weight: symbolic (batch,) weights, 0 for padding rows of the last batch.
    updates: extra (shared, new_value) pairs a layer adds in training (e.g. running means).
    state: symbolic per-run values shared by layers (e.g. the dropout step counter).
    """

    training: bool
    sample_weight: Any = None
    updates: list = field(default_factory=list)
    state: dict = field(default_factory=dict)
    seed: int = 0


class Layer:
    keys: dict[str, Key] = {}
    #: name of the key holding the activation, if this layer has one applied after `linear`
    has_activation: bool = False

    def __init__(self, name: str, config: dict[str, Any]):
        self.name = name
        self.config = config

    @property
    def activation(self) -> str | None:
        return self.config.get("activation") if self.has_activation else None

    def output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def init_params(self, input_shape: Shape, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Trainable parameters, in a fixed order."""
        return {}

    def init_state(self, input_shape: Shape) -> dict[str, np.ndarray]:
        """Non-trainable values saved with the parameters (e.g. running statistics)."""
        return {}

    def linear(self, x, params: dict, ctx: Context):
        """The symbolic forward pass (before the activation, when the layer has one)."""
        return x


def activation_key() -> Key:
    return Key(name_in(ACTIVATIONS), "linear", "activation function")


def initializer_key(default: str) -> Key:
    return Key(name_in(INITIALIZERS), default, "weight initializer")


def _rank_error(layer_type: str, wanted: str, shape: Shape, hint: str = "") -> ShapeError:
    return ShapeError(f"{layer_type} expects {wanted} input per example, got shape {shape}{hint}")


@LAYERS.register("dense")
class Dense(Layer):
    """y = activation(x W + b) on the last axis."""

    keys = {
        "units": Key(integer(min=1, max=1_000_000), doc="number of output units"),
        "activation": activation_key(),
        "initializer": initializer_key("glorot_uniform"),
        "use_bias": Key(boolean(), True),
    }
    has_activation = True

    def output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise _rank_error("dense", "at least 1-D", input_shape)
        return (*input_shape[:-1], self.config["units"])

    def init_params(self, input_shape, rng):
        shape = (input_shape[-1], self.config["units"])
        params = {"W": initializers.make(self.config["initializer"], shape, rng)}
        if self.config["use_bias"]:
            params["b"] = np.zeros(self.config["units"], dtype="float32")
        return params

    def linear(self, x, params, ctx):
        z = pt.dot(x, params["W"]) if x.ndim == 2 else pt.tensordot(x, params["W"], axes=[[x.ndim - 1], [0]])
        return z + params["b"] if "b" in params else z


@LAYERS.register("flatten")
class Flatten(Layer):
    """Every axis but the batch axis into one."""

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def linear(self, x, params, ctx):
        return x.reshape((x.shape[0], -1)) if x.ndim != 2 else x


@LAYERS.register("reshape")
class Reshape(Layer):
    """Reshape each example, e.g. 64 pixels to [1, 8, 8] (channels, height, width)."""

    keys = {"shape": Key(list_of(integer(min=1), min_len=1, max_len=8), doc="target shape per example")}

    def output_shape(self, input_shape):
        target = tuple(self.config["shape"])
        if int(np.prod(target)) != int(np.prod(input_shape)):
            raise ShapeError(f"reshape cannot turn shape {input_shape} ({int(np.prod(input_shape))} values) "
                             f"into {list(target)} ({int(np.prod(target))} values)")
        return target

    def linear(self, x, params, ctx):
        return x.reshape((x.shape[0], *self.config["shape"]))


# The other layer families register into LAYERS when imported (after the base classes above).
from nncli import layers_conv, layers_recurrent, layers_regular  # noqa: E402,F401  isort: skip
