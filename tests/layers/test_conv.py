"""conv2d, max_pool2d, avg_pool2d: forward passes against explicit numpy loops,
gradients against central finite differences (float64), shape validation,
and the shipped digits-cnn config reaching its accuracy.

conv2d runs through both implementations of nncli/layers/convolution.py (the `impl`
fixture): the native Op (XLA's convolution under JAX, numpy `perform` under FAST_COMPILE)
and the im2col graph; each is checked against the numpy loops and finite differences, and
the native Op's JAX gradients against the im2col graph's.

Forward checks compile under JAX (the default backend, float32); the
finite-difference checks compile the same layer graphs in float64 with
FAST_COMPILE (JAX without x64 computes in float32).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from nncli import network, spec
from nncli.errors import ConfigError
from nncli.layers import LAYERS, Context, convolution
from support import central_fd
from nncli.schema import mapping

ROOT = Path(__file__).resolve().parents[2]
# JAX without x64 warns when PyTensor's float64 accumulators are truncated to float32
pytestmark = [pytest.mark.filterwarnings("ignore:Explicitly requested dtype"), pytest.mark.usefixtures("jax_backend")]
RNG = np.random.default_rng(1234)


@pytest.fixture(params=["native", "im2col"])
def impl(request, monkeypatch):
    """conv2d through the native Op, then through the im2col graph."""
    monkeypatch.setattr(convolution, "IMPLEMENTATION", request.param)
    return request.param


def make_layer(kind: str, **config):
    cls = LAYERS.get(kind)
    return cls(f"{kind}_1", mapping(config, "layer", cls.keys))


# --- numpy references, written independently of nncli ---------------------------

def np_pad_same(x, kh, kw, sh, sw):
    """TensorFlow's 'same': output ceil(n / s); total padding split, the odd one after."""
    _, _, h, w = x.shape
    oh, ow = math.ceil(h / sh), math.ceil(w / sw)
    ph = max((oh - 1) * sh + kh - h, 0)
    pw = max((ow - 1) * sw + kw - w, 0)
    return np.pad(x, ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))


def np_conv2d(x, W, b, stride, padding, dilation=(1, 1)):
    """Cross-correlation by an explicit loop over output positions. padding: 'valid', 'same'
    (Keras, with the dilated kernel's span), an int / (h, w) (PyTorch's padding=: that many zeros
    on both sides), or ((top, bottom), (left, right)) (Keras' ZeroPadding2D)."""
    f, c, kh, kw = W.shape
    sh, sw = stride
    dh, dw = dilation
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        x = np_pad_same(x, span_h, span_w, sh, sw)
    elif padding != "valid":
        if isinstance(padding, int):
            padding = (padding, padding)
        if isinstance(padding[0], int):
            padding = ((padding[0], padding[0]), (padding[1], padding[1]))
        x = np.pad(x, ((0, 0), (0, 0), tuple(padding[0]), tuple(padding[1])))
    n, _, h, w = x.shape
    oh, ow = (h - span_h) // sh + 1, (w - span_w) // sw + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = x[:, :, i * sh:i * sh + span_h:dh, j * sw:j * sw + span_w:dw]   # (n, c, kh, kw)
            for k in range(f):
                out[:, k, i, j] = (window * W[k]).sum(axis=(1, 2, 3)) + (b[k] if b is not None else 0.0)
    return out


def np_pool(x, pool, stride, how):
    ph, pw = pool
    sh, sw = stride
    n, c, h, w = x.shape
    oh, ow = (h - ph) // sh + 1, (w - pw) // sw + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = x[:, :, i * sh:i * sh + ph, j * sw:j * sw + pw]
            out[:, :, i, j] = window.max(axis=(2, 3)) if how == "max" else window.mean(axis=(2, 3))
    return out


# --- conv2d forward ------------------------------------------------------------

