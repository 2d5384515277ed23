"""conv1d: the forward pass against an explicit numpy loop (padding arithmetic written here from
the Keras/TensorFlow and PyTorch formulas), on JAX (float32) and PyTensor's FAST_COMPILE (float64);
gradients against central finite differences; causality; shape and key validation.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from nncli import network, spec
from nncli.errors import ConfigError
from nncli.layers import LAYERS
from nncli.schema import mapping
from support import check_layer_gradients, compile_layer, compile_layers

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.filterwarnings("ignore:Explicitly requested dtype"), pytest.mark.usefixtures("jax_backend")]
MODES = [("JAX", "float32", 1e-4), ("FAST_COMPILE", "float64", 1e-10)]


def make_layer(kind: str, **config):
    cls = LAYERS.get(kind)
    layer = cls(f"{kind}_1", mapping(config, "layer", cls.keys))
    return layer


# --- the numpy reference, independent of nncli ---------------------------------------

def np_pads(t, k, s, d, padding):
    span = (k - 1) * d + 1
    if padding == "valid":
        return 0, 0
    if padding == "same":        # TensorFlow: output ceil(t / s), the odd zero after
        total = max((math.ceil(t / s) - 1) * s + span - t, 0)
        return total // 2, total - total // 2
    if padding == "causal":      # Keras: all the zeros before
        return span - 1, 0
    if isinstance(padding, int):
        return padding, padding
    return tuple(padding)


def np_conv1d(x, W, b, s, d, padding):
    """y[n, t, f] = b[f] + sum_{j, c} xpad[n, t*s + j*d, c] W[f, c, j], by loops."""
    n, t, c = x.shape
    f, _, k = W.shape
    left, right = np_pads(t, k, s, d, padding)
    xp = np.concatenate([np.zeros((n, left, c)), x, np.zeros((n, right, c))], axis=1)
    out_len = (t + left + right - (k - 1) * d - 1) // s + 1
    y = np.zeros((n, out_len, f))
    for i in range(out_len):
        for j in range(k):
            for ch in range(c):
                y[:, i, :] += np.outer(xp[:, i * s + j * d, ch], W[:, ch, j])
    return y + (0.0 if b is None else b)


CASES = [
    # (time, channels, filters, kernel_size, stride, dilation, padding)
    (9, 3, 4, 3, 1, 1, "valid"),
    (9, 3, 4, 3, 1, 1, "same"),
    (10, 2, 3, 4, 1, 1, "same"),        # even kernel, same: the odd zero after
    (10, 2, 3, 2, 2, 1, "same"),        # even kernel, stride 2
    (11, 2, 3, 4, 3, 1, "same"),
    (9, 2, 3, 2, 3, 1, "valid"),        # stride larger than the kernel
    (9, 2, 2, 3, 1, 2, "causal"),       # dilated causal (TCN)
    (8, 3, 2, 3, 2, 1, "causal"),
    (40, 1, 4, 5, 2, 1, 1),             # MNIST-1D's CNN: padding 1, stride 2: 40 -> 19
    (7, 2, 3, 3, 1, 1, [2, 0]),
    (7, 2, 3, 3, 2, 2, [0, 3]),
    (6, 4, 3, 1, 2, 1, "valid"),        # 1x1 kernel, strided
    (1, 3, 2, 3, 1, 1, "same"),         # time length 1
    (1, 3, 2, 3, 1, 1, "causal"),
    (1, 2, 2, 1, 3, 1, "valid"),
]


def _conv1d_case(case):
    t, c, f, k, s, d, pad = case
    layer = make_layer("conv1d", filters=f, kernel_size=k, stride=s, dilation=d, padding=pad)
    out_shape = layer.output_shape((t, c))
    params = layer.init_params((t, c), np.random.default_rng(0))
    assert params["W"].shape == (f, c, k) and params["b"].shape == (f,) and params["W"].dtype == np.float32
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x, W, b = rng.normal(size=(3, t, c)), rng.normal(size=(f, c, k)), rng.normal(size=f)
    want = np_conv1d(x, W, b, s, d, pad)
    assert want.shape == (3, *out_shape)
    return (layer, x.shape, {"W": W.shape, "b": b.shape}), [x, W, b], want


@pytest.mark.parametrize("mode,dtype,tol", MODES, ids=[m for m, _, _ in MODES])
def test_conv1d_forward_matches_numpy_loops(mode, dtype, tol):
    """Every case of CASES in one compiled function per backend."""
    items, arrays, wants = zip(*[_conv1d_case(case) for case in CASES])
    fn = compile_layers(items, mode=mode, dtype=dtype)
    got = fn(*[a.astype(dtype) for case_arrays in arrays for a in case_arrays])
    for case, g, want in zip(CASES, got, wants):
        assert np.shape(g) == want.shape, case
        np.testing.assert_allclose(np.asarray(g), want, rtol=tol, atol=tol, err_msg=str(case))


def test_mnist1d_padding_one_gives_19_steps_and_same_gives_20():
    """The issue's example: a kernel-5 stride-2 conv with padding 1 maps 40 -> 19 steps (PyTorch);
    `same` maps 40 -> 20 (Keras)."""
    assert make_layer("conv1d", filters=1, kernel_size=5, stride=2, padding=1).output_shape((40, 1)) == (19, 1)
    assert make_layer("conv1d", filters=1, kernel_size=5, stride=2, padding="same").output_shape((40, 1)) == (20, 1)


@pytest.mark.parametrize("k,s,d,pad", [(3, 1, 1, "same"), (4, 2, 1, "same"), (2, 3, 1, [1, 2]), (3, 1, 2, "causal")])
def test_conv1d_gradients_match_finite_differences(k, s, d, pad):
    rng = np.random.default_rng(7)
    layer = make_layer("conv1d", filters=3, kernel_size=k, stride=s, dilation=d, padding=pad)
    layer.output_shape((8, 2))
    check_layer_gradients(layer, (2, 8, 2), {"W": rng.normal(size=(3, 2, k)), "b": rng.normal(size=3)}, rng)


def test_causal_conv1d_does_not_see_the_future():
    """Perturbing step t0 leaves every output before t0 bit-identical and changes the one at t0."""
    layer = make_layer("conv1d", filters=3, kernel_size=3, dilation=2, padding="causal")
    layer.output_shape((10, 2))
    rng = np.random.default_rng(5)
    W, b = rng.normal(size=(3, 2, 3)).astype("float32"), rng.normal(size=3).astype("float32")
    fn = compile_layer(layer, (2, 10, 2), {"W": W.shape, "b": b.shape}, mode="JAX")
    x = rng.normal(size=(2, 10, 2)).astype("float32")
    for t0 in (0, 4, 9):
        x2 = x.copy()
        x2[:, t0, :] += 1.0
        y1, y2 = np.asarray(fn(x, W, b)), np.asarray(fn(x2, W, b))
        np.testing.assert_array_equal(y1[:, :t0], y2[:, :t0])
        assert np.all(np.abs(y1[:, t0] - y2[:, t0]) > 1e-4)


# --- validation ------------------------------------------------------------------------

def _build(layers, input_shape):
    cfg = {"data": {"train": str(ROOT / "data" / "majority.h5")}, "optimizer": "adam", "layers": layers}
    return network.build(spec.from_dict(cfg, "tcn.yaml"), input_shape)


def test_shapes_of_a_tcn_stack_with_lstm():
    net = _build([{"type": "conv1d", "filters": 8, "kernel_size": 3, "padding": "causal", "dilation": 2},
                  {"type": "conv1d", "filters": 6, "kernel_size": 4, "stride": 2, "padding": "same"},
                  {"type": "conv1d", "filters": 5, "kernel_size": 2, "padding": [1, 0]},
                  {"type": "lstm", "units": 4}], (15, 3))
    assert net.shapes == [(15, 8), (8, 6), (8, 5), (4,)]


@pytest.mark.parametrize("layers,input_shape,words", [
    ([{"type": "conv1d", "filters": 2, "kernel_size": 5}], (3, 2), ["layers[0]", "conv1d 'conv1d_1'", "kernel_size 5",
                                                                   "longer than its padded input", "padding: same"]),
    ([{"type": "conv1d", "filters": 2, "kernel_size": 3, "dilation": 3}], (6, 2), ["dilation 3", "spans 7 steps"]),
    ([{"type": "conv1d", "filters": 2, "kernel_size": 3}], (15,), ["2-D (time, channels)", "(15,)", "[15, 1]"]),
    ([{"type": "conv1d", "filters": 2, "kernel_size": 3}], (1, 8, 8), ["2-D (time, channels)", "(1, 8, 8)"]),
])
def test_impossible_shapes_are_config_errors(layers, input_shape, words):
    with pytest.raises(ConfigError) as info:
        _build(layers, input_shape)
    msg = str(info.value)
    assert "tcn.yaml" in msg and "\n" not in msg
    for word in words:
        assert word in msg, msg


@pytest.mark.parametrize("bad,words", [
    ({"type": "conv1d", "filters": 2, "kernel_size": 3, "padding": "full"}, ["padding", "valid, same, causal"]),
    ({"type": "conv1d", "filters": 2, "kernel_size": 3, "padding": [1, 2, 3]}, ["padding", "[left, right]"]),
    ({"type": "conv1d", "filters": 2, "kernel_size": 3, "padding": -1}, ["padding", "-1"]),
    ({"type": "conv1d", "filters": 2, "kernel_size": [3, 3]}, ["kernel_size", "integer"]),
    ({"type": "conv1d", "filters": 2, "kernel_size": 3, "dilation": 0}, ["dilation", "from 1"]),
    ({"type": "conv1d", "kernel_size": 3}, ["filters", "missing"]),
])
def test_bad_conv1d_keys_are_config_errors(bad, words):
    with pytest.raises(ConfigError) as info:
        _build([bad], (15, 3))
    for word in words:
        assert word in str(info.value), str(info.value)


def test_conv1d_and_pooling_after_a_dense_layer_in_a_network():
    """A per-step dense (whose shared W leaves the feature size out of the static type) feeding
    conv1d and max_pool1d: the shapes come from validation; the output against numpy."""
    import pytensor
    import pytensor.tensor as pt

    from nncli.layers import Context

    net = _build([{"type": "dense", "units": 4, "activation": "tanh"},
                  {"type": "conv1d", "filters": 3, "kernel_size": 2, "padding": "same"},
                  {"type": "max_pool1d", "pool_size": 2, "stride": 2, "padding": "same"}], (5, 3))
    assert net.shapes == [(5, 4), (5, 3), (3, 3)]
    params, state = net.initial_values(np.random.default_rng(0))
    net.create_shared(params, state)
    x = pt.tensor("x", dtype="float32", shape=(2, 5, 3))
    out, _, _ = net.forward(x, Context(training=False))
    xv = np.random.default_rng(1).normal(size=(2, 5, 3)).astype("float32")
    got = pytensor.function([x], out)(xv)
    h = np.tanh(xv.astype(np.float64) @ params["dense_1/W"] + params["dense_1/b"])
    c = np_conv1d(h, params["conv1d_2/W"].astype(np.float64), params["conv1d_2/b"], 1, 1, "same")
    c = np.concatenate([c, np.full((2, 1, 3), -np.inf)], axis=1)        # same: 5 -> 3 windows, the last short
    want = c.reshape(2, 3, 2, 3).max(axis=2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.accuracy
def test_majority_tcn_reaches_098_test_accuracy(tmp_path):
    from nncli import inference
    from nncli.training import trainer

    # seeds 0-2 gave 1.000 on an AMD EPYC (python bench/seeds.py configs/majority-tcn.yaml --seeds 0 1 2)
    trainer.train(ROOT / "configs" / "majority-tcn.yaml", output=str(tmp_path / "run"), backend_name="jax")
    evaluation = inference.evaluate(tmp_path / "run" / "model.h5", str(ROOT / "data" / "majority-test.h5"))
    assert evaluation.metrics["accuracy"] >= 0.98, evaluation.metrics
