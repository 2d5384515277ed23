"""batch_norm: training vs inference graphs, batch statistics weighted by the
sample weights, running statistics against a numpy recurrence, gradients
against finite differences.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from nncli.layers import LAYERS, Context
from nncli.schema import mapping

# JAX without x64 warns when PyTensor's float64 accumulators are truncated to float32
pytestmark = [pytest.mark.filterwarnings("ignore:Explicitly requested dtype"), pytest.mark.usefixtures("jax_backend")]
RNG = np.random.default_rng(99)


def make_layer(kind: str, name: str | None = None, **config):
    cls = LAYERS.get(kind)
    return cls(name or f"{kind}_1", mapping(config, "layer", cls.keys))


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
