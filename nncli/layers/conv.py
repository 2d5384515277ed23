"""Convolution and pooling layers: conv2d, max_pool2d, avg_pool2d.

Inputs are channels-first, (channels, height, width) per example, like the
Theano tutorials (and PyTorch). PyTensor 3 has no convolution op, so
``conv2d`` is built from the graph's own operations (im2col): the
kernel-offset slices of the (zero-padded) input are stacked into patches
and contracted with the filters in ONE tensordot. That differentiates on
every backend and runs as a single matrix product under JAX.

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
from nncli.schema import Key, boolean, choice, int_tuple, integer, optional


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


def _out_size(size: int, k: int, s: int, padding: str) -> int:
    if padding == "same":
        return -(-size // s)
    return (size - k) // s + 1


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """Keras/TensorFlow 'same': total padding split with the extra row/column after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _window_slices(x, kh: int, kw: int, sh: int, sw: int, ho: int, wo: int) -> list:
    """The kh*kw strided slices x[:, :, i::sh, j::sw] of output size (ho, wo), offset (i, j) row-major."""
    return [x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]


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
        "padding": Key(choice("valid", "same"), "valid",
                       "valid: windows inside the input; same: zero-pad so output size = ceil(input / stride)"),
        "activation": activation_key(),
        "initializer": initializer_key("glorot_uniform"),
        "use_bias": Key(boolean(), True),
    }
    has_activation = True

    def output_shape(self, input_shape):
        c, h, w = self.image_shape = _image_shape("conv2d", input_shape)
        (kh, kw), (sh, sw) = self.config["kernel_size"], self.config["stride"]
        pad = self.config["padding"]
        if pad == "valid" and (kh > h or kw > w):
            raise ShapeError(f"conv2d kernel_size {[kh, kw]} is larger than its input's height and width "
                             f"{[h, w]} (input shape {tuple(input_shape)}); use a smaller kernel_size "
                             f"or padding: same")
        return (self.config["filters"], _out_size(h, kh, sh, pad), _out_size(w, kw, sw, pad))

    def init_params(self, input_shape, rng):
        kh, kw = self.config["kernel_size"]
        f = self.config["filters"]
        params = {"W": initializers.make(self.config["initializer"], (f, input_shape[0], kh, kw), rng)}
        if self.config["use_bias"]:
            params["b"] = np.zeros(f, dtype="float32")
        return params

    def linear(self, x, params, ctx):
        (kh, kw), (sh, sw) = self.config["kernel_size"], self.config["stride"]
        f = self.config["filters"]
        c, h, w = _static_image_shape(self, x)
        if self.config["padding"] == "same":
            (pt_, pb), (pl, pr) = same_pads(h, kh, sh), same_pads(w, kw, sw)
            if pt_ or pb or pl or pr:
                padded = pt.zeros((x.shape[0], c, h + pt_ + pb, w + pl + pr), dtype=x.dtype)
                x = pt.set_subtensor(padded[:, :, pt_:pt_ + h, pl:pl + w], x)
            h, w = h + pt_ + pb, w + pl + pr
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
        if kh == 1 and kw == 1:
            patches = x[:, :, ::sh, ::sw][:, :, :ho, :wo]                           # (B, C, Ho, Wo)
        else:
            patches = pt.stack(_window_slices(x, kh, kw, sh, sw, ho, wo), axis=2)  # (B, C, K, Ho, Wo)
            patches = patches.reshape((x.shape[0], c * kh * kw, ho, wo))
        z = pt.tensordot(patches, params["W"].reshape((f, c * kh * kw)), axes=[[1], [1]])  # (B, Ho, Wo, F)
        if "b" in params:
            z = z + params["b"]
        return z.dimshuffle(0, 3, 1, 2)


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
        return (c, (h - ph) // sh + 1, (w - pw) // sw + 1)

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
        ho, wo = (h - ph) // sh + 1, (w - pw) // sw + 1
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
