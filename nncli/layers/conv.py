"""Convolution and pooling layers: conv2d, max_pool2d, avg_pool2d.

Inputs are channels-first, (channels, height, width) per example, like the
Theano tutorials (and PyTorch). ``conv2d`` calls nncli.layers.convolution's
``convolve``: XLA's native convolution (an Op of nncli's) under JAX on a GPU,
else im2col from the graph's own operations (see that module).

Pooling with non-overlapping windows (stride == pool_size, the default)
is a reshape and a max/mean over the window axes (the remainder rows and
columns are cropped, like Keras' 'valid'). Overlapping windows are reduced
separably: an elementwise maximum (sum) of the ph row-offset slices, then of
the pw column-offset slices of that, i.e. ph + pw slices instead of ph * pw.
Measured under JAX on (64, 32, 32, 32), forward + backward of a 3x3 stride-1
max pool: 50 ms separable, 138 ms as a chain over all 9 offset slices, 230 ms
stacking the 9 slices and reducing the stacked axis (bench/bench_cnn.py).
"""

from __future__ import annotations

from functools import reduce

import numpy as np
import pytensor.tensor as pt

from nncli import initializers
from nncli.layers.base import LAYERS, Layer, ShapeError, activation_key, initializer_key
from nncli.layers.convolution import convolve, out_size, same_pads
from nncli.schema import (Invalid, Key, boolean, choice, described, int_tuple, integer, json_schema_of, optional,
                          show)


def _image_shape(layer_type: str, input_shape) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        if len(input_shape) == 1:
            side = int(round(np.sqrt(input_shape[0])))
            if side * side == input_shape[0]:
                hint = f"; add {{type: reshape, shape: [1, {side}, {side}]}} first"
            else:
                hint = "; add a reshape layer to (channels, height, width) first"
        elif len(input_shape) == 2:
            hint = f"; add {{type: reshape, shape: [1, {input_shape[0]}, {input_shape[1]}]}} first"
        else:
            hint = ""
        raise ShapeError(f"{layer_type} expects 3-D (channels, height, width) input per example, "
                         f"got shape {tuple(input_shape)}{hint}")
    return tuple(int(d) for d in input_shape)


def _static_image_shape(layer: Layer, x) -> tuple[int, int, int]:
    """(channels, height, width) of the symbolic input: from validation, else from x's static type."""
    shape = getattr(layer, "image_shape", None)
    if shape is None:
        if x.ndim != 4 or any(d is None for d in x.type.shape[1:]):
            raise ShapeError(f"{layer.name}: needs a 4-D input with known (channels, height, width), "
                             f"got static shape {x.type.shape}")
        shape = tuple(int(d) for d in x.type.shape[1:])
    return shape


def padding_key() -> Key:
    """conv2d's padding: valid | same | an int (all four sides) | [height, width] (each on both of its
    sides) | [[top, bottom], [left, right]]; explicit pads are zeros, as PyTorch's padding= and
    Keras' ZeroPadding2D. Normalised to "valid", "same" or ((top, bottom), (left, right))."""
    amount = integer(min=0, max=100_000)

    def check(value, path):
        if isinstance(value, str):
            return choice("valid", "same")(value, path)
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, list) for v in value):
            return tuple(tuple(int_tuple(2, min=0)(v, f"{path}[{i}]")) for i, v in enumerate(value))
        if isinstance(value, (int, float, list)) and not isinstance(value, bool):
            try:
                h, w = int_tuple(2, min=0)(value, path)
            except Invalid as exc:
                raise Invalid(path, "expected valid, same, an integer >= 0, [height, width] or "
                                    f"[[top, bottom], [left, right]], got {show(value)}") from exc
            if max(h, w) > 100_000:
                amount(max(h, w), path)
            return ((h, h), (w, w))
        raise Invalid(path, "expected valid, same, an integer >= 0, [height, width] or "
                            f"[[top, bottom], [left, right]], got {show(value)}")

    pair = {"type": "array", "items": json_schema_of(amount), "minItems": 2, "maxItems": 2}
    schema = {"anyOf": [{"enum": ["valid", "same"]}, json_schema_of(amount), pair,
                        {"type": "array", "items": pair, "minItems": 2, "maxItems": 2}]}
    return Key(described(check, lambda: schema), "valid",
               "valid: windows inside the input; same: zero-pad so output size = ceil(input / stride) "
               "(Keras: the odd pad after); an int, [height, width] or [[top, bottom], [left, right]]: "
               "that many zeros on each side (PyTorch's padding=)")


