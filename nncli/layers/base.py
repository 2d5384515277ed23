"""What every layer shares: the ``LAYERS`` registry, :class:`Layer`, :class:`Context`, :class:`ShapeError`.

A layer declares its config keys (validated by nncli.schema), computes its
output shape from its input shape at validation time (shapes exclude the
batch axis), creates its initial parameters with numpy, and builds its
symbolic forward pass. A layer with an ``activation`` key returns its
pre-activation from :meth:`Layer.linear`; the network applies the
activation, so losses can use the stable pre-activation form.

Each family module (core, conv, conv1d, pooling, recurrent, dropout, normalization, attention)
registers its layers into ``LAYERS``; ``nncli.layers`` imports them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nncli.activations import ACTIVATIONS
from nncli.initializers import INITIALIZERS
from nncli.registry import Registry
from nncli.schema import Key, name_in

LAYERS: Registry = Registry("layer type")

Shape = tuple[int, ...]

#: the kinds of layer `backend.choose` tells apart (a network with a recurrent layer is
#: "recurrent", else with a conv layer "conv", else "dense"); "other" decides nothing
KINDS = ("dense", "conv", "recurrent", "other")


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
    """One layer. A layer takes one input unless it declares ``n_inputs``.

    Multi-input layers (merge layers, attention with ``inputs: [q, kv]``) set ``n_inputs`` to
    (fewest, most) inputs (most None: no limit). Every method of such a layer receives LISTS,
    one entry per input in the order of the layer's ``inputs:``, even when it is given one:
    ``output_shape(shapes)``, ``init_params(shapes, rng)``, ``init_state(shapes)`` and
    ``linear(xs, params, ctx)``. Single-input layers (the default ``n_inputs = (1, 1)``) receive
    one shape and one tensor, as they always have.
    """

    keys: dict[str, Key] = {}
    #: (fewest, most) inputs; anything but (1, 1) makes the layer a multi-input layer (see above)
    n_inputs: tuple[int, int | None] = (1, 1)
    #: name of the key holding the activation, if this layer has one applied after `linear`
    has_activation: bool = False
    #: what the layer computes, for the backend choice: one of KINDS
    kind: str = "other"

    def __init__(self, name: str, config: dict[str, Any]):
        self.name = name
        self.config = config

    @classmethod
    def multi_input(cls) -> bool:
        """Whether the layer's methods receive lists (one entry per input)."""
        return tuple(cls.n_inputs) != (1, 1)

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
