"""max_pool1d, avg_pool1d and the global poolings: forward passes against numpy loops over each
window's real steps (Keras semantics written here), on JAX (float32) and FAST_COMPILE (float64);
gradients against central finite differences; shape validation.
"""

from __future__ import annotations

import math
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
MODES = [("JAX", "float32", 1e-5), ("FAST_COMPILE", "float64", 1e-12)]


def make_layer(kind: str, **config):
    cls = LAYERS.get(kind)
    return cls(f"{kind}_1", mapping(config, "layer", cls.keys))


def np_pool1d(x, p, s, padding, how):
    """Each window's real steps only (TensorFlow/Keras: padding never counts)."""
    n, t, c = x.shape
    if padding == "same":
        out = math.ceil(t / s)
        left = max((out - 1) * s + p - t, 0) // 2
    else:
        out, left = (t - p) // s + 1, 0
    y = np.zeros((n, out, c))
    for i in range(out):
        lo, hi = max(i * s - left, 0), min(i * s - left + p, t)
        window = x[:, lo:hi, :]
        y[:, i] = window.max(axis=1) if how == "max" else window.mean(axis=1)
    return y


CASES = [
    # (time, pool_size, stride, padding)
    (8, 2, None, "valid"),
    (9, 2, None, "valid"),     # remainder dropped
    (9, 3, 1, "valid"),        # overlapping
    (10, 2, 3, "valid"),       # stride larger than the pool
    (9, 2, None, "same"),      # 5 windows, the last one short
    (10, 4, 1, "same"),        # even pool, same: windows at both edges short
    (7, 3, 2, "same"),
    (1, 2, None, "same"),      # time length 1
    (1, 1, 1, "valid"),
]


@pytest.mark.parametrize("mode,dtype,tol", MODES, ids=[m for m, _, _ in MODES])
def test_pool1d_forward_matches_numpy(mode, dtype, tol):
    """Every case of CASES, max and avg, in one compiled function per backend."""
    items, xs, wants, names = [], [], [], []
    for t, p, s, pad in CASES:
        for how in ("max", "avg"):
            layer = make_layer(f"{how}_pool1d", pool_size=p, padding=pad, **({"stride": s} if s else {}))
            out_shape = layer.output_shape((t, 3))
            x = np.random.default_rng(t * 31 + p).normal(size=(2, t, 3))
            want = np_pool1d(x, p, s or p, pad, how)
            assert want.shape == (2, *out_shape)
            items.append((layer, x.shape, {}))
            xs.append(x.astype(dtype))
            wants.append(want)
            names.append(f"{how} T{t} p{p} s{s} {pad}")
    got = compile_layers(items, mode=mode, dtype=dtype)(*xs)
    for name, g, want in zip(names, got, wants):
        assert np.shape(g) == want.shape, name
        np.testing.assert_allclose(np.asarray(g), want, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("how", ["max", "avg"])
@pytest.mark.parametrize("p,s,pad", [(2, None, "valid"), (3, 2, "same"), (4, 1, "same"), (2, 3, "valid")])
def test_pool1d_gradients_match_finite_differences(how, p, s, pad):
    rng = np.random.default_rng(11)
    layer = make_layer(f"{how}_pool1d", pool_size=p, padding=pad, **({"stride": s} if s else {}))
    check_layer_gradients(layer, (2, 9, 2), {}, rng)


GLOBAL = {"global_avg_pool1d": ((5, 3), lambda x: x.mean(axis=1)),
          "global_max_pool1d": ((5, 3), lambda x: x.max(axis=1)),
          "global_avg_pool2d": ((3, 4, 5), lambda x: x.mean(axis=(2, 3))),
          "global_max_pool2d": ((3, 4, 5), lambda x: x.max(axis=(2, 3)))}


@pytest.mark.parametrize("mode,dtype,tol", MODES, ids=[m for m, _, _ in MODES])
@pytest.mark.parametrize("kind", list(GLOBAL))
def test_global_pooling_forward_and_gradients(kind, mode, dtype, tol):
    shape, ref = GLOBAL[kind]
    layer = make_layer(kind)
    out_shape = layer.output_shape(shape)
    assert out_shape == (3,)
    x = np.random.default_rng(3).normal(size=(2, *shape))
    got = np.asarray(compile_layer(layer, x.shape, {}, mode=mode, dtype=dtype)(x.astype(dtype)))
    np.testing.assert_allclose(got, ref(x), rtol=tol, atol=tol)
    if mode == "FAST_COMPILE":
        check_layer_gradients(layer, x.shape, {}, np.random.default_rng(4))


def _build(layers, input_shape):
    cfg = {"data": {"train": str(ROOT / "data" / "majority.h5")}, "optimizer": "adam", "layers": layers}
    return network.build(spec.from_dict(cfg, "pool.yaml"), input_shape)


@pytest.mark.parametrize("layers,input_shape,words", [
    ([{"type": "max_pool1d", "pool_size": 4}], (3, 2), ["layers[0]", "max_pool1d", "pool_size 4", "3 time steps",
                                                       "padding: same"]),
    ([{"type": "avg_pool1d"}], (12,), ["2-D (time, channels)", "(12,)", "[12, 1]"]),
    ([{"type": "global_avg_pool1d"}], (2, 3, 4), ["global_avg_pool1d", "2-D (time, channels)", "(2, 3, 4)"]),
    ([{"type": "global_max_pool2d"}], (5, 3), ["global_max_pool2d", "3-D (channels, height, width)", "(5, 3)"]),
    ([{"type": "max_pool1d", "padding": "causal"}], (5, 3), ["layers[0].padding", "valid, same"]),
])
def test_pool_shape_and_key_errors(layers, input_shape, words):
    with pytest.raises(ConfigError) as info:
        _build(layers, input_shape)
    msg = str(info.value)
    assert "pool.yaml" in msg and "\n" not in msg
    for word in words:
        assert word in msg, msg


def test_shapes_of_a_pooling_stack():
    net = _build([{"type": "conv1d", "filters": 4, "kernel_size": 3, "padding": "same"},
                  {"type": "max_pool1d"}, {"type": "avg_pool1d", "pool_size": 3, "stride": 1, "padding": "same"},
                  {"type": "global_max_pool1d"}], (15, 3))
    assert net.shapes == [(15, 4), (7, 4), (7, 4), (4,)]
