"""dropout and batch_norm: training vs inference graphs, the dropout mask
against an independent numpy implementation of the documented hash (under
JAX and NUMBA), batch statistics weighted by the sample weights, running
statistics against a numpy recurrence, gradients against finite differences,
and an exact resume of a run that uses both layers.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import h5py
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from nncli.layers import LAYERS, Context
from nncli.schema import mapping

ROOT = Path(__file__).resolve().parents[1]
# JAX without x64 warns when PyTensor's float64 accumulators are truncated to float32
pytestmark = [pytest.mark.filterwarnings("ignore:Explicitly requested dtype"), pytest.mark.usefixtures("jax_backend")]
RNG = np.random.default_rng(99)


def make_layer(kind: str, name: str | None = None, **config):
    cls = LAYERS.get(kind)
    return cls(name or f"{kind}_1", mapping(config, "layer", cls.keys))


# --- dropout: the numpy reference of the documented counter-based hash -------------

M32 = np.uint64(0xFFFFFFFF)


def np_lowbias32(x):
    x = np.asarray(x, dtype=np.uint64) & M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & M32
    x ^= x >> np.uint64(16)
    return x


def np_keep_mask(shape, step, seed, name, rate):
    key = np_lowbias32(np_lowbias32(seed) ^ np.uint64(zlib.crc32(name.encode())))
    s = np_lowbias32((np.uint64(step) + key) & M32)
    idx = np.arange(int(np.prod(shape)), dtype=np.uint64)
    h = np_lowbias32((np_lowbias32(idx ^ s) + key) & M32)
    return ((h >> np.uint64(8)).astype(np.float64) * 2.0**-24 < 1.0 - rate).reshape(shape)


def test_lowbias32_reference_values():
    """Pin the mixer itself: lowbias32(0) = 0, and a value computed by hand-checked Python ints."""
    def py(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)
    for v in (0, 1, 12345, 0xFFFFFFFF, 0x80000000):
        assert int(np_lowbias32(v)) == py(v)
    assert py(0) == 0 and py(1) != 1


def _dropout_fn(layer, shape, mode):
    x = pt.tensor("x", dtype="float32", shape=shape)
    it = pt.scalar("iterations", dtype="float32")
    y = layer.linear(x, {}, Context(training=True, state={"iterations": it}, seed=SEED))
    return pytensor.function([x, it], y, mode=mode)


SEED = 20240


@pytest.mark.parametrize("mode", ["JAX", "NUMBA"])
def test_dropout_mask_equals_numpy_reference(mode):
    shape, rate = (7, 3, 5), 0.37
    layer = make_layer("dropout", name="drop_a", rate=rate)
    fn = _dropout_fn(layer, shape, mode)
    x = np.ones(shape, dtype=np.float32)
    for step in (0, 1, 2, 1000, 123_456, 2**24 - 1):
        got = np.asarray(fn(x, np.float32(step)))
        keep = np_keep_mask(shape, step, SEED, "drop_a", rate)
        np.testing.assert_array_equal(got != 0, keep, err_msg=f"{mode}, step {step}")
        np.testing.assert_allclose(got[keep], np.float32(1 / (1 - rate)), rtol=1e-6)


def test_dropout_is_identity_in_inference():
    layer = make_layer("dropout", rate=0.5)
    x = pt.matrix("x", dtype="float32")
    xv = RNG.normal(size=(16, 9)).astype("float32")
    assert layer.linear(x, {}, Context(training=False)) is x
    np.testing.assert_array_equal(pytensor.function([x], layer.linear(x, {}, Context(training=False)))(xv), xv)


def test_dropout_training_scales_and_drops_the_rate():
    rate, shape = 0.3, (64, 50)
    layer = make_layer("dropout", rate=rate)
    fn = _dropout_fn(layer, shape, None)
    xv = RNG.uniform(0.5, 1.5, size=shape).astype("float32")
    outs = np.stack([np.asarray(fn(xv, np.float32(t))) for t in range(6)])
    dropped = (outs == 0).mean()
    assert abs(dropped - rate) < 0.015, dropped
    assert abs(outs.mean() / xv.mean() - 1.0) < 0.03
    kept = outs != 0
    np.testing.assert_allclose(outs[kept], np.broadcast_to(xv / (1 - rate), outs.shape)[kept], rtol=1e-6)
    # a fresh mask every step; the same mask for the same step
    assert all((outs[i] != 0).tolist() != (outs[i + 1] != 0).tolist() for i in range(5))
    np.testing.assert_array_equal(np.asarray(fn(xv, np.float32(3))), outs[3])
    # per-row drop rates are all near the rate (no structure along the batch axis)
    assert np.abs((outs == 0).mean(axis=(0, 2)) - rate).max() < 0.1


def test_dropout_masks_depend_on_layer_name_and_seed():
    shape = (32, 40)
    a = np_keep_mask(shape, 5, SEED, "drop_a", 0.5)
    assert (a != np_keep_mask(shape, 5, SEED, "drop_b", 0.5)).mean() > 0.4
    assert (a != np_keep_mask(shape, 5, SEED + 1, "drop_a", 0.5)).mean() > 0.4
    layer = make_layer("dropout", name="drop_b", rate=0.5)
    got = np.asarray(_dropout_fn(layer, shape, None)(np.ones(shape, "float32"), np.float32(5)))
    np.testing.assert_array_equal(got != 0, np_keep_mask(shape, 5, SEED, "drop_b", 0.5))


def test_dropout_rate_zero_is_identity_and_rate_one_is_rejected():
    from nncli.schema import Invalid

    layer = make_layer("dropout", rate=0.0)
    x = pt.matrix("x", dtype="float32")
    assert layer.linear(x, {}, Context(training=True, state={})) is x
    with pytest.raises(Invalid, match="rate"):
        make_layer("dropout", rate=1.0)


# --- batch_norm ------------------------------------------------------------------

def np_batch_norm(x, w, gamma, beta, eps, axes):
    """Weighted (biased) batch statistics over `axes`; returns (y, mean, var)."""
    wb = w.reshape((-1,) + (1,) * (x.ndim - 1)) * np.ones_like(x)
    mean = (wb * x).sum(axis=axes) / wb.sum(axis=axes)
    shape = [1] * x.ndim
    feat = [a for a in range(x.ndim) if a not in axes][0]
    shape[feat] = -1
    var = (wb * (x - mean.reshape(shape)) ** 2).sum(axis=axes) / wb.sum(axis=axes)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) + beta.reshape(shape)
    return y, mean, var


def _bn_setup(per_example_shape, momentum=0.9, eps=1e-3):
    layer = make_layer("batch_norm", momentum=momentum, epsilon=eps)
    assert layer.output_shape(per_example_shape) == per_example_shape
    params = layer.init_params(per_example_shape, None)
    state = layer.init_state(per_example_shape)
    n = params["gamma"].shape[0]
    np.testing.assert_array_equal(state["running_mean"], np.zeros(n))
    np.testing.assert_array_equal(state["running_var"], np.ones(n))
    shared = {k: pytensor.shared(v, name=k) for k, v in {**params, **state}.items()}
    return layer, shared


@pytest.mark.parametrize("per_example,axes", [((6,), (0,)), ((3, 4, 5), (0, 2, 3)), ((4, 3), (0, 1))],
                         ids=["features", "channels-hw", "steps-features"])
def test_batch_norm_training_running_stats_and_inference(per_example, axes):
    momentum, eps, batch = 0.9, 1e-3, 8
    layer, shared = _bn_setup(per_example, momentum, eps)
    gamma = RNG.uniform(0.5, 1.5, size=shared["gamma"].get_value().shape).astype("float32")
    beta = RNG.normal(size=gamma.shape).astype("float32")
    shared["gamma"].set_value(gamma)
    shared["beta"].set_value(beta)
    x = pt.tensor("x", dtype="float32", shape=(batch, *per_example))
    w = pt.tensor("w", dtype="float32", shape=(batch,))
    ctx = Context(training=True, sample_weight=w)
    train = pytensor.function([x, w], layer.linear(x, shared, ctx), updates=ctx.updates)
    assert len(ctx.updates) == 2
    infer = pytensor.function([x], layer.linear(x, shared, Context(training=False)))

    run_mean = np.zeros_like(gamma, dtype=np.float64)
    run_var = np.ones_like(gamma, dtype=np.float64)
    for step in range(4):
        xv = RNG.normal(loc=2.0, scale=3.0, size=(batch, *per_example)).astype("float32")
        wv = np.ones(batch, dtype="float32")
        if step % 2 == 1:  # a padded last batch: 3 rows of garbage with weight 0
            wv[-3:] = 0.0
            xv[-3:] = 1e4
        got = np.asarray(train(xv, wv))
        want, mean, var = np_batch_norm(xv.astype(np.float64), wv.astype(np.float64), gamma.astype(np.float64),
                                        beta.astype(np.float64), eps, axes)
        real = wv > 0
        np.testing.assert_allclose(got[real], want[real], rtol=1e-4, atol=1e-4)
        # the padding rows did not pollute the statistics: the same as the real rows alone
        alone, _, _ = np_batch_norm(xv[real].astype(np.float64), np.ones(real.sum()), gamma, beta, eps, axes)
        np.testing.assert_allclose(got[real], alone, rtol=1e-4, atol=1e-4)
        run_mean = momentum * run_mean + (1 - momentum) * mean
        run_var = momentum * run_var + (1 - momentum) * var
        np.testing.assert_allclose(shared["running_mean"].get_value(), run_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(shared["running_var"].get_value(), run_var, rtol=1e-5, atol=1e-5)

    xv = RNG.normal(size=(batch, *per_example)).astype("float32")
    shape = [1] * (1 + len(per_example))
    shape[[a for a in range(len(shape)) if a not in axes][0]] = -1
    want = ((xv - run_mean.reshape(shape)) / np.sqrt(run_var.reshape(shape) + eps) * gamma.reshape(shape)
            + beta.reshape(shape))
    np.testing.assert_allclose(np.asarray(infer(xv)), want, rtol=1e-4, atol=1e-4)
    assert shared["running_mean"].dtype == "float32" and shared["running_var"].dtype == "float32"


def test_batch_norm_without_center_and_scale_has_no_params():
    layer = make_layer("batch_norm", center=False, scale=False)
    assert layer.init_params((5,), None) == {}
    assert set(layer.init_state((5,))) == {"running_mean", "running_var"}
    assert layer.init_state((7, 3, 3))["running_mean"].shape == (7,)


def test_batch_norm_training_gradients_match_finite_differences():
    rng = np.random.default_rng(5)
    layer = make_layer("batch_norm", epsilon=0.01)
    shape = (5, 2, 3, 3)
    wv = np.array([1.0, 1.0, 0.5, 1.0, 0.0])
    R = rng.normal(size=shape)
    with pytensor.config.change_flags(floatX="float64"):
        x = pt.tensor("x", dtype="float64", shape=shape)
        gamma = pt.vector("gamma", dtype="float64")
        beta = pt.vector("beta", dtype="float64")
        state = {"running_mean": pytensor.shared(np.zeros(2)), "running_var": pytensor.shared(np.ones(2))}
        w = pt.constant(wv)
        y = layer.linear(x, {"gamma": gamma, "beta": beta, **state},
                         Context(training=True, sample_weight=w))
        cost = pt.sum(pt.constant(R) * y * w.dimshuffle(0, "x", "x", "x"))
        wrt = [x, gamma, beta]
        fn = pytensor.function(wrt, [cost, *pytensor.grad(cost, wrt)], mode="FAST_COMPILE")
    arrays = [rng.normal(size=shape), rng.uniform(0.5, 1.5, size=2), rng.normal(size=2)]
    _, *grads = fn(*arrays)
    eps = 1e-6
    for which, g in enumerate(grads):
        a = arrays[which]
        for flat in rng.choice(a.size, size=min(a.size, 15), replace=False):
            ix = np.unravel_index(flat, a.shape)
            plus = [v.copy() for v in arrays]
            minus = [v.copy() for v in arrays]
            plus[which][ix] += eps
            minus[which][ix] -= eps
            fd = (float(fn(*plus)[0]) - float(fn(*minus)[0])) / (2 * eps)
            np.testing.assert_allclose(g[ix], fd, rtol=1e-5, atol=1e-6, err_msg=f"input {which} at {ix}")
    assert np.all(grads[0][-1] == 0)  # a zero-weight row gets no gradient


# --- through the trainer: checkpointed state and an exact resume -------------------

CONFIG = """
name: reg
seed: 3
data:
  train: {train}
  normalize: standard
