"""Dropout: active in the training graph only (``ctx.training``), the identity in inference.

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
"""

from __future__ import annotations

import zlib

import numpy as np
import pytensor.tensor as pt

from nncli.layers.base import LAYERS, Layer, ShapeError
from nncli.schema import Key, number

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