CONV_CASES = [
    # (channels, h, w, filters, kernel_size, stride, padding)
    (2, 7, 6, 3, 3, 1, "valid"),
    (2, 7, 6, 3, 3, 1, "same"),
    (3, 8, 7, 4, [2, 3], [2, 1], "same"),
    (1, 9, 9, 2, 3, 2, "valid"),
    (3, 5, 5, 2, [4, 2], [1, 2], "same"),
    (2, 5, 6, 3, 1, 1, "valid"),
    (2, 6, 6, 2, 1, 2, "same"),
    # explicit padding (PyTorch's padding=: int, [h, w]; Keras' [[top, bottom], [left, right]]) and dilation
    (2, 6, 5, 3, 3, 1, 1, 1),
    (2, 6, 5, 3, [3, 2], [2, 1], [2, 0], 1),
    (2, 6, 7, 2, [2, 3], 1, [[0, 2], [1, 0]], [1, 2]),
    (1, 7, 7, 2, 3, 1, "same", 2),            # Keras' same with the dilated span (5)
    (2, 8, 7, 2, 2, 2, "same", [2, 3]),       # even kernel, same, dilation and stride
    (2, 9, 8, 2, 3, 1, "valid", [3, 2]),
    (1, 5, 5, 2, 2, 3, "same", 1),            # stride larger than the kernel
]


def _cid(c):
    return f"{c[4]}-{c[5]}-{c[6]}-{c[1]}x{c[2]}" + (f"-d{c[7]}" if len(c) > 7 else "")


@pytest.mark.parametrize("case", CONV_CASES, ids=[_cid(c) for c in CONV_CASES])
def test_conv2d_forward_matches_numpy_loops(case, impl):
    c, h, w, f, k, s, pad = case[:7]
    dilation = case[7] if len(case) > 7 else 1
    layer = make_layer("conv2d", filters=f, kernel_size=k, stride=s, padding=pad, dilation=dilation)
    out_shape = layer.output_shape((c, h, w))
    params = layer.init_params((c, h, w), np.random.default_rng(0))
    assert params["W"].shape == (f, c, *layer.config["kernel_size"]) and params["W"].dtype == np.float32
    assert params["b"].shape == (f,)
    x = pt.tensor("x", dtype="float32", shape=(4, c, h, w))
    W = pt.tensor("W", dtype="float32", shape=params["W"].shape)
    b = pt.vector("b", dtype="float32")
    fn = pytensor.function([x, W, b], layer.linear(x, {"W": W, "b": b}, Context(training=False)))
    xv = RNG.normal(size=(4, c, h, w)).astype("float32")
    Wv = RNG.normal(size=params["W"].shape).astype("float32")
    bv = RNG.normal(size=f).astype("float32")
    got = np.asarray(fn(xv, Wv, bv))
    want = np_conv2d(xv.astype(np.float64), Wv.astype(np.float64), bv.astype(np.float64),
                     layer.config["stride"], pad, layer.config["dilation"])
    assert got.shape == (4, *out_shape) == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    if impl == "native":   # the Op's numpy perform (any mode but JAX)
        slow = pytensor.function([x, W, b], layer.linear(x, {"W": W, "b": b}, Context(training=False)),
                                 mode="FAST_COMPILE")
        np.testing.assert_allclose(slow(xv, Wv, bv), want, rtol=1e-4, atol=1e-4)


