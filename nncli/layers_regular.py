"""Regularisation layers: dropout and batch_norm.

Both behave differently in the training graph and the inference graph
built from the same spec (``ctx.training``).

Dropout's mask is a counter-based hash computed inside the graph from
integers only, not a random-number generator: element ``i`` of the
flattened batch at training step ``t`` of the layer named ``name`` in a run
with seed ``s`` is kept when

    key  = mix(mix(s) ^ crc32(name))                  (a Python constant)
    h    = mix(mix(i ^ mix(key + t)) + key)           (uint32 arithmetic)
    keep = (h >> 8) * 2**-24 < 1 - rate

where ``mix`` is the "lowbias32" integer finaliser. The step counter ``t``
is the run's ``iterations`` variable, which checkpoints save and --resume
restores, so masks continue exactly after a resume, and the same mask comes
out of numpy, JAX and NUMBA (every product and sum is masked back to 32 bits
explicitly, because NUMBA's fused loops keep uint32 intermediates in 64
bits). PyTensor's RandomStream is not used: the JAX backend copies its state
at compile time, so it would not advance or resume.

Batch normalisation follows Keras: the batch mean and (biased) variance in
training, the running averages in inference, ``running = momentum * running
+ (1 - momentum) * batch`` after each training step. Batch statistics are
weighted by ``ctx.sample_weight``, so the zero-weight padding rows of the last
batch do not pollute them.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytensor.tensor as pt

from nncli.layers import LAYERS, Layer, ShapeError
from nncli.schema import Key, boolean, number

_U32 = 0xFFFFFFFF


def mix32(x: int) -> int:
    """lowbias32 (Chris Wellons) on a Python int: the constant part of the dropout key."""
    x &= _U32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _U32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _U32
    x ^= x >> 16
    return x


def _u32(value: int):
    return pt.constant(np.uint32(value & _U32), dtype="uint32")


def _mix32_graph(x):
    """lowbias32 on a symbolic uint32 tensor; shifts are divisions by powers of two (exact for unsigned)."""
    mask = _u32(_U32)
    x = x ^ (x // _u32(1 << 16))
    x = (x * _u32(0x7FEB352D)) & mask
    x = x ^ (x // _u32(1 << 15))
    x = (x * _u32(0x846CA68B)) & mask
    return x ^ (x // _u32(1 << 16))


def dropout_key(seed: int, layer_name: str) -> int:
    return mix32(mix32(seed) ^ zlib.crc32(layer_name.encode("utf-8")))


def keep_threshold(rate: float) -> int:
    """Largest integer bound T with: (h >> 8) < T  <=>  (h >> 8) * 2**-24 < 1 - rate."""
    return int(np.ceil((1.0 - rate) * 2.0**24))


def dropout_keep_mask(shape, iterations, seed: int, layer_name: str, rate: float):
    """Symbolic boolean keep-mask of a static `shape` (batch axis included) for one training step."""
    size = int(np.prod(shape))
    key = dropout_key(seed, layer_name)
    step = _mix32_graph((pt.cast(iterations, "uint32") + _u32(key)) & _u32(_U32))
    idx = pt.arange(size, dtype="uint32")
    h = _mix32_graph((_mix32_graph(idx ^ step) + _u32(key)) & _u32(_U32))
    keep = (h // _u32(1 << 8)) < _u32(keep_threshold(rate))
    return keep.reshape(tuple(shape))


@LAYERS.register("dropout")
class Dropout(Layer):
    """Inverted dropout: in training, zero each value with probability `rate` and scale the rest by 1/(1-rate)."""

    keys = {"rate": Key(number(min=0.0, max=1.0, max_open=True), doc="fraction of values dropped, in [0, 1)")}

    def output_shape(self, input_shape):
        self.example_shape = tuple(input_shape)
        return input_shape

    def linear(self, x, params, ctx):
        rate = self.config["rate"]
        if not ctx.training or rate == 0.0:
            return x
        shape = x.type.shape
        if any(d is None for d in shape):
            example = getattr(self, "example_shape", None)
            if shape[0] is None or example is None:
                raise ShapeError(f"{self.name}: dropout needs a static batch size, got static shape {shape}")
            shape = (shape[0], *example)
        if "iterations" not in ctx.state:
            raise ValueError(f"{self.name}: the training graph needs ctx.state['iterations'] (the step counter)")
        iterations = ctx.state["iterations"]
        keep = dropout_keep_mask(shape, iterations, int(ctx.seed), self.name, rate)
        scale = np.asarray(1.0 / (1.0 - rate), dtype=x.dtype)
        return pt.switch(keep, x * scale, pt.zeros_like(x))


@LAYERS.register("batch_norm")
class BatchNorm(Layer):
    """Normalise each feature (each channel of (channels, height, width) input) to zero mean, unit variance.

    Statistics are over the batch axis, and over height and width for 3-D
    input; for 2-D (steps, features) input over the batch and step axes.
    """

    keys = {
        "momentum": Key(number(min=0.0, max=1.0), 0.99, "running = momentum * running + (1 - momentum) * batch"),
        "epsilon": Key(number(min=0.0, min_open=True), 1e-3, "added to the variance"),
        "center": Key(boolean(), True, "learn an offset beta"),
        "scale": Key(boolean(), True, "learn a scale gamma"),
    }

    @staticmethod
    def _feature_axis(input_shape) -> int:
        """Axis of the normalised features in the per-example shape."""
        return 0 if len(input_shape) == 3 else len(input_shape) - 1

    def output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise ShapeError(f"batch_norm expects at least 1-D input per example, got shape {tuple(input_shape)}")
        return input_shape

    def _features(self, input_shape) -> int:
        return int(input_shape[self._feature_axis(input_shape)])

    def init_params(self, input_shape, rng):
        n = self._features(input_shape)
        params = {}
        if self.config["scale"]:
            params["gamma"] = np.ones(n, dtype="float32")
        if self.config["center"]:
            params["beta"] = np.zeros(n, dtype="float32")
        return params

    def init_state(self, input_shape):
        n = self._features(input_shape)
        return {"running_mean": np.zeros(n, dtype="float32"), "running_var": np.ones(n, dtype="float32")}

    def linear(self, x, params, ctx):
        nd = x.ndim
        feat = 1 + self._feature_axis((None,) * (nd - 1))   # axis in the batched tensor
        reduce_axes = tuple(a for a in range(nd) if a != feat)
        pattern = ["x"] * nd
        pattern[feat] = 0

        def bcast(v):
            return v.dimshuffle(*pattern)

        dtype = x.dtype
        eps = np.asarray(self.config["epsilon"], dtype=dtype)
        if ctx.training:
            w = ctx.sample_weight
            if w is None:
                w = pt.ones((x.shape[0],), dtype=dtype)
            w_b = w.dimshuffle(0, *(["x"] * (nd - 1)))
            per_example = 1
            for a in reduce_axes[1:]:
                per_example = per_example * x.shape[a]
            total = pt.maximum(pt.sum(w, acc_dtype=dtype), np.asarray(1e-12, dtype=dtype)) * pt.cast(per_example, dtype)
            mean = pt.sum(w_b * x, axis=reduce_axes, acc_dtype=dtype) / total
            centred = x - bcast(mean)
            var = pt.sum(w_b * pt.sqr(centred), axis=reduce_axes, acc_dtype=dtype) / total
            m = np.asarray(self.config["momentum"], dtype=dtype)
            one_m = np.asarray(1.0 - self.config["momentum"], dtype=dtype)
            rm, rv = params["running_mean"], params["running_var"]
            ctx.updates.append((rm, pt.cast(m * rm + one_m * mean, rm.dtype)))
            ctx.updates.append((rv, pt.cast(m * rv + one_m * var, rv.dtype)))
            y = centred / bcast(pt.sqrt(var + eps))
        else:
            y = (x - bcast(params["running_mean"])) / bcast(pt.sqrt(params["running_var"] + eps))
        if "gamma" in params:
            y = y * bcast(params["gamma"])
        if "beta" in params:
            y = y + bcast(params["beta"])
        return y