layers:
  - {{type: dense, units: 8, activation: relu}}
  - {{type: batch_norm, momentum: 0.8}}
  - {{type: dropout, rate: 0.4}}
  - {{type: dense, units: 3, activation: softmax}}
optimizer: adam
learning_rate: 0.01
epochs: {epochs}
batch_size: 16
early_stopping: false
checkpoint_interval: 0
"""


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=100)
    x = rng.normal(size=(100, 16)).astype("float32") + y[:, None].astype("float32")
    path = tmp_path_factory.mktemp("reg") / "small.h5"
    with h5py.File(path, "w") as f:
        f["x"] = x
        f["y"] = y
    return path


def test_resume_with_dropout_and_batch_norm_is_exact(small_h5, tmp_path):
    from nncli import checkpoint
    from nncli.training import trainer

    straight = tmp_path / "straight.yaml"
    straight.write_text(CONFIG.format(train=small_h5, epochs=4))
    trainer.train(straight, output=str(tmp_path / "a"))
    trainer.train(straight, output=str(tmp_path / "b"), epochs=2)
    trainer.train(straight, output=str(tmp_path / "b"), resume=True, epochs=4)  # the run was of 2 epochs: raise it
    a = checkpoint.load(tmp_path / "a" / "last.h5")
    b = checkpoint.load(tmp_path / "b" / "last.h5")
    assert {"batch_norm_2/running_mean", "batch_norm_2/running_var"} <= set(a.params)
    assert "batch_norm_2/running_mean" not in a.trainable
    assert not np.allclose(a.params["batch_norm_2/running_var"], 1.0)  # the running stats moved
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
    assert a.history["loss"] == b.history["loss"]