def test_conv2d_without_bias_and_with_activation_through_network(impl):
    """A conv2d inside a Network: reshape -> conv (relu) -> flatten, against numpy."""
    cfg = {"data": {"train": str(ROOT / "data" / "digits.h5")}, "optimizer": "adam",
           "layers": [{"type": "reshape", "shape": [2, 4, 4]},
                      {"type": "conv2d", "filters": 3, "kernel_size": 2, "use_bias": False, "activation": "relu"},
                      {"type": "flatten"}]}
    s = spec.from_dict(cfg, "test.yaml")
    net = network.build(s, (32,))
    assert net.shapes == [(2, 4, 4), (3, 3, 3), (27,)]
    params, state = net.initial_values(np.random.default_rng(0))
    assert list(params) == ["conv2d_2/W"] and not state
    net.create_shared(params, state)
    x = pt.tensor("x", dtype="float32", shape=(5, 32))
    out, _, _ = net.forward(x, Context(training=False))
    xv = RNG.normal(size=(5, 32)).astype("float32")
    got = pytensor.function([x], out)(xv)
    want = np.maximum(np_conv2d(xv.reshape(5, 2, 4, 4), params["conv2d_2/W"].astype(np.float64), None,
                                (1, 1), "valid"), 0).reshape(5, -1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# --- pooling forward -------------------------------------------------------------

POOL_CASES = [
    # (h, w, pool_size, stride)  stride None: = pool_size (non-overlapping)
    (8, 8, 2, None),
    (7, 9, 2, None),        # remainder cropped
    (9, 9, [3, 2], None),
    (7, 7, 3, 1),           # overlapping
    (8, 7, 3, 2),           # overlapping, strided
    (6, 6, 2, [1, 2]),
]


@pytest.mark.parametrize("how", ["max", "avg"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[f"{c[0]}x{c[1]}-p{c[2]}-s{c[3]}" for c in POOL_CASES])
def test_pool_forward_matches_numpy_loops(case, how):
    h, w, p, s = case
    cfg = {"pool_size": p} if s is None else {"pool_size": p, "stride": s}
    layer = make_layer(f"{how}_pool2d", **cfg)
    out_shape = layer.output_shape((3, h, w))
    x = pt.tensor("x", dtype="float32", shape=(2, 3, h, w))
    fn = pytensor.function([x], layer.linear(x, {}, Context(training=False)))
    xv = RNG.normal(size=(2, 3, h, w)).astype("float32")
    pool = layer.config["pool_size"]
    stride = layer.config["stride"] or pool
    want = np_pool(xv.astype(np.float64), pool, stride, how)
    got = np.asarray(fn(xv))
    assert got.shape == (2, *out_shape) == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# --- gradients vs finite differences (float64) ------------------------------------

def _grad_check(layer, in_shape, param_arrays, rng):
    """d/d(input, params) of sum(R * layer(x)) vs central differences, in float64."""
    with pytensor.config.change_flags(floatX="float64"):
        x = pt.tensor("x", dtype="float64", shape=in_shape)
        sym = {k: pt.tensor(k, dtype="float64", shape=v.shape) for k, v in param_arrays.items()}
        y = layer.linear(x, sym, Context(training=False))
        R = rng.normal(size=[int(d) for d in layer.output_shape(in_shape[1:])])
        R = np.broadcast_to(R, (in_shape[0], *R.shape)) * rng.normal(size=(in_shape[0],) + (1,) * R.ndim)
        cost = pt.sum(pt.constant(R) * y)
        wrt = [x, *sym.values()]
        fn = pytensor.function(wrt, [cost, *pytensor.grad(cost, wrt)], mode="FAST_COMPILE")
    arrays = [rng.normal(size=in_shape), *param_arrays.values()]
    _, *grads = fn(*arrays)

    def f(*a):
        return float(fn(*a)[0])

    for which, g in enumerate(grads):
        idx, fd = central_fd(f, arrays, which, rng=rng)
        np.testing.assert_allclose([g[i] for i in idx], fd, rtol=1e-6, atol=1e-7,
                                   err_msg=f"gradient wrt {['x', *param_arrays][which]}")


@pytest.mark.parametrize("k,s,pad,d", [(3, 1, "same", 1), ([2, 3], 2, "valid", 1), (3, [2, 1], "same", 1),
                                       (2, [1, 2], [[1, 0], [2, 1]], [2, 1])])
def test_conv2d_gradients_match_finite_differences(k, s, pad, d, impl):
    rng = np.random.default_rng(7)
    layer = make_layer("conv2d", filters=3, kernel_size=k, stride=s, padding=pad, dilation=d)
    kh, kw = layer.config["kernel_size"]
    _grad_check(layer, (2, 2, 6, 5), {"W": rng.normal(size=(3, 2, kh, kw)), "b": rng.normal(size=3)}, rng)


@pytest.mark.parametrize("how", ["max", "avg"])
@pytest.mark.parametrize("pool,stride", [(2, None), (3, 1), ([2, 3], [2, 1])])
def test_pool_gradients_match_finite_differences(how, pool, stride):
    rng = np.random.default_rng(11)
    cfg = {"pool_size": pool} if stride is None else {"pool_size": pool, "stride": stride}
    _grad_check(make_layer(f"{how}_pool2d", **cfg), (2, 2, 7, 6), {}, rng)


def test_conv_network_gradient_under_jax_matches_float64(impl):
    """The float32 JAX gradient of a conv -> pool -> conv stack (native Op: XLA's convolution and
    jax.vjp) agrees with the float64 im2col graph's."""
    conv1 = make_layer("conv2d", filters=4, kernel_size=3, padding="same", dilation=[1, 2])
    pool = make_layer("max_pool2d")
    conv2 = make_layer("conv2d", filters=2, kernel_size=2, stride=2, padding=[[0, 1], [1, 0]])
    shapes = [(3, 6, 6)]
    for layer in (conv1, pool, conv2):
        shapes.append(layer.output_shape(shapes[-1]))
    rng = np.random.default_rng(3)
    values = {"W1": rng.normal(size=(4, 3, 3, 3)), "b1": rng.normal(size=4),
              "W2": rng.normal(size=(2, 4, 2, 2)), "b2": rng.normal(size=2)}
    xv = rng.normal(size=(3, 3, 6, 6))
    R = rng.normal(size=(3, *shapes[-1]))
    results = []
    for dtype, mode, how in (("float32", "JAX", impl), ("float64", "FAST_COMPILE", "im2col")):
        convolution.IMPLEMENTATION = how   # the fixture restores it
        with pytensor.config.change_flags(floatX=dtype):
            x = pt.tensor("x", dtype=dtype, shape=xv.shape)
            p = {k: pt.tensor(k, dtype=dtype, shape=v.shape) for k, v in values.items()}
            ctx = Context(training=False)
            y = conv1.linear(x, {"W": p["W1"], "b": p["b1"]}, ctx)
            y = pool.linear(pt.tanh(y), {}, ctx)
            y = conv2.linear(y, {"W": p["W2"], "b": p["b2"]}, ctx)
            cost = pt.sum(pt.constant(R.astype(dtype)) * y)
            wrt = [x, *p.values()]
            fn = pytensor.function(wrt, pytensor.grad(cost, wrt), mode=mode)
            results.append(fn(*[a.astype(dtype) for a in [xv, *values.values()]]))
    for g32, g64 in zip(*results):
        np.testing.assert_allclose(np.asarray(g32), g64, rtol=1e-4, atol=1e-4)


# --- shape validation --------------------------------------------------------------

def _build(layers, input_shape):
    cfg = {"data": {"train": str(ROOT / "data" / "digits.h5")}, "optimizer": "adam", "layers": layers}
    return network.build(spec.from_dict(cfg, "cnn.yaml"), input_shape)


def test_conv2d_on_flat_input_is_a_config_error_naming_the_layer():
    with pytest.raises(ConfigError) as info:
        _build([{"type": "conv2d", "filters": 4, "kernel_size": 3}, {"type": "flatten"}], (64,))
    msg = str(info.value)
    assert "cnn.yaml" in msg and "layers[0]" in msg and "conv2d 'conv2d_1'" in msg
    assert "(64,)" in msg and "reshape" in msg and "[1, 8, 8]" in msg


@pytest.mark.parametrize("layers,input_shape,words", [
    ([{"type": "conv2d", "filters": 2, "kernel_size": 5}], (1, 4, 4), ["kernel_size", "[5, 5]", "padding: same"]),
    ([{"type": "max_pool2d", "pool_size": 3}], (2, 2, 5), ["pool_size", "[3, 3]", "(2, 2, 5)"]),
    ([{"type": "avg_pool2d"}], (16,), ["3-D", "(16,)", "reshape"]),
    ([{"type": "conv2d", "filters": 2, "kernel_size": 3}], (5, 8), ["3-D", "(5, 8)", "[1, 5, 8]"]),
    ([{"type": "conv2d", "filters": 2, "kernel_size": 3, "dilation": 3}], (1, 6, 9),
     ["spanning [7, 7]", "dilation [3, 3]", "[6, 9]"]),
    ([{"type": "conv2d", "filters": 2, "kernel_size": 6, "padding": [[1, 0], [0, 0]]}], (1, 4, 9),
     ["[[1, 0], [0, 0]]", "[4, 9]"]),
])
def test_impossible_shapes_are_config_errors(layers, input_shape, words):
    with pytest.raises(ConfigError) as info:
        _build(layers, input_shape)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("bad,words", [
    ({"type": "conv2d", "filters": 0, "kernel_size": 3}, ["filters", "from 1", "got 0"]),
    ({"type": "conv2d", "filters": 2, "kernel_size": [3, 3, 3]}, ["kernel_size", "2 integers"]),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": "full"}, ["padding", "valid, same"]),
    ({"type": "conv2d", "kernel_size": 3}, ["filters", "missing"]),
    ({"type": "max_pool2d", "stride": 0}, ["stride", ">= 1"]),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": -1}, ["padding", "valid, same", "-1"]),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": [1, 2, 3]}, ["padding", "[height, width]"]),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": [[1, 2], [3]]}, ["padding[1]", "2 integers"]),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": True}, ["padding", "got True"]),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "dilation": 0}, ["dilation", ">= 1"]),
])
def test_bad_conv_keys_are_config_errors(bad, words):
    with pytest.raises(ConfigError) as info:
        _build([{"type": "reshape", "shape": [1, 8, 8]}, bad], (64,))
    for word in words:
        assert word in str(info.value)


