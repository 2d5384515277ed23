"""The core layers: dense, flatten, reshape, embedding and activation.

``embedding`` maps integer token ids to vectors: input per example (time,)
(any shape works; the output appends output_dim). nncli's data layer reads
inputs as float32, so ids arrive as floats: the graph rounds them to the
nearest integer, casts to int32 and CLIPS them into [0, input_dim - 1], so
an out-of-range id maps to the first/last row instead of failing inside a
compiled function (JAX would clip silently anyway; NUMBA would read out of
bounds). Use ``normalize: none`` (the default) with an embedding, since
normalised ids are not ids.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from nncli import initializers
from nncli.layers.base import LAYERS, Layer, Shape, ShapeError, activation_key, initializer_key
from nncli.activations import ACTIVATIONS
from nncli.schema import Key, boolean, integer, list_of, name_in


def _rank_error(layer_type: str, wanted: str, shape: Shape, hint: str = "") -> ShapeError:
    return ShapeError(f"{layer_type} expects {wanted} input per example, got shape {shape}{hint}")


@LAYERS.register("dense")
class Dense(Layer):
    """y = activation(x W + b) on the last axis."""

    kind = "dense"
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


@LAYERS.register("embedding")
class Embedding(Layer):
    """Token ids -> vectors: a lookup in W (input_dim, output_dim).

    Ids are given as numbers (the data is float32): they are rounded, cast to
    int32 and clipped into [0, input_dim - 1] in the graph.
    """

    keys = {
        "input_dim": Key(integer(min=1, max=100_000_000), doc="vocabulary size: ids are 0 .. input_dim - 1"),
        "output_dim": Key(integer(min=1, max=1_000_000), doc="size of each embedding vector"),
        "initializer": initializer_key("uniform"),
    }

    def output_shape(self, input_shape):
        shape = tuple(int(d) for d in input_shape)
        if len(shape) < 1:
            raise ShapeError(f"embedding expects (time,) token ids per example, got shape {shape}")
        return (*shape, self.config["output_dim"])

    def init_params(self, input_shape, rng):
        return {"W": initializers.make(self.config["initializer"],
                                       (self.config["input_dim"], self.config["output_dim"]), rng)}

    def linear(self, x, params, ctx):
        ids = x if x.dtype.startswith("int") else pt.cast(pt.round(x), "int32")
        ids = pt.clip(ids, 0, self.config["input_dim"] - 1)
        # a 1-D lookup reshaped to the static shape: JAX cannot differentiate/compile the N-D
        # advanced index here (PyTensor rewrites it into a reshape with a symbolic shape)
        shape = tuple(x.type.shape)
        shape = shape if all(d is not None for d in shape) else tuple(x.shape[i] for i in range(x.ndim))
        return params["W"][ids.flatten()].reshape((*shape, self.config["output_dim"]))


@LAYERS.register("activation")
class Activation(Layer):
    """An activation function on its own: {type: activation, activation: relu} (any shape)."""

    keys = {"activation": Key(name_in(ACTIVATIONS), doc="activation function")}
    has_activation = True
