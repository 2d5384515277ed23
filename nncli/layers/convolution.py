"""N-d convolution (cross-correlation) for the conv layers: one entry point, two implementations.

``convolve(x, w, strides, pads, dilation, channels_last=False)`` computes, per example,

    y[o, p] = sum_{c, k} x_padded[c, p * strides + k * dilation] * w[o, c, k]

over 1 or 2 spatial axes (any number works), with explicit zero padding ``pads`` = one
``(before, after)`` pair per spatial axis. Layouts:

- channels first (conv2d): x (batch, channels, *spatial), w (filters, channels, *kernel)
  (PyTorch's layout), y (batch, filters, *spatial');
- ``channels_last=True`` (a conv1d on (time, channels) sequences): x (batch, *spatial, channels),
  w (*kernel, channels, filters) (Keras' layout), y (batch, *spatial', filters).

Two implementations, chosen per graph (``IMPLEMENTATION``; ``auto``: native under the JAX
backend on a GPU, im2col on the CPU and on the C and NUMBA backends):

- **native** (the JAX backend): :class:`Conv`, a PyTensor Op whose JAX implementation is XLA's
  own convolution, ``jax.lax.conv_general_dilated``, registered with PyTensor's JAX dispatch.
  Its gradient is :class:`ConvGrad`, whose JAX implementation is ``jax.vjp`` of the same call
  (XLA's transposed convolutions). Both Ops also have a numpy ``perform`` (any other mode, e.g.
  FAST_COMPILE in the float64 finite-difference tests).
- **im2col** (the C and NUMBA backends, and the reference the tests compare the native Op
  against): the kernel-offset slices of the padded input are stacked into patches and
  contracted with the filters in ONE tensordot, from PyTensor's own operations.

``conv1d`` (nncli/layers/conv1d.py) still builds its own im2col over time; to give it the
native path it would call, on its (batch, time, channels) input and (kernel, channels, filters)
weights: ``convolve(x, W, (stride,), ((left, right),), (dilation,), channels_last=True)``.

Why im2col on the CPU under JAX too (measured on the 2-core AMD EPYC, JAX 0.10, interleaved;
bench/results.md): XLA:CPU's convolution inside the ``lax.scan`` that runs several training
steps per call (nncli/steps.py) is ~8x slower than the same convolution called on its own
(16 steps of conv 16->32 3x3 on 64x16x13x13 with its weight gradient: 3.17 s in scan, 0.38 s
as 16 calls, 0.35 s unrolled), which made bench/run.py's cnn 1.6 -> 11.9 s an epoch; with one
step per call it was level with im2col (1.83 vs 1.66 s), no gain: forward 2.1 vs 7.2 ms on
that layer, but 4.1 vs 1.5 ms on the first (1 input channel), and the two gradients together
level (11.3 vs 11.2 ms). On a GPU XLA's convolution is cuDNN's.
"""

from __future__ import annotations

import itertools
import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

# "auto": native under the JAX mode, im2col otherwise; "native" / "im2col" force one (tests, bench)
IMPLEMENTATION = "auto"


def out_size(size: int, k: int, stride: int, pad: tuple[int, int], dilation: int = 1) -> int:
    """Output length of one spatial axis (PyTorch's formula; <= 0: the window does not fit)."""
    return (size + pad[0] + pad[1] - dilation * (k - 1) - 1) // stride + 1


def same_pads(size: int, k: int, s: int, dilation: int = 1) -> tuple[int, int]:
    """Keras/TensorFlow 'same': output ceil(size / s); the total padding split with the extra one after."""
    k = (k - 1) * dilation + 1
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def use_native() -> bool:
    """auto: the native Op under the JAX backend on a GPU; im2col elsewhere (see the module docstring)."""
    if IMPLEMENTATION != "auto":
        return IMPLEMENTATION == "native"
    if str(pytensor.config.mode).upper() != "JAX":
        return False
    import jax

    device = jax.config.jax_default_device
    return device is not None and getattr(device, "platform", "cpu") != "cpu"


def convolve(x, w, strides, pads, dilation, channels_last: bool = False, w_shape=None):
    """y = x (*) w, see the module docstring; the implementation follows ``use_native()``.

    ``w_shape``: w's shape, where w's type does not know it (a shared variable); x's spatial
    shape must be static (nncli compiles fixed shapes).
    """
    n = len(strides)
    if w_shape is not None:
        w = pt.specify_shape(w, tuple(int(d) for d in w_shape))
    strides, dilation = tuple(int(s) for s in strides), tuple(int(d) for d in dilation)
    pads = tuple((int(a), int(b)) for a, b in pads)
    if not (len(pads) == len(dilation) == n == x.ndim - 2 == w.ndim - 2):
        raise ValueError(f"convolve: {n} spatial axes, but pads {pads}, dilation {dilation}, "
                         f"x {x.ndim}-D, w {w.ndim}-D")
    if use_native():
        return Conv(strides, pads, dilation, channels_last)(x, w)
    return im2col(x, w, strides, pads, dilation, channels_last)


# --- im2col (PyTensor's own operations) ---------------------------------------------------