def test_padding_forms_normalise_to_top_bottom_left_right():
    def pads(padding):
        layer = make_layer("conv2d", filters=1, kernel_size=3, padding=padding)
        return layer.config["padding"], layer.pads(7, 8)

    assert pads("valid") == ("valid", ((0, 0), (0, 0)))
    assert pads("same") == ("same", ((1, 1), (1, 1)))
    assert pads(2) == (((2, 2), (2, 2)),) * 2
    assert pads([1, 3]) == (((1, 1), (3, 3)),) * 2
    assert pads([[0, 2], [3, 1]]) == (((0, 2), (3, 1)),) * 2
    # the JSON Schema accepts each form
    from nncli.schema import json_schema_of

    schema = json_schema_of(LAYERS.get("conv2d").keys["padding"].validator)
    assert len(schema["anyOf"]) == 4


def test_auto_takes_im2col_on_the_cpu_and_under_other_modes(monkeypatch):
    """`auto`: the native Op only under JAX on a GPU (measured: bench/results.md); on the CPU and under
    PyTensor's own modes the im2col graph (no Conv node in the graph)."""
    from pytensor.graph.traversal import ancestors

    monkeypatch.setattr(convolution, "IMPLEMENTATION", "auto")
    x = pt.tensor("x", dtype="float32", shape=(2, 1, 5, 5))
    w = pt.tensor("w", dtype="float32", shape=(3, 1, 3, 3))
    for mode in ("JAX", "FAST_COMPILE"):
        with pytensor.config.change_flags(mode=mode):
            assert not convolution.use_native()
            y = convolution.convolve(x, w, (1, 1), ((0, 0), (0, 0)), (1, 1))
            assert not any(isinstance(v.owner.op, convolution.Conv)
                           for v in ancestors([y]) if v.owner is not None)
    monkeypatch.setattr(convolution, "IMPLEMENTATION", "native")
    y = convolution.convolve(x, w, (1, 1), ((0, 0), (0, 0)), (1, 1))
    assert isinstance(y.owner.op, convolution.Conv)


