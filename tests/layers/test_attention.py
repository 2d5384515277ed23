"""multi_head_attention, position_embedding and layer_norm: forward passes against numpy written
here (Keras MultiHeadAttention's arithmetic, head by head), on JAX (float32) and FAST_COMPILE
(float64); gradients against central finite differences; causal masking by perturbing future
inputs; attention dropout against the numpy reference of the dropout layer's counter-based mask;
validation errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from nncli import network, spec
from nncli.errors import ConfigError
from nncli.layers import LAYERS, Context
from nncli.schema import mapping
from support import check_layer_gradients, compile_layer, compile_layers, np_keep_mask

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.filterwarnings("ignore:Explicitly requested dtype"), pytest.mark.usefixtures("jax_backend")]
MODES = [("JAX", "float32", 1e-4), ("FAST_COMPILE", "float64", 1e-10)]


def make_layer(kind: str, name: str | None = None, **config):
    cls = LAYERS.get(kind)
    return cls(name or f"{kind}_1", mapping(config, "layer", cls.keys))


# --- numpy references ---------------------------------------------------------------------

def np_softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_mha(q_in, v_in, p, heads, dk, dv, causal=False, keep=None, rate=0.0):
    """Keras MultiHeadAttention (key = value), one head at a time."""
    def lin(x, n):
        return x @ p[f"W{n}"] + p.get(f"b{n}", 0.0)

    Q, K, V = lin(q_in, "q"), lin(v_in, "k"), lin(v_in, "v")
    tq, tv = q_in.shape[1], v_in.shape[1]
    outs = []
    for h in range(heads):
        Qh, Kh, Vh = Q[..., h * dk:(h + 1) * dk], K[..., h * dk:(h + 1) * dk], V[..., h * dv:(h + 1) * dv]
        S = np.einsum("bik,bjk->bij", Qh, Kh) / np.sqrt(dk)
        if causal:
            S = np.where(np.arange(tv)[None, :] <= np.arange(tq)[:, None], S, -np.inf)
        A = np_softmax(S)
        if keep is not None:
            A = np.where(keep[:, h], A / (1.0 - rate), 0.0)
        outs.append(A @ Vh)
    return np.concatenate(outs, axis=-1) @ p["Wo"] + p.get("bo", 0.0)


def random_params(layer, input_shape, rng):
    shapes = {k: v.shape for k, v in layer.init_params(input_shape, np.random.default_rng(0)).items()}
    return {k: rng.normal(0, 0.5, size=s) for k, s in shapes.items()}


ATTENTION = [
    # (time, features, num_heads, key_dim, value_dim, causal, use_bias)
    (6, 4, 2, 3, None, False, True),
    (6, 4, 2, 3, 5, True, True),
    (5, 3, 1, 4, None, True, False),
    (1, 4, 3, 2, None, True, True),     # time length 1
    (7, 8, 4, 2, None, False, True),
]


@pytest.mark.parametrize("mode,dtype,tol", MODES, ids=[m for m, _, _ in MODES])
def test_self_attention_forward_matches_numpy(mode, dtype, tol):
    """Every case of ATTENTION in one compiled function per backend."""
    items, arrays, wants = [], [], []
    for case in ATTENTION:
        t, f, h, dk, dv, causal, bias = case
        layer = make_layer("multi_head_attention", num_heads=h, key_dim=dk, value_dim=dv, causal=causal,
                           use_bias=bias)
        assert layer.output_shape((t, f)) == (t, f)
        rng = np.random.default_rng(t * 100 + h)
        p = random_params(layer, (t, f), rng)
        hv = h * (dv or dk)
        assert p["Wq"].shape == (f, h * dk) and p["Wv"].shape == (f, hv) and p["Wo"].shape == (hv, f)
        assert ("bq" in p) == bias
        x = rng.normal(size=(3, t, f))
        items.append((layer, x.shape, {k: v.shape for k, v in p.items()}))
        arrays += [x, *p.values()]
        wants.append(np_mha(x, x, p, h, dk, dv or dk, causal))
    got = compile_layers(items, mode=mode, dtype=dtype)(*[a.astype(dtype) for a in arrays])
    for case, g, want in zip(ATTENTION, got, wants):
        assert np.shape(g) == want.shape, case
        np.testing.assert_allclose(np.asarray(g), want, rtol=tol, atol=tol, err_msg=str(case))


def _two_input_fn(layer, q_shape, v_shape, p, mode, dtype, ctx=None):
    with pytensor.config.change_flags(floatX=dtype):
        q = pt.tensor("q", dtype=dtype, shape=q_shape)
        v = pt.tensor("v", dtype=dtype, shape=v_shape)
        sym = {k: pt.tensor(k, dtype=dtype, shape=a.shape) for k, a in p.items()}
        y = layer.linear([q, v], sym, ctx or Context(training=False))
        return pytensor.function([q, v, *sym.values()], y, mode=mode)


@pytest.mark.parametrize("mode,dtype,tol", MODES, ids=[m for m, _, _ in MODES])
@pytest.mark.parametrize("causal", [False, True])
def test_two_input_attention_matches_numpy(causal, mode, dtype, tol):
    """[query, value] with different lengths and feature sizes: output (Tq, query features)."""
    layer = make_layer("multi_head_attention", num_heads=2, key_dim=3, value_dim=2, causal=causal)
    shapes = [(4, 5), (6, 3)]
    assert layer.output_shape(shapes) == (4, 5)
    rng = np.random.default_rng(21)
    p = random_params(layer, shapes, rng)
    assert p["Wq"].shape == (5, 6) and p["Wk"].shape == (3, 6) and p["Wv"].shape == (3, 4) and p["Wo"].shape == (4, 5)
    q, v = rng.normal(size=(2, 4, 5)), rng.normal(size=(2, 6, 3))
    fn = _two_input_fn(layer, q.shape, v.shape, p, mode, dtype)
    got = np.asarray(fn(q.astype(dtype), v.astype(dtype), *[a.astype(dtype) for a in p.values()]))
    np.testing.assert_allclose(got, np_mha(q, v, p, 2, 3, 2, causal), rtol=tol, atol=tol)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_gradients_match_finite_differences(causal):
    rng = np.random.default_rng(8)
    layer = make_layer("multi_head_attention", num_heads=2, key_dim=2, value_dim=3, causal=causal)
    check_layer_gradients(layer, (2, 5, 4), random_params(layer, (5, 4), rng), rng)


class _SplitQueryValue:
    """Feeds a (B, Tq + Tv, F) tensor to the two-input form as [x[:, :Tq], x[:, Tq:]] (gradient check)."""

    def __init__(self, layer, tq):
        self.layer, self.tq, self.name = layer, tq, layer.name

    def linear(self, x, params, ctx):
        return self.layer.linear([x[:, :self.tq], x[:, self.tq:]], params, ctx)


def test_two_input_attention_gradients_match_finite_differences():
    rng = np.random.default_rng(9)
    layer = make_layer("multi_head_attention", num_heads=2, key_dim=2, causal=True)
    check_layer_gradients(_SplitQueryValue(layer, 3), (2, 8, 4), random_params(layer, [(3, 4), (5, 4)], rng), rng)


def test_causal_attention_does_not_see_the_future():
    """Perturbing position t0 leaves every output before t0 bit-identical (and changes the one at t0);
    without causal, every position changes."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 7, 4)).astype("float32")
    for causal in (True, False):
        layer = make_layer("multi_head_attention", num_heads=2, key_dim=3, causal=causal)
        p = {k: v.astype("float32") for k, v in random_params(layer, (7, 4), rng).items()}
        fn = compile_layer(layer, x.shape, {k: v.shape for k, v in p.items()}, mode="JAX")
        for t0 in (0, 3, 6):
            x2 = x.copy()
            x2[:, t0] += 1.0
            y1, y2 = np.asarray(fn(x, *p.values())), np.asarray(fn(x2, *p.values()))
            if causal:
                np.testing.assert_array_equal(y1[:, :t0], y2[:, :t0])
            else:
                assert np.all(np.abs(y1[:, :t0] - y2[:, :t0]).max(axis=-1) > 1e-6)
            assert np.all(np.abs(y1[:, t0] - y2[:, t0]).max(axis=-1) > 1e-6)


