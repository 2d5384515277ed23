"""dense, flatten, reshape: forward passes against numpy written here, dense's
gradients against central finite differences of that numpy forward pass, and
the shape rules. Compiled in float64 with FAST_COMPILE (tiny shapes, no JAX:
it would compute in float32). embedding is checked with the recurrent layers
(tests/layers/test_recurrent.py), whose compiled fixtures it shares.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from nncli.layers import LAYERS, Context, ShapeError
from nncli.schema import mapping

RNG = np.random.default_rng(7)


def make_layer(kind: str, **config):
    cls = LAYERS.get(kind)
    return cls(f"{kind}_1", mapping(config, "layer", cls.keys))


def _compile(layer, in_shape, params):
    """float64 function (x, *params) -> layer.linear(x), with the params' own names."""
    with pytensor.config.change_flags(floatX="float64"):
        x = pt.tensor("x", dtype="float64", shape=in_shape)
        sym = {k: pt.tensor(k, dtype="float64", shape=v.shape) for k, v in params.items()}
        y = layer.linear(x, sym, Context(training=False))
        return x, sym, y


def np_dense(x, W, b):
    """y[..., j] = sum_i x[..., i] W[i, j] + b[j], as explicit loops over the output units."""
    out = np.zeros((*x.shape[:-1], W.shape[1]))
    for j in range(W.shape[1]):
        out[..., j] = (x * W[:, j]).sum(axis=-1) + (b[j] if b is not None else 0.0)
    return out


@pytest.mark.parametrize("in_shape,use_bias", [((4, 3), True), ((2, 5, 3), True), ((4, 3), False)],
                         ids=["2-D", "3-D (tensordot)", "no bias"])
def test_dense_forward_matches_numpy(in_shape, use_bias):
    layer = make_layer("dense", units=2, activation="tanh", use_bias=use_bias)
    assert layer.output_shape(in_shape[1:]) == (*in_shape[1:-1], 2)
    assert layer.activation == "tanh"  # applied by the network, not by linear
    params = {k: v.astype(np.float64) for k, v in layer.init_params(in_shape[1:], RNG).items()}
    assert set(params) == ({"W", "b"} if use_bias else {"W"}) and params["W"].shape == (3, 2)
    if use_bias:
        np.testing.assert_array_equal(params["b"], 0.0)
        params["b"] = RNG.normal(size=2)
    x, sym, y = _compile(layer, in_shape, params)
    fn = pytensor.function([x, *sym.values()], y, mode="FAST_COMPILE")
    xv = RNG.normal(size=in_shape)
    np.testing.assert_allclose(fn(xv, *params.values()), np_dense(xv, params["W"], params.get("b")),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("in_shape", [(3, 4), (2, 3, 4)], ids=["2-D", "3-D (tensordot)"])
def test_dense_gradients_match_finite_differences_of_numpy(in_shape):
    """d/d(x, W, b) of sum(R * tanh(dense(x))) against central differences of the numpy version."""
    layer = make_layer("dense", units=3)
    params = {"W": RNG.normal(size=(4, 3)), "b": RNG.normal(size=3)}
    R = RNG.normal(size=(*in_shape[:-1], 3))
    x, sym, y = _compile(layer, in_shape, params)
    with pytensor.config.change_flags(floatX="float64"):
        cost = pt.sum(pt.constant(R) * pt.tanh(y))
        wrt = [x, *sym.values()]
        fn = pytensor.function(wrt, pytensor.grad(cost, wrt), mode="FAST_COMPILE")
    arrays = [RNG.normal(size=in_shape), params["W"], params["b"]]
    grads = fn(*arrays)

    def np_cost(xv, W, b):
        return float((R * np.tanh(np_dense(xv, W, b))).sum())

    eps = 1e-6
    for which, (name, g) in enumerate(zip(["x", "W", "b"], grads)):
        a = arrays[which]
        fd = np.zeros_like(a)
        for ix in np.ndindex(a.shape):
            plus = [v.copy() for v in arrays]
            minus = [v.copy() for v in arrays]
            plus[which][ix] += eps
            minus[which][ix] -= eps
            fd[ix] = (np_cost(*plus) - np_cost(*minus)) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8, err_msg=f"gradient wrt {name}")


def test_flatten_and_reshape_match_numpy():
    xv = RNG.normal(size=(2, 3, 4))
    flatten = make_layer("flatten")
    reshape = make_layer("reshape", shape=[4, 3])
    assert flatten.output_shape((3, 4)) == (12,)
    assert reshape.output_shape((3, 4)) == (4, 3)
    assert reshape.output_shape((12,)) == (4, 3)
    with pytensor.config.change_flags(floatX="float64"):
        x = pt.tensor("x", dtype="float64", shape=(2, 3, 4))
        fn = pytensor.function([x], [flatten.linear(x, {}, Context(training=False)),
                                     reshape.linear(x, {}, Context(training=False))], mode="FAST_COMPILE")
        flat2 = pt.matrix("flat2", dtype="float64")
        assert flatten.linear(flat2, {}, Context(training=False)) is flat2  # already flat: unchanged
    flat, reshaped = fn(xv)
    np.testing.assert_array_equal(flat, xv.reshape(2, 12))
    np.testing.assert_array_equal(reshaped, xv.reshape(2, 4, 3))


def test_shape_errors_say_what_would_work():
    with pytest.raises(ShapeError,
                       match=r"reshape cannot turn shape \(3, 4\) \(12 values\) into \[5, 2\] \(10 values\)"):
        make_layer("reshape", shape=[5, 2]).output_shape((3, 4))
    with pytest.raises(ShapeError, match=r"dense expects at least 1-D input per example, got shape \(\)"):
        make_layer("dense", units=2).output_shape(())


def test_core_layer_kinds():
    assert [LAYERS.get(t).kind for t in ("dense", "flatten", "reshape", "embedding")] == \
        ["dense", "other", "other", "other"]