@pytest.mark.parametrize("channels_last", [False, True])
def test_convolve_1d_for_a_conv1d(channels_last, impl):
    """convolution.convolve on one spatial axis, as a conv1d calls it, against a numpy loop."""
    rng = np.random.default_rng(5)
    batch, time, cin, f, k, stride, (left, right), dil = 3, 11, 2, 4, 3, 2, (2, 1), 2
    xv = rng.normal(size=(batch, time, cin)).astype("float32")      # channels last
    wv = rng.normal(size=(k, cin, f)).astype("float32")             # Keras' (kernel, in, filters)
    xp = np.pad(xv.astype(np.float64), ((0, 0), (left, right), (0, 0)))
    steps = (time + left + right - dil * (k - 1) - 1) // stride + 1
    want = np.stack([sum(xp[:, t * stride + j * dil] @ wv[j] for j in range(k)) for t in range(steps)], axis=1)
    if channels_last:
        x = pt.tensor("x", dtype="float32", shape=xv.shape)
        w = pt.tensor("w", dtype="float32", shape=wv.shape)
        args = (xv, wv)
    else:
        x = pt.tensor("x", dtype="float32", shape=(batch, cin, time))
        w = pt.tensor("w", dtype="float32", shape=(f, cin, k))
        args = (xv.transpose(0, 2, 1), wv.transpose(2, 1, 0))
        want = want.transpose(0, 2, 1)
    y = convolution.convolve(x, w, (stride,), ((left, right),), (dil,), channels_last=channels_last)
    got = pytensor.function([x, w], y)(*args)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_shapes_of_a_cnn_stack():
    net = _build([{"type": "reshape", "shape": [1, 8, 8]},
                  {"type": "conv2d", "filters": 16, "kernel_size": 3, "padding": "same"},
                  {"type": "max_pool2d"},
                  {"type": "conv2d", "filters": 8, "kernel_size": [2, 3], "stride": 2},
                  {"type": "avg_pool2d", "pool_size": 1},
                  {"type": "flatten"}], (64,))
    assert net.shapes == [(1, 8, 8), (16, 8, 8), (16, 4, 4), (8, 2, 1), (8, 2, 1), (16,)]


