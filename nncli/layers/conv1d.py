"""conv1d: 1-D convolution over time, channels last: (time, channels) -> (time', filters).

Channels-last like the recurrent layers, so ``conv1d`` and ``lstm`` stack
directly. It computes cross-correlation (what Keras and PyTorch call
convolution): ``y[t, f] = b[f] + sum_{j, c} x_pad[t * stride + j * dilation, c] W[f, c, j]``.
W has PyTorch's layout (filters, channels, kernel_size), which is also ONNX
Conv's; b has shape (filters,).

Padding (zeros), with k_eff = (kernel_size - 1) * dilation + 1 and T the input length:

- ``valid``: none; T' = floor((T - k_eff) / stride) + 1.
- ``same``: TensorFlow/Keras arithmetic, also for stride > 1 and even kernels:
  T' = ceil(T / stride), total = max((T' - 1) * stride + k_eff - T, 0), left = total // 2,
  right = total - left (the odd step after; PyTorch's ``same``, stride 1 only, splits the same way).
- ``causal``: Keras' causal: left = k_eff - 1, right = 0, so y[t] sees x[<= t * stride] only.
- an integer p: p zeros on both sides (PyTorch's ``padding=p``; Keras has no such form).
- ``[left, right]``: that many zeros before and after.

Then T' = floor((T + left + right - k_eff) / stride) + 1 (PyTorch's formula).

The graph gathers the kernel_size strided time slices of the padded input
(im2col over time, (B, T', k * C)) and multiplies once by W as a (k * C, F)
matrix: one matmul per layer, which JAX and the other backends run well
(PyTensor has no JAX lowering for a native 1-D NN convolution).
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from nncli import initializers
from nncli.layers.base import LAYERS, Layer, ShapeError, activation_key, initializer_key
from nncli.layers.convolution import out_size, same_pads
from nncli.schema import Key, boolean, choice, either, integer, list_of

PADDING_KEY = Key(either(choice("valid", "same", "causal"), integer(min=0, max=100_000),
                         list_of(integer(min=0, max=100_000), 2, 2),
                         expected="valid, same, causal, an integer >= 0 (zeros on both sides) or [left, right]"),
                  "valid", "valid | same (Keras: output ceil(time / stride)) | causal (Keras: left only) | "
                           "an integer on both sides | [left, right]")


def sequence_shape(layer_type: str, input_shape) -> tuple[int, int]:
    """(time, channels) of a per-example shape, or a ShapeError saying what would work."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 2:
        hint = f"; use {{type: reshape, shape: [{shape[0]}, 1]}} for one channel" if len(shape) == 1 else ""
        raise ShapeError(f"{layer_type} expects 2-D (time, channels) input per example, got shape {shape}{hint}")
    return shape


def example_shape(layer, x, seen: tuple | None, what: str = "input", rank: int = 2) -> tuple[int, ...]:
    """The per-example shape of symbolic `x`: its static type where known, else `seen` (the shape
    validation gave output_shape; a shared weight upstream can leave the type's sizes unknown)."""
    shape = tuple(x.type.shape[1:])
    if x.ndim == rank + 1 and all(d is not None for d in shape):
        return tuple(int(d) for d in shape)
    if x.ndim == rank + 1 and seen is not None and all(d in (None, s) for d, s in zip(shape, seen)):
        return tuple(seen)
    raise ShapeError(f"{layer.name}: needs a {rank + 1}-D {what} of known per-example shape, "
                     f"got static shape {x.type.shape}")


def pads_1d(size: int, k_eff: int, stride: int, padding) -> tuple[int, int]:
    """(left, right) zeros for `padding` (see the module docstring)."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        return same_pads(size, k_eff, stride)   # k_eff already includes the dilation
    if padding == "causal":
        return k_eff - 1, 0
    if isinstance(padding, int):
        return padding, padding
    left, right = padding
    return int(left), int(right)


def pad_time(x, left: int, right: int, size: int, channels: int, value: float = 0.0):
    """x (B, T, C) with `left` and `right` steps of `value` around its time axis."""
    if not (left or right):
        return x
    padded = pt.full((x.shape[0], size + left + right, channels), np.asarray(value, dtype=x.dtype), dtype=x.dtype)
    return pt.set_subtensor(padded[:, left:left + size, :], x)


def time_slices(x, taps: int, step: int, stride: int, out: int) -> list:
    """The `taps` slices x[:, j * step :: stride][:, :out] (each (B, out, C)), j = 0 .. taps - 1."""
    return [x[:, j * step:j * step + stride * (out - 1) + 1:stride, :] for j in range(taps)]


@LAYERS.register("conv1d")
class Conv1D(Layer):
    """1-D cross-correlation over time, channels last, as Keras Conv1D / PyTorch Conv1d (see the module)."""

    kind = "conv"
    keys = {
        "filters": Key(integer(min=1, max=100_000), doc="number of output channels"),
        "kernel_size": Key(integer(min=1, max=100_000), doc="window length in time steps"),
        "stride": Key(integer(min=1, max=100_000), 1, "step between windows"),
        "padding": PADDING_KEY,
        "dilation": Key(integer(min=1, max=100_000), 1, "step between the kernel's taps"),
        "activation": activation_key(),
        "initializer": initializer_key("glorot_uniform"),
        "use_bias": Key(boolean(), True),
    }
    has_activation = True

    def geometry(self, input_shape) -> tuple[int, int, int, int, int]:
        """(time, channels, left pad, right pad, output time) of a per-example input shape."""
        t, c = sequence_shape("conv1d", input_shape)
        k, s, d = self.config["kernel_size"], self.config["stride"], self.config["dilation"]
        k_eff = (k - 1) * d + 1
        left, right = pads_1d(t, k_eff, s, self.config["padding"])
        if t + left + right < k_eff:
            span = f" (dilation {d}: it spans {k_eff} steps)" if d > 1 else ""
            raise ShapeError(f"conv1d kernel_size {k}{span} is longer than its padded input: {t} steps + padding "
                             f"{[left, right]} (input shape {(t, c)}); use a smaller kernel_size or dilation, "
                             f"or padding: same")
        return t, c, left, right, out_size(t, k, s, (left, right), d)

    def output_shape(self, input_shape):
        self.seen_shape = tuple(int(d) for d in input_shape)
        return (self.geometry(input_shape)[-1], self.config["filters"])

    def init_params(self, input_shape, rng):
        f, c, k = self.config["filters"], int(input_shape[-1]), self.config["kernel_size"]
        params = {"W": initializers.make(self.config["initializer"], (f, c, k), rng)}
        if self.config["use_bias"]:
            params["b"] = np.zeros(f, dtype="float32")
        return params

    def linear(self, x, params, ctx):
        t, c, left, right, out = self.geometry(example_shape(self, x, getattr(self, "seen_shape", None)))
        k, s, d, f = self.config["kernel_size"], self.config["stride"], self.config["dilation"], self.config["filters"]
        x = pad_time(x, left, right, t, c)
        W = params["W"]
        if k == 1:
            patches = x[:, :s * (out - 1) + 1:s, :]                                         # (B, T', C)
            kernel = W[:, :, 0].T                                                          # (C, F)
        else:
            patches = pt.stack(time_slices(x, k, d, s, out), axis=2)                       # (B, T', k, C)
            patches = patches.reshape((x.shape[0], out, k * c))
            kernel = W.dimshuffle(2, 1, 0).reshape((k * c, f))                             # (k * C, F)
        z = pt.tensordot(patches, kernel, axes=[[2], [0]])                                 # (B, T', F)
        return z + params["b"] if "b" in params else z
