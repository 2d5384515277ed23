"""Merge layers (add, subtract, multiply, average, maximum, concatenate) and the activation layer:
forward passes against numpy written here, gradients against central finite differences of that
numpy version, and the shape rules. Compiled in float64 with FAST_COMPILE, as tests/layers/test_core.py.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from nncli.layers import LAYERS, Context, ShapeError
from nncli.schema import Invalid, mapping

RNG = np.random.default_rng(11)


def make_layer(kind: str, **config):
    cls = LAYERS.get(kind)
    return cls(f"{kind}_1", mapping(config, "layer", cls.keys))


# the numpy references: plain loops / numpy ops on the list of inputs, nothing from nncli
def np_add(xs):
    out = np.zeros_like(xs[0])
    for x in xs:
        out = out + x
    return out


NUMPY = {
    "add": np_add,
    "subtract": lambda xs: xs[0] - xs[1],
    "multiply": lambda xs: np.prod(np.stack(xs), axis=0),
    "average": lambda xs: np_add(xs) / len(xs),
    "maximum": lambda xs: np.max(np.stack(xs), axis=0),
}


def _compile(layer, shapes, grad_of=None):
    """float64 function of the inputs: the layer's output, or (grad_of given: R) d sum(R * tanh(y)) / d inputs."""
    with pytensor.config.change_flags(floatX="float64"):
        xs = [pt.tensor(f"x{i}", dtype="float64", shape=s) for i, s in enumerate(shapes)]
        y = layer.linear(xs, {}, Context(training=False))
        if grad_of is None:
            return pytensor.function(xs, y, mode="FAST_COMPILE")
        cost = pt.sum(pt.constant(grad_of) * pt.tanh(y))
        return pytensor.function(xs, pytensor.grad(cost, xs), mode="FAST_COMPILE")


def _finite_differences(np_fn, arrays, R, eps=1e-6):
    def cost(arrs):
        return float((R * np.tanh(np_fn(arrs))).sum())
    grads = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [b.copy() for b in arrays]
            minus = [b.copy() for b in arrays]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            g[idx] = (cost(plus) - cost(minus)) / (2 * eps)
        grads.append(g)
    return grads


CASES = [("add", 2), ("add", 3), ("subtract", 2), ("multiply", 2), ("multiply", 3), ("average", 2),
         ("average", 4), ("maximum", 2), ("maximum", 3)]


@pytest.mark.parametrize("kind,n", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_elementwise_forward_and_gradients(kind, n):
    shape = (3, 2, 4)   # batch 3, per example (2, 4)
    layer = make_layer(kind)
    assert layer.multi_input() and layer.activation is None
    assert layer.output_shape([shape[1:]] * n) == shape[1:]
    assert layer.init_params([shape[1:]] * n, RNG) == {}
    arrays = [RNG.normal(size=shape) for _ in range(n)]
    np.testing.assert_allclose(_compile(layer, [shape] * n)(*arrays), NUMPY[kind](arrays), rtol=1e-12, atol=1e-12)
    R = RNG.normal(size=shape)
    got = _compile(layer, [shape] * n, grad_of=R)(*arrays)
    for g, want in zip(got, _finite_differences(NUMPY[kind], arrays, R)):
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-8)


def test_maximum_gradient_goes_to_the_larger_input():
    layer = make_layer("maximum")
    a, b = np.array([[1.0, -2.0, 3.0]]), np.array([[0.0, 5.0, -1.0]])
    ga, gb = _compile(layer, [(1, 3), (1, 3)], grad_of=np.ones((1, 3)))(a, b)
    y = np.maximum(a, b)
    np.testing.assert_allclose(ga, [[1 - np.tanh(y[0, 0]) ** 2, 0, 1 - np.tanh(y[0, 2]) ** 2]])
    np.testing.assert_allclose(gb, [[0, 1 - np.tanh(y[0, 1]) ** 2, 0]])