# --- the shipped config ------------------------------------------------------------

@pytest.mark.accuracy
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_cnn_reaches_098_test_accuracy(tmp_path, seed):
    from nncli import inference
    from nncli.training import trainer

    # seeds 0-9 gave 0.986-0.997 on an AMD EPYC (python bench/seeds.py configs/digits-cnn.yaml --seeds ...)
    result = trainer.train(ROOT / "configs" / "digits-cnn.yaml", output=str(tmp_path / "run"), seed=seed)
    evaluation = inference.evaluate(tmp_path / "run" / "model.h5", str(ROOT / "data" / "digits-test.h5"))
    assert evaluation.metrics["accuracy"] >= 0.98, evaluation.metrics
    assert result.test is not None and abs(result.test["accuracy"] - evaluation.metrics["accuracy"]) < 1e-9


# --- resume ---------------------------------------------------------------------------

def test_conv_training_resumes_bit_exactly(tmp_path, monkeypatch):
    """2 epochs in one run and 1 + 1 resumed give the same bits with the native Op (padding and
    dilation included; 2 steps per call plus the single step for the last batch).
    Slow-ish (~23 s on the busy 2-core machine: three trainings, each compiling its steps; the JAX
    executables come from the disk cache after the first): the one check that the native Op trains,
    checkpoints and resumes to the bit (the im2col graph, like every graph of PyTensor's own
    operations, is covered by the resume tests of tests/training)."""
    monkeypatch.setattr(convolution, "IMPLEMENTATION", "native")
    import h5py

    from support import assert_same_arrays, write_config
    from nncli.training import trainer

    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "imgs.h5", "w") as f:
        f["x"] = rng.normal(size=(40, 1, 6, 6)).astype("float32")
        f["y"] = rng.integers(0, 3, size=40)
    cfg = write_config(tmp_path, """seed: 1
data: {train: imgs.h5}
layers:
  - {type: conv2d, filters: 2, kernel_size: 3, padding: [[1, 0], [1, 1]], dilation: [1, 2], activation: relu}
  - {type: flatten}
  - {type: dense, units: 3, activation: softmax}
loss: categorical_crossentropy
optimizer: adam
epochs: 2
batch_size: 8
steps_per_execution: 2
""")
    trainer.train(cfg, output=str(tmp_path / "full"), epochs=2)
    trainer.train(cfg, output=str(tmp_path / "split"), epochs=1)
    trainer.train(cfg, output=str(tmp_path / "split"), epochs=2, resume=True)
    assert_same_arrays(tmp_path / "full" / "last.h5", tmp_path / "split" / "last.h5", groups=("params", "optimizer"))