def test_attention_dropout_uses_the_dropout_layers_mask():
    """In training, A is masked by the dropout layer's counter-based hash of shape (B, heads, Tq, Tv)
    keyed by this layer's name, the run's seed and the step (numpy reference in tests/support.py);
    in inference there is no dropout. (JAX only: the mask itself is checked under NUMBA in
    test_dropout.py, and NUMBA takes ~100 s to compile this graph.)"""
    rate, seed, shape = 0.3, 77, (3, 5, 4)
    layer = make_layer("multi_head_attention", name="attn_x", num_heads=2, key_dim=2, dropout=rate, causal=True)
    rng = np.random.default_rng(5)
    p = {k: v.astype("float32") for k, v in random_params(layer, shape[1:], rng).items()}
    x = rng.normal(size=shape).astype("float32")
    it = pt.scalar("iterations", dtype="float32")
    xs = pt.tensor("x", dtype="float32", shape=shape)
    sym = {k: pt.tensor(k, dtype="float32", shape=v.shape) for k, v in p.items()}
    y = layer.linear(xs, sym, Context(training=True, state={"iterations": it}, seed=seed))
    fn = pytensor.function([xs, it, *sym.values()], y, mode="JAX")
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    for step in (0, 1, 12345):
        keep = np_keep_mask((3, 2, 5, 5), step, seed, "attn_x", rate)
        want = np_mha(x.astype(np.float64), x.astype(np.float64), p64, 2, 2, 2, True, keep, rate)
        np.testing.assert_allclose(np.asarray(fn(x, np.float32(step), *p.values())), want, rtol=1e-4, atol=1e-4)
    plain = np_mha(x.astype(np.float64), x.astype(np.float64), p64, 2, 2, 2, True)
    infer = compile_layer(layer, shape, {k: v.shape for k, v in p.items()}, mode="JAX")
    np.testing.assert_allclose(np.asarray(infer(x, *p.values())), plain, rtol=1e-4, atol=1e-4)