@pytest.mark.parametrize("shapes,axis,want", [
    ([(3,), (5,)], -1, (8,)),
    ([(2, 3), (2, 4), (2, 1)], -1, (2, 8)),
    ([(2, 3), (4, 3)], 0, (6, 3)),
    ([(2, 3), (4, 3)], -2, (6, 3)),
    ([(2, 3, 4), (2, 5, 4)], 1, (2, 8, 4)),
], ids=["vectors", "three, last axis", "axis 0", "axis -2", "middle axis"])
def test_concatenate_forward_and_gradients(shapes, axis, want):
    layer = make_layer("concatenate", axis=axis)
    assert layer.output_shape(shapes) == want
    batch = [(2, *s) for s in shapes]
    arrays = [RNG.normal(size=s) for s in batch]

    def np_concat(xs):   # by hand: copy each input into its slice of the output, along axis + 1
        ax = axis % len(shapes[0]) + 1
        out = np.zeros((2, *want))
        start = 0
        for x in xs:
            index = [slice(None)] * out.ndim
            index[ax] = slice(start, start + x.shape[ax])
            out[tuple(index)] = x
            start += x.shape[ax]
        return out

    np.testing.assert_array_equal(_compile(layer, batch)(*arrays), np_concat(arrays))
    R = RNG.normal(size=(2, *want))
    got = _compile(layer, batch, grad_of=R)(*arrays)
    for g, ref in zip(got, _finite_differences(np_concat, arrays, R)):
        np.testing.assert_allclose(g, ref, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind,shapes,match", [
    ("add", [(3,), (4,)], r"add needs inputs of one shape; inputs\[0\] has shape \(3,\), inputs\[1\] has shape \(4,\)"),
    ("multiply", [(2, 3), (2, 3), (3, 2)], r"inputs\[2\] has shape \(3, 2\)"),
    ("subtract", [(2,), (2, 1)], r"subtract needs inputs of one shape"),
    ("concatenate", [(2, 3), (3, 3)], r"along axis -1 needs every other axis to match; inputs\[0\] has shape "
                                      r"\(2, 3\), inputs\[1\] has shape \(3, 3\)"),
    ("concatenate", [(2, 3), (6,)], r"the same number of axes; inputs\[0\] has shape \(2, 3\), inputs\[1\]"),
], ids=["add", "multiply third", "subtract rank", "concatenate other axis", "concatenate rank"])
def test_shapes_that_cannot_merge(kind, shapes, match):
    with pytest.raises(ShapeError, match=match):
        make_layer(kind).output_shape(shapes)


def test_concatenate_axis_out_of_range():
    with pytest.raises(ShapeError, match=r"axis 2 is out of range for inputs with 2 axes per example \(use -2 .. 1\)"):
        make_layer("concatenate", axis=2).output_shape([(2, 3), (2, 3)])
    with pytest.raises(ShapeError, match=r"axis -3 is out of range"):
        make_layer("concatenate", axis=-3).output_shape([(2, 3), (2, 3)])


def test_input_counts_are_declared():
    assert LAYERS.get("subtract").n_inputs == (2, 2)
    for kind in ("add", "multiply", "average", "maximum", "concatenate"):
        assert LAYERS.get(kind).n_inputs == (2, None)
    for kind in ("dense", "activation", "flatten"):
        assert LAYERS.get(kind).n_inputs == (1, 1) and not LAYERS.get(kind).multi_input()


@pytest.mark.parametrize("act", ["relu", "tanh", "softmax"])
def test_activation_layer(act):
    """{type: activation}: linear is the identity, the network applies the named activation."""
    layer = make_layer("activation", activation=act)
    assert layer.activation == act and layer.output_shape((2, 5)) == (2, 5) and layer.init_params((5,), RNG) == {}
    with pytensor.config.change_flags(floatX="float64"):
        x = pt.tensor("x", dtype="float64", shape=(3, 5))
        fn = pytensor.function([x], layer.linear(x, {}, Context(training=False)), mode="FAST_COMPILE")
    xv = RNG.normal(size=(3, 5))
    np.testing.assert_array_equal(fn(xv), xv)


def test_activation_layer_needs_its_activation():
    with pytest.raises(Invalid, match="missing"):
        make_layer("activation")