def im2col(x, w, strides, pads, dilation, channels_last: bool = False):
    """The patches are built channels-last, (batch, *out, channels * kernel), whatever the layout:
    a channels-first x is moved to channels-last once (x's size), so the product reads the
    patches as they lie, where patches built channels-first needed a transposed copy of the
    patch matrix (kernel-size times larger). The same sums in the same order (the same bits);
    bench/results.md: 6.1-6.4 -> 5.0-5.3 ms for bench/run.py's two convolutions forward and back."""
    n = len(strides)
    if channels_last:   # the kernel to (filters, channels, *kernel), as channels-first
        w = w.dimshuffle(n + 1, n, *range(n))
    else:
        x = x.dimshuffle(0, *range(2, n + 2), 1)                                      # (B, *S, C)
    spatial = [int(d) if d is not None else None for d in x.type.shape[1:n + 1]]
    if any(d is None for d in spatial) or any(d is None for d in w.type.shape):
        raise ValueError(f"convolve: needs static spatial and kernel shapes, got x {x.type.shape}, "
                         f"w {w.type.shape}")
    c, kernel = int(w.type.shape[1]), [int(k) for k in w.type.shape[2:]]
    f = int(w.type.shape[0])
    if any(p for pair in pads for p in pair):
        padded = pt.zeros((x.shape[0], *(d + a + b for d, (a, b) in zip(spatial, pads)), x.shape[n + 1]),
                          dtype=x.dtype)
        x = pt.set_subtensor(padded[(slice(None), *(slice(a, a + d) for d, (a, _) in zip(spatial, pads)),
                                     slice(None))], x)
        spatial = [d + a + b for d, (a, b) in zip(spatial, pads)]
    outs = [(d - dl * (k - 1) - 1) // s + 1 for d, k, s, dl in zip(spatial, kernel, strides, dilation)]
    ksize = int(np.prod(kernel))
    if ksize == 1:
        patches = x[(slice(None), *(slice(None, s * (o - 1) + 1, s) for s, o in zip(strides, outs)), slice(None))]
    else:
        slices = [x[(slice(None), *(slice(i * dl, i * dl + s * (o - 1) + 1, s)
                                    for i, dl, s, o in zip(offset, dilation, strides, outs)), slice(None))]
                  for offset in itertools.product(*(range(k) for k in kernel))]    # row-major offsets
        patches = pt.stack(slices, axis=n + 2)                                     # (B, *O, C, K)
    rows = patches.reshape((-1, c * ksize))                                        # (B * O, C * K)
    z = pt.dot(rows, w.reshape((f, c * ksize)).T).reshape((x.shape[0], *outs, f))   # (B, *O, F)
    return z if channels_last else z.dimshuffle(0, n + 1, *range(1, n + 1))


# --- the native Op ----------------------------------------------------------------------------

def _to_first(x, w, n):
    """numpy: channels-last arrays to the channels-first layout."""
    return np.moveaxis(x, -1, 1), np.transpose(w, (n + 1, n, *range(n)))


def _window(offset, dilation, strides, outs):
    return (slice(None), slice(None), *(slice(i * dl, i * dl + s * (o - 1) + 1, s)
                                        for i, dl, s, o in zip(offset, dilation, strides, outs)))


class _ConvBase(Op):
    __props__ = ("strides", "pads", "dilation", "channels_last")

    def __init__(self, strides, pads, dilation, channels_last=False):
        self.strides = tuple(int(s) for s in strides)
        self.pads = tuple((int(a), int(b)) for a, b in pads)
        self.dilation = tuple(int(d) for d in dilation)
        self.channels_last = bool(channels_last)

    @property
    def nd(self) -> int:
        return len(self.strides)

    def out_shape(self, xshape, wshape):
        """Static output shape (None where unknown)."""
        n = self.nd
        if self.channels_last:
            batch, spatial, kernel, f = xshape[0], xshape[1:n + 1], wshape[:n], wshape[n + 1]
        else:
            batch, spatial, kernel, f = xshape[0], xshape[2:], wshape[2:], wshape[0]
        outs = tuple(None if d is None or k is None else out_size(d, k, s, p, dl)
                     for d, k, s, p, dl in zip(spatial, kernel, self.strides, self.pads, self.dilation))
        return (batch, *outs, f) if self.channels_last else (batch, f, *outs)

    def dimension_numbers(self):
        n = self.nd
        sp = "HW"[-n:] if n <= 2 else "".join(chr(ord("a") + i) for i in range(n))
        return (f"N{sp}C", f"{sp}IO", f"N{sp}C") if self.channels_last else (f"NC{sp}", f"OI{sp}", f"NC{sp}")

    def jax_conv(self):
        from jax import lax

        dims = self.dimension_numbers()

        def conv(x, w):
            return lax.conv_general_dilated(x, w, window_strides=self.strides, padding=self.pads,
                                            rhs_dilation=self.dilation, dimension_numbers=dims)
        return conv


class Conv(_ConvBase):
    """y = conv(x, w); JAX: jax.lax.conv_general_dilated (XLA's convolution)."""

    def make_node(self, x, w):
        _ensure_registered()
        x, w = pt.as_tensor_variable(x), pt.as_tensor_variable(w)
        dtype = pytensor.scalar.upcast(x.dtype, w.dtype)
        out = pt.tensor(dtype=dtype, shape=self.out_shape(x.type.shape, w.type.shape))
        return Apply(self, [x, w], [out])

    def perform(self, node, inputs, output_storage):
        x, w = inputs
        n = self.nd
        if self.channels_last:
            x, w = _to_first(x, w, n)
        xp = np.pad(x, [(0, 0), (0, 0), *self.pads])
        kernel = w.shape[2:]
        outs = [out_size(d, k, s, (0, 0), dl) for d, k, s, dl in zip(xp.shape[2:], kernel, self.strides, self.dilation)]
        y = np.zeros((x.shape[0], *outs, w.shape[0]), dtype=node.outputs[0].dtype)
        for offset in itertools.product(*(range(k) for k in kernel)):
            y += np.tensordot(xp[_window(offset, self.dilation, self.strides, outs)],
                              w[(slice(None), slice(None), *offset)], axes=([1], [1]))
        output_storage[0][0] = y if self.channels_last else np.ascontiguousarray(np.moveaxis(y, -1, 1))

    def infer_shape(self, fgraph, node, shapes):
        xs, ws = shapes
        n = self.nd
        if self.channels_last:
            batch, spatial, kernel, f = xs[0], xs[1:n + 1], ws[:n], ws[n + 1]
        else:
            batch, spatial, kernel, f = xs[0], xs[2:], ws[2:], ws[0]
        outs = [(d + p[0] + p[1] - dl * (k - 1) - 1) // s + 1
                for d, k, s, p, dl in zip(spatial, kernel, self.strides, self.pads, self.dilation)]
        return [(batch, *outs, f) if self.channels_last else (batch, f, *outs)]

    def pullback(self, inputs, outputs, output_grads):
        x, w = inputs
        dx, dw = ConvGrad(self.strides, self.pads, self.dilation, self.channels_last)(x, w, output_grads[0])
        return [dx, dw]


class ConvGrad(_ConvBase):
    """(dx, dw) of sum(dy * conv(x, w)); JAX: jax.vjp of the same conv (XLA's transposed convolutions)."""

    def make_node(self, x, w, dy):
        x, w, dy = (pt.as_tensor_variable(v) for v in (x, w, dy))
        return Apply(self, [x, w, dy], [x.type(), w.type()])

    def perform(self, node, inputs, output_storage):
        x, w, dy = inputs
        n = self.nd
        if self.channels_last:
            x, w = _to_first(x, w, n)
            dy = np.moveaxis(dy, -1, 1)
        xp = np.pad(x, [(0, 0), (0, 0), *self.pads])
        kernel = w.shape[2:]
        outs = dy.shape[2:]
        dxp = np.zeros_like(xp)
        dw = np.zeros_like(w)
        dy_last = np.moveaxis(dy, 1, -1)                                       # (B, *O, F)
        axes = [0, *range(2, 2 + n)]
        for offset in itertools.product(*(range(k) for k in kernel)):
            win = _window(offset, self.dilation, self.strides, outs)
            dxp[win] += np.moveaxis(np.tensordot(dy_last, w[(slice(None), slice(None), *offset)],
                                                 axes=([n + 1], [0])), -1, 1)
            dw[(slice(None), slice(None), *offset)] = np.tensordot(dy, xp[win], axes=(axes, axes))
        dx = dxp[(slice(None), slice(None), *(slice(a, a + d) for (a, _), d in zip(self.pads, x.shape[2:])))]
        if self.channels_last:
            dx, dw = np.moveaxis(dx, 1, -1), np.transpose(dw, (*range(2, n + 2), 1, 0))
        output_storage[0][0] = np.ascontiguousarray(dx, dtype=node.outputs[0].dtype)
        output_storage[1][0] = np.ascontiguousarray(dw, dtype=node.outputs[1].dtype)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0], shapes[1]]

    def pullback(self, inputs, outputs, output_grads):
        return [grad_not_implemented(self, i, v) for i, v in enumerate(inputs)]


# --- PyTensor's JAX dispatch ----------------------------------------------------------------

_REGISTERED: list[bool] = []


def _ensure_registered() -> None:
    if not _REGISTERED:
        _register_jax()
        _REGISTERED.append(True)


def _register_jax() -> None:
    """Teach PyTensor's JAX linker the two Ops (when JAX is installed; imported lazily so that
    the C and NUMBA backends never import JAX)."""
    import importlib.util

    if importlib.util.find_spec("jax") is None:
        return
    # PyTensor's JAX dispatch sets jax_enable_x64 from floatX when first imported: nncli's float32
    with pytensor.config.change_flags(floatX="float32"):
        from pytensor.link.jax.dispatch import jax_funcify

    @jax_funcify.register(Conv)
    def _conv(op, **kwargs):
        return op.jax_conv()

    @jax_funcify.register(ConvGrad)
    def _conv_grad(op, **kwargs):
        import jax

        conv = op.jax_conv()

        def grad(x, w, dy):
            return jax.vjp(conv, x, w)[1](dy)
        return grad