# --- position_embedding and layer_norm ----------------------------------------------------

@pytest.mark.parametrize("mode,dtype,tol", MODES, ids=[m for m, _, _ in MODES])
def test_position_embedding_adds_its_table(mode, dtype, tol):
    layer = make_layer("position_embedding")
    assert layer.output_shape((6, 4)) == (6, 4)
    assert layer.init_params((6, 4), np.random.default_rng(0))["P"].shape == (6, 4)
    rng = np.random.default_rng(2)
    x, P = rng.normal(size=(3, 6, 4)), rng.normal(size=(6, 4))
    got = np.asarray(compile_layer(layer, x.shape, {"P": P.shape}, mode=mode, dtype=dtype)(x.astype(dtype),
                                                                                          P.astype(dtype)))
    np.testing.assert_allclose(got, x + P[None], rtol=tol, atol=tol)
    if mode == "FAST_COMPILE":
        check_layer_gradients(layer, x.shape, {"P": P}, rng)


def np_layer_norm(x, gamma, beta, eps):
    """Keras LayerNormalization(axis=-1): biased variance of the last axis."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


LAYER_NORM = [((5, 6), {}), ((7,), {"epsilon": 0.1}), ((2, 3, 4), {"center": False}), ((4, 1), {"scale": False})]


@pytest.mark.parametrize("mode,dtype,tol", MODES, ids=[m for m, _, _ in MODES])
def test_layer_norm_matches_numpy(mode, dtype, tol):
    items, arrays, wants = [], [], []
    for shape, cfg in LAYER_NORM:
        layer = make_layer("layer_norm", **cfg)
        assert layer.output_shape(shape) == shape
        names = [n for n in ("gamma", "beta") if cfg.get({"gamma": "scale", "beta": "center"}[n], True)]
        assert sorted(layer.init_params(shape, None)) == sorted(names)
        rng = np.random.default_rng(len(shape))
        p = {n: rng.uniform(0.5, 1.5, size=shape[-1]) for n in names}
        x = rng.normal(2.0, 3.0, size=(3, *shape))
        items.append((layer, x.shape, {k: v.shape for k, v in p.items()}))
        arrays += [x, *p.values()]
        wants.append(np_layer_norm(x, p.get("gamma", 1.0), p.get("beta", 0.0), cfg.get("epsilon", 1e-3)))
    got = compile_layers(items, mode=mode, dtype=dtype)(*[a.astype(dtype) for a in arrays])
    for case, g, want in zip(LAYER_NORM, got, wants):
        np.testing.assert_allclose(np.asarray(g), want, rtol=tol, atol=tol, err_msg=str(case))


@pytest.mark.parametrize("shape,cfg", LAYER_NORM[::2])
def test_layer_norm_gradients_match_finite_differences(shape, cfg):
    layer = make_layer("layer_norm", **cfg)
    rng = np.random.default_rng(12)
    p = {n: rng.uniform(0.5, 1.5, size=shape[-1]) for n in ("gamma", "beta")
         if cfg.get({"gamma": "scale", "beta": "center"}[n], True)}
    check_layer_gradients(layer, (3, *shape), p, rng)


# --- validation ---------------------------------------------------------------------------

def _build(layers, input_shape):
    cfg = {"data": {"train": str(ROOT / "data" / "majority.h5")}, "optimizer": "adam", "layers": layers}
    return network.build(spec.from_dict(cfg, "attn.yaml"), input_shape)


def test_shapes_of_a_transformer_stack():
    net = _build([{"type": "dense", "units": 8}, {"type": "position_embedding"},
                  {"type": "multi_head_attention", "num_heads": 2, "key_dim": 4, "value_dim": 3},
                  {"type": "layer_norm"}, {"type": "dense", "units": 16, "activation": "relu"},
                  {"type": "dropout", "rate": 0.1}, {"type": "global_avg_pool1d"},
                  {"type": "dense", "units": 3, "activation": "softmax"}], (15, 3))
    assert net.shapes == [(15, 8), (15, 8), (15, 8), (15, 8), (15, 16), (15, 16), (16,), (3,)]


@pytest.mark.parametrize("layer,input_shape,words", [
    ({"type": "multi_head_attention", "num_heads": 2}, (5, 3), ["layers[0].key_dim", "missing"]),
    ({"type": "multi_head_attention", "key_dim": 2}, (5, 3), ["layers[0].num_heads", "missing"]),
    ({"type": "multi_head_attention", "num_heads": 2, "key_dim": 2}, (15,), ["multi_head_attention",
                                                                           "2-D (time, features)", "(15,)"]),
    ({"type": "multi_head_attention", "num_heads": 2, "key_dim": 2, "dropout": 1.0}, (5, 3), ["dropout", "< 1"]),
    ({"type": "position_embedding"}, (4, 5, 6), ["position_embedding", "2-D (time, features)", "(4, 5, 6)"]),
    ({"type": "layer_norm", "epsilon": 0}, (5, 3), ["layers[0].epsilon", "> 0"]),
])
def test_attention_config_errors(layer, input_shape, words):
    with pytest.raises(ConfigError) as info:
        _build([layer], input_shape)
    msg = str(info.value)
    assert "attn.yaml" in msg and "\n" not in msg
    for word in words:
        assert word in msg, msg


RESUME_CONFIG = """
name: attn-resume
seed: 3
data:
  train: {train}
  validation: 0.0
