"""1-D pooling over time and global pooling.

- ``max_pool1d``, ``avg_pool1d``: (time, channels) -> (time', channels), as Keras MaxPooling1D /
  AveragePooling1D (channels last). Windows of ``pool_size`` steps every ``stride`` steps (default:
  pool_size). ``valid``: windows inside the input, T' = floor((T - pool_size) / stride) + 1.
  ``same``: TensorFlow/Keras arithmetic, T' = ceil(T / stride), total = max((T' - 1) * stride +
  pool_size - T, 0), left = total // 2, the odd step after. Padded steps never count: a max ignores
  them (padding is -inf), and an average divides by the number of REAL steps in its window, as
  Keras (TensorFlow's avg_pool) does; PyTorch's AvgPool1d would count them unless
  ``count_include_pad=False``.
- ``global_avg_pool1d``, ``global_max_pool1d``: (time, channels) -> (channels,), as Keras
  GlobalAveragePooling1D / GlobalMaxPooling1D.
- ``global_avg_pool2d``, ``global_max_pool2d``: (channels, height, width) -> (channels,), channels
  first like conv2d (PyTorch's AdaptiveAvgPool2d(1) then flatten).
"""

from __future__ import annotations

from functools import reduce

import numpy as np
import pytensor.tensor as pt

from nncli.layers.base import LAYERS, Layer, ShapeError
from nncli.layers.conv1d import example_shape, pad_time, pads_1d, sequence_shape, time_slices
from nncli.layers.convolution import out_size
from nncli.schema import Key, choice, integer, optional


class _Pool1D(Layer):
    kind = "conv"
    type_name = ""   # the YAML word, in messages
    keys = {
        "pool_size": Key(integer(min=1, max=100_000), 2, "window length in time steps"),
        "stride": Key(optional(integer(min=1, max=100_000)), None,
                      "step between windows (default: pool_size, i.e. non-overlapping)"),
        "padding": Key(choice("valid", "same"), "valid",
                       "valid: windows inside the input; same: output ceil(time / stride), padded steps "
                       "not counted"),
    }

    def geometry(self, input_shape) -> tuple[int, int, int, int, int, int, int]:
        """(time, channels, pool, stride, left pad, right pad, output time)."""
        t, c = sequence_shape(self.type_name, input_shape)
        p = self.config["pool_size"]
        s = self.config["stride"] or p
        left, right = pads_1d(t, p, s, self.config["padding"])
        if t + left + right < p:
            raise ShapeError(f"{self.type_name} pool_size {p} is longer than its input's {t} time steps "
                             f"(input shape {(t, c)}); use a smaller pool_size or padding: same")
        return t, c, p, s, left, right, out_size(t, p, s, (left, right))

    def output_shape(self, input_shape):
        self.seen_shape = tuple(int(d) for d in input_shape)
        g = self.geometry(input_shape)
        return (g[-1], g[1])

    def _geometry_of(self, x):
        return self.geometry(example_shape(self, x, getattr(self, "seen_shape", None)))


@LAYERS.register("max_pool1d")
class MaxPool1D(_Pool1D):
    """The maximum of each window of time steps, per channel (Keras MaxPooling1D)."""

    type_name = "max_pool1d"

    def linear(self, x, params, ctx):
        t, c, p, s, left, right, out = self._geometry_of(x)
        if p == s and not (left or right):
            x = x[:, :out * p, :]
            return pt.max(x.reshape((x.shape[0], out, p, c)), axis=2)
        x = pad_time(x, left, right, t, c, value=-np.inf)
        return reduce(pt.maximum, time_slices(x, p, 1, s, out))


@LAYERS.register("avg_pool1d")
class AvgPool1D(_Pool1D):
    """The mean of each window's real (unpadded) time steps, per channel (Keras AveragePooling1D)."""

    type_name = "avg_pool1d"

    def linear(self, x, params, ctx):
        t, c, p, s, left, right, out = self._geometry_of(x)
        if p == s and not (left or right):
            x = x[:, :out * p, :]
            return pt.sum(x.reshape((x.shape[0], out, p, c)), axis=2, acc_dtype=x.dtype) * np.asarray(1.0 / p, x.dtype)
        starts = np.arange(out) * s - left
        counts = np.minimum(starts + p, t) - np.maximum(starts, 0)            # real steps per window, >= 1
        x = pad_time(x, left, right, t, c)
        total = reduce(lambda a, b: a + b, time_slices(x, p, 1, s, out))
        return total * np.asarray(1.0 / counts, dtype=x.dtype)[:, None]


class _Global(Layer):
    kind = "conv"
    type_name = ""
    rank = 2          # per-example rank: 2 (time, channels) or 3 (channels, height, width)

    def output_shape(self, input_shape):
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != self.rank:
            wanted = "(time, channels)" if self.rank == 2 else "(channels, height, width)"
            raise ShapeError(f"{self.type_name} expects {self.rank}-D {wanted} input per example, got shape {shape}")
        return (shape[-1],) if self.rank == 2 else (shape[0],)

    def axes(self):
        return (1,) if self.rank == 2 else (2, 3)


@LAYERS.register("global_avg_pool1d")
class GlobalAvgPool1D(_Global):
    """The mean over time, per channel: (time, channels) -> (channels,) (Keras GlobalAveragePooling1D)."""

    type_name = "global_avg_pool1d"

    def linear(self, x, params, ctx):
        return pt.mean(x, axis=self.axes(), acc_dtype=x.dtype)


@LAYERS.register("global_max_pool1d")
class GlobalMaxPool1D(_Global):
    """The maximum over time, per channel: (time, channels) -> (channels,) (Keras GlobalMaxPooling1D)."""

    type_name = "global_max_pool1d"

    def linear(self, x, params, ctx):
        return pt.max(x, axis=self.axes())


@LAYERS.register("global_avg_pool2d")
class GlobalAvgPool2D(_Global):
    """The mean over height and width, per channel: (channels, height, width) -> (channels,)."""

    type_name = "global_avg_pool2d"
    rank = 3

    def linear(self, x, params, ctx):
        return pt.mean(x, axis=self.axes(), acc_dtype=x.dtype)


@LAYERS.register("global_max_pool2d")
class GlobalMaxPool2D(_Global):
    """The maximum over height and width, per channel: (channels, height, width) -> (channels,)."""

    type_name = "global_max_pool2d"
    rank = 3

    def linear(self, x, params, ctx):
        return pt.max(x, axis=self.axes())