@LAYERS.register("conv2d")
class Conv2D(Layer):
    """2-D cross-correlation (what deep-learning libraries call convolution), channels first.

    W has shape (filters, channels, kh, kw), b has shape (filters,).
    """

    kind = "conv"
    keys = {
        "filters": Key(integer(min=1, max=100_000), doc="number of output channels"),
        "kernel_size": Key(int_tuple(2), doc="window size: an int or [height, width]"),
        "stride": Key(int_tuple(2), (1, 1), "step between windows: an int or [height, width]"),
        "padding": padding_key(),
        "dilation": Key(int_tuple(2), (1, 1), "spacing between kernel taps (atrous): an int or [height, width]"),
        "activation": activation_key(),
        "initializer": initializer_key("glorot_uniform"),
        "use_bias": Key(boolean(), True),
    }
    has_activation = True

    def pads(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) zeros for an (h, w) input."""
        (kh, kw), (sh, sw), (dh, dw) = self.config["kernel_size"], self.config["stride"], self.config["dilation"]
        pad = self.config["padding"]
        if pad == "same":
            return same_pads(h, kh, sh, dh), same_pads(w, kw, sw, dw)
        if pad == "valid":
            return (0, 0), (0, 0)
        return pad

    def output_shape(self, input_shape):
        c, h, w = self.image_shape = _image_shape("conv2d", input_shape)
        (kh, kw), (sh, sw), (dh, dw) = self.config["kernel_size"], self.config["stride"], self.config["dilation"]
        ph, pw = self.pads(h, w)
        ho, wo = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
        if ho < 1 or wo < 1:
            span = [(kh - 1) * dh + 1, (kw - 1) * dw + 1]
            raise ShapeError(f"conv2d kernel_size {[kh, kw]} (spanning {span} with dilation {[dh, dw]}) is larger "
                             f"than its padded input: height and width {[h, w]} plus padding {[list(ph), list(pw)]} "
                             f"(input shape {tuple(input_shape)}); use a smaller kernel_size or more padding "
                             f"(padding: same)")
        return (self.config["filters"], ho, wo)

    def init_params(self, input_shape, rng):
        kh, kw = self.config["kernel_size"]
        f = self.config["filters"]
        params = {"W": initializers.make(self.config["initializer"], (f, input_shape[0], kh, kw), rng)}
        if self.config["use_bias"]:
            params["b"] = np.zeros(f, dtype="float32")
        return params

    def linear(self, x, params, ctx):
        c, h, w = _static_image_shape(self, x)
        z = convolve(x, params["W"], self.config["stride"], self.pads(h, w), self.config["dilation"],
                     w_shape=(self.config["filters"], c, *self.config["kernel_size"]))
        if "b" in params:
            z = z + params["b"].dimshuffle("x", 0, "x", "x")
        return z


class _Pool2D(Layer):
    kind = "conv"
    type_name = ""   # the YAML word, in messages
    keys = {
        "pool_size": Key(int_tuple(2), (2, 2), "window size: an int or [height, width]"),
        "stride": Key(optional(int_tuple(2)), None,
                      "step between windows (default: pool_size, i.e. non-overlapping)"),
    }

    def _geometry(self):
        ph, pw = self.config["pool_size"]
        sh, sw = self.config["stride"] or (ph, pw)
        return ph, pw, sh, sw

    def output_shape(self, input_shape):
        c, h, w = self.image_shape = _image_shape(self.type_name, input_shape)
        ph, pw, sh, sw = self._geometry()
        if ph > h or pw > w:
            raise ShapeError(f"{self.type_name} pool_size {[ph, pw]} is larger than its input's height and width "
                             f"{[h, w]} (input shape {tuple(input_shape)}); use a smaller pool_size")
        return (c, out_size(h, ph, sh, (0, 0)), out_size(w, pw, sw, (0, 0)))

    def reduce(self, x, axis):
        """Reduce the window axes `axis` of a reshaped input."""
        raise NotImplementedError

    def combine(self, a, b):
        """Combine two window slices elementwise (the separable, overlapping path)."""
        raise NotImplementedError

    def finish(self, y):
        return y

    def linear(self, x, params, ctx):
        ph, pw, sh, sw = self._geometry()
        c, h, w = _static_image_shape(self, x)
        ho, wo = out_size(h, ph, sh, (0, 0)), out_size(w, pw, sw, (0, 0))
        if (ph, pw) == (sh, sw):
            x = x[:, :, :ho * ph, :wo * pw]
            return self.reduce(x.reshape((x.shape[0], c, ho, ph, wo, pw)), (3, 5))
        rows = reduce(self.combine, [x[:, :, i:i + sh * (ho - 1) + 1:sh, :] for i in range(ph)])
        return self.finish(reduce(self.combine, [rows[:, :, :, j:j + sw * (wo - 1) + 1:sw] for j in range(pw)]))


@LAYERS.register("max_pool2d")
class MaxPool2D(_Pool2D):
    """The maximum of each window, per channel."""

    type_name = "max_pool2d"

    def reduce(self, x, axis):
        return pt.max(x, axis=axis)

    def combine(self, a, b):
        return pt.maximum(a, b)


@LAYERS.register("avg_pool2d")
class AvgPool2D(_Pool2D):
    """The mean of each window, per channel."""

    type_name = "avg_pool2d"

    def _scale(self, x):
        ph, pw = self.config["pool_size"]
        return np.asarray(1.0 / (ph * pw), dtype=x.dtype)

    def reduce(self, x, axis):
        return pt.sum(x, axis=axis, acc_dtype=x.dtype) * self._scale(x)

    def combine(self, a, b):
        return a + b

    def finish(self, y):
        return y * self._scale(y)