layers:
  - {{type: multi_head_attention, num_heads: 2, key_dim: 2, dropout: 0.4}}
  - {{type: global_avg_pool1d}}
  - {{type: dense, units: 2, activation: softmax}}
optimizer: adam
learning_rate: 0.01
epochs: 2
batch_size: 8
early_stopping: false
checkpoint_interval: 0
"""


def test_resume_with_attention_dropout_is_exact(tmp_path):
    """Two epochs straight equal one epoch, then --resume to two, bit for bit: the attention
    dropout's masks follow the checkpointed step counter. Slow (~13 s on 2 cores: three short
    trainings, each compiling its graphs); the one end-to-end check of that claim."""
    import h5py

    from nncli import checkpoint
    from nncli.training import trainer

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=40)
    path = tmp_path / "seq.h5"
    with h5py.File(path, "w") as f:
        f["x"] = (rng.normal(size=(40, 5, 3)) + y[:, None, None]).astype("float32")
        f["y"] = y
    config = tmp_path / "attn.yaml"
    config.write_text(RESUME_CONFIG.format(train=path))
    trainer.train(config, output=str(tmp_path / "a"), backend_name="jax")
    trainer.train(config, output=str(tmp_path / "b"), epochs=1, backend_name="jax")
    trainer.train(config, output=str(tmp_path / "b"), resume=True, epochs=2, backend_name="jax")
    a = checkpoint.load(tmp_path / "a" / "last.h5")
    b = checkpoint.load(tmp_path / "b" / "last.h5")
    assert "multi_head_attention_1/Wq" in a.params
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
    assert a.history["loss"] == b.history["loss"]


def test_sequence_stack_gradient_under_jax_matches_float64():
    """The float32 JAX gradient of conv1d (same) -> max_pool1d (same: -inf padding) -> avg_pool1d ->
    causal attention (-inf scores) -> layer_norm -> global_max_pool1d agrees with the float64 one
    (no NaN from the -inf entries on either backend)."""
    layers = [make_layer("conv1d", filters=4, kernel_size=2, padding="same"),
              make_layer("max_pool1d", pool_size=3, stride=2, padding="same"),
              make_layer("avg_pool1d", pool_size=2, stride=1, padding="same"),
              make_layer("multi_head_attention", num_heads=2, key_dim=2, causal=True),
              make_layer("layer_norm"), make_layer("global_max_pool1d")]
    shape, shapes = (7, 3), []
    for layer in layers:
        shapes.append(shape)
        shape = layer.output_shape(shape)
    rng = np.random.default_rng(13)
    values = {f"p{i}_{k}": rng.normal(0, 0.5, size=v.shape)
              for i, (layer, s) in enumerate(zip(layers, shapes))
              for k, v in layer.init_params(s, np.random.default_rng(0)).items()}
    xv, R = rng.normal(size=(2, 7, 3)), rng.normal(size=(2, *shape))
    results = []
    for dtype, mode in (("float32", "JAX"), ("float64", "FAST_COMPILE")):
        with pytensor.config.change_flags(floatX=dtype):
            x = pt.tensor("x", dtype=dtype, shape=xv.shape)
            sym = {k: pt.tensor(k, dtype=dtype, shape=v.shape) for k, v in values.items()}
            y = x
            for i, layer in enumerate(layers):
                y = layer.linear(y, {k.split("_", 1)[1]: v for k, v in sym.items() if k.split("_")[0] == f"p{i}"},
                                 Context(training=False))
            cost = pt.sum(pt.constant(R.astype(dtype)) * y)
            wrt = [x, *sym.values()]
            fn = pytensor.function(wrt, pytensor.grad(cost, wrt), mode=mode)
            results.append(fn(*[a.astype(dtype) for a in [xv, *values.values()]]))
    for name, g32, g64 in zip(["x", *values], *results):
        assert np.all(np.isfinite(g32)) and np.all(np.isfinite(g64)), name
        np.testing.assert_allclose(np.asarray(g32), g64, rtol=1e-3, atol=1e-4, err_msg=name)
