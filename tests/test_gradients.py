"""Every loss x activation: nncli's loss matches a numpy re-implementation, and
pytensor.grad of nncli's graph matches central finite differences of that numpy loss.

Built in float64 with the FAST_COMPILE mode (no JAX: it computes in float32),
as one function computing every combination, so it compiles once.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from nncli import activations, losses
from nncli.activations import ACTIVATIONS
from nncli.losses import LOSSES

ACTS = ACTIVATIONS.names()
LOSS_NAMES = LOSSES.names()
RNG = np.random.default_rng(0)
N, D, K = 5, 3, 4
X = RNG.normal(size=(N, D))
W0 = RNG.normal(size=(D, K)) * 0.7
B0 = RNG.normal(size=K) * 0.1


def np_act(name, z):
    return {
        "linear": lambda: z,
        "sigmoid": lambda: 1 / (1 + np.exp(-z)),
        "tanh": lambda: np.tanh(z),
        "relu": lambda: np.maximum(z, 0),
        "leaky_relu": lambda: np.where(z > 0, z, 0.01 * z),
        "elu": lambda: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
        "softplus": lambda: np.log1p(np.exp(z)),
        "softmax": lambda: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True),
    }[name]()


def np_loss(name, t, p):
    eps = 1e-7
    if name == "categorical_crossentropy":
        return -(t * np.log(np.clip(p, eps, 1))).sum(1)
    if name == "binary_crossentropy":
        q = np.clip(p, eps, 1 - eps)
        return -(t * np.log(q) + (1 - t) * np.log(1 - q)).mean(1)
    if name == "mse":
        return ((p - t) ** 2).mean(1)
    if name == "mae":
        return np.abs(p - t).mean(1)
    raise KeyError(name)


def targets(loss):
    if loss == "categorical_crossentropy":
        return np.eye(K)[RNG.integers(0, K, N)]
    if loss == "binary_crossentropy":
        return RNG.integers(0, 2, (N, K)).astype(float)
    return RNG.normal(size=(N, K))


TARGETS = {name: targets(name) for name in LOSS_NAMES}
COMBOS = list(itertools.product(ACTS, LOSS_NAMES))


def np_objective(act, loss, W, b):
    p = np_act(act, X @ W + b)
    return np_loss(loss, TARGETS[loss], p).mean()


@pytest.fixture(scope="module")
def compiled():
    with pytensor.config.change_flags(floatX="float64", mode="FAST_COMPILE"):
        W = pt.dmatrix("W")
        b = pt.dvector("b")
        z = pt.dot(pt.constant(X), W) + b
        outs = []
        for act, loss in COMBOS:
            out = activations.apply(act, z)
            per = losses.per_example_loss(loss, pt.constant(TARGETS[loss]), out, z, act)
            obj = per.mean()
            gw, gb = pytensor.grad(obj, [W, b])
            outs += [obj, gw, gb]
        fn = pytensor.function([W, b], outs, mode="FAST_COMPILE")
    return fn


def _usable(act, W, b):
    """The test point must not sit on a kink (relu, leaky_relu, elu at 0), where FD is meaningless."""
    z = X @ W + b
    if act in ("relu", "leaky_relu", "elu") and np.min(np.abs(z)) < 1e-3:
        return False
    return True


@pytest.mark.parametrize("act,loss", COMBOS, ids=[f"{a}-{l}" for a, l in COMBOS])
def test_loss_and_gradient(compiled, act, loss):
    W, b = W0.copy(), B0.copy()
    assert _usable(act, W, b)
    outs = compiled(W, b)
    i = COMBOS.index((act, loss)) * 3
    value, gw, gb = outs[i], outs[i + 1], outs[i + 2]
    # rtol 1e-6, not 1e-9: once a JAX (float32) training graph has been compiled in this
    # process, PyTensor reuses float32-compiled inner graphs of softmax (a ~2e-8 difference).
    np.testing.assert_allclose(value, np_objective(act, loss, W, b), rtol=1e-6, atol=1e-12)
    h = 1e-6
    fd_w = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        Wp, Wm = W.copy(), W.copy()
        Wp[idx] += h
        Wm[idx] -= h
        fd_w[idx] = (np_objective(act, loss, Wp, b) - np_objective(act, loss, Wm, b)) / (2 * h)
    fd_b = np.array([(np_objective(act, loss, W, b + h * e) - np_objective(act, loss, W, b - h * e)) / (2 * h)
                     for e in np.eye(K)])
    np.testing.assert_allclose(gw, fd_w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gb, fd_b, rtol=1e-5, atol=1e-7)


def test_stable_softmax_crossentropy_matches_naive_form_and_survives_large_logits():
    with pytensor.config.change_flags(floatX="float64", mode="FAST_COMPILE"):
        z = pt.dmatrix("z")
        t = pt.dmatrix("t")
        out = activations.apply("softmax", z)
        stable = losses.per_example_loss("categorical_crossentropy", t, out, z, "softmax")
        fn = pytensor.function([z, t], stable, mode="FAST_COMPILE")
    logits = np.array([[1000.0, 0.0, -1000.0], [0.5, 0.2, 0.1]])
    tt = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    got = fn(logits, tt)
    # closed form: -log softmax_j = logsumexp(z) - z_j
    m = logits.max(1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True))).ravel()
    np.testing.assert_allclose(got, lse - (tt * logits).sum(1), rtol=1e-6)  # see the note above
