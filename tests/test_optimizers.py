"""Every optimizer, step for step, against a numpy reference written independently here.

One compiled function per optimizer updates two problems at once (their
parameters are disjoint): a quadratic bowl and a small tanh network with a
squared-error loss, whose gradients the reference computes by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from support import write_config
from nncli import backend
from nncli.errors import ConfigError

backend.activate(backend.choose("jax", "cpu"))

import pytensor  # noqa: E402
import pytensor.tensor as pt  # noqa: E402

from nncli import optimizers  # noqa: E402

STEPS = 10
RNG = np.random.default_rng(42)
A = np.array([1.0, 2.0, 0.5, 4.0, 0.1])          # quadratic: 0.5 * sum(A q^2) + sum(C q)
C = np.array([0.3, -0.2, 1.0, 0.0, -1.5])
Q0 = np.array([1.0, -2.0, 0.5, 0.3, 3.0])
X = RNG.normal(size=(8, 3))
Y = RNG.normal(size=(8, 2))
INIT = {"q/w": Q0, "net/W1": RNG.normal(size=(3, 4)) * 0.5, "net/b1": RNG.normal(size=4) * 0.1,
        "net/W2": RNG.normal(size=(4, 2)) * 0.5, "net/b2": RNG.normal(size=2) * 0.1}


def numpy_grads(p):
    g = {"q/w": A * p["q/w"] + C}
    h = np.tanh(X @ p["net/W1"] + p["net/b1"])
    o = h @ p["net/W2"] + p["net/b2"]
    d_o = 2.0 * (o - Y) / len(X)
    g["net/W2"] = h.T @ d_o
    g["net/b2"] = d_o.sum(0)
    dz = (d_o @ p["net/W2"].T) * (1.0 - h ** 2)
    g["net/W1"] = X.T @ dz
    g["net/b1"] = dz.sum(0)
    return g


def symbolic_objective(s):
    q = s["q/w"]
    f = 0.5 * pt.sum(A.astype("float32") * q ** 2) + pt.sum(C.astype("float32") * q)
    h = pt.tanh(pt.dot(X.astype("float32"), s["net/W1"]) + s["net/b1"])
    o = pt.dot(h, s["net/W2"]) + s["net/b2"]
    return f + pt.sum((o - Y.astype("float32")) ** 2) / len(X)


# --- the references: one function per rule, (params, grads, state, lr, t, hyper) -> params ----

def ref_sgd(p, g, s, lr, t, h):
    return p - lr * g


def ref_momentum(p, g, s, lr, t, h):
    s["v"] = h["momentum"] * s.get("v", 0.0) - lr * g
    return p + s["v"]


def ref_nesterov(p, g, s, lr, t, h):
    s["v"] = h["momentum"] * s.get("v", 0.0) - lr * g
    return p + h["momentum"] * s["v"] - lr * g


def ref_adam(p, g, s, lr, t, h):
    b1, b2, eps = h["beta_1"], h["beta_2"], h["epsilon"]
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
    m_hat = s["m"] / (1 - b1 ** t)
    v_hat = s["v"] / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adamw(p, g, s, lr, t, h):
    # torch.optim.AdamW: decay first (p *= 1 - lr*wd), then the Adam step
    return ref_adam(p * (1 - lr * h["weight_decay"]), g, s, lr, t, h)


def ref_rmsprop(p, g, s, lr, t, h):
    s["ms"] = h["rho"] * s.get("ms", 0.0) + (1 - h["rho"]) * g * g
    return p - lr * g / (np.sqrt(s["ms"]) + h["epsilon"])


def ref_adagrad(p, g, s, lr, t, h):
    s["acc"] = s.get("acc", h["initial_accumulator"]) + g * g
    return p - lr * g / (np.sqrt(s["acc"]) + h["epsilon"])


def ref_adadelta(p, g, s, lr, t, h):
    rho, eps = h["rho"], h["epsilon"]
    s["eg"] = rho * s.get("eg", 0.0) + (1 - rho) * g * g
    delta = np.sqrt(s.get("ed", 0.0) + eps) / np.sqrt(s["eg"] + eps) * g
    s["ed"] = rho * s.get("ed", 0.0) + (1 - rho) * delta * delta
    return p - lr * delta


def ref_adamax(p, g, s, lr, t, h):
    b1, b2, eps = h["beta_1"], h["beta_2"], h["epsilon"]
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["u"] = np.maximum(b2 * s.get("u", 0.0), np.abs(g))
    return p - lr / (1 - b1 ** t) * s["m"] / (s["u"] + eps)


CASES = {
    # name: (learning rate, hyperparameters given to nncli (others default), reference, full hyperparameters)
    "sgd": (0.1, {}, ref_sgd, {}),
    "momentum": (0.05, {"momentum": 0.8}, ref_momentum, {"momentum": 0.8}),
    "nesterov": (0.05, {}, ref_nesterov, {"momentum": 0.9}),
    "adam": (0.01, {"beta_1": 0.8, "beta_2": 0.99}, ref_adam, {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-7}),
    "adamw": (0.01, {"weight_decay": 0.1}, ref_adamw,
              {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "weight_decay": 0.1}),
    "rmsprop": (0.01, {"rho": 0.8}, ref_rmsprop, {"rho": 0.8, "epsilon": 1e-7}),
    "adagrad": (0.1, {}, ref_adagrad, {"initial_accumulator": 0.1, "epsilon": 1e-7}),
    "adadelta": (1.0, {"rho": 0.9}, ref_adadelta, {"rho": 0.9, "epsilon": 1e-6}),
    "adamax": (0.02, {}, ref_adamax, {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}),
}


def compiled_step(name, hyper, lr_value, clip=None):
    shared = {k: pytensor.shared(v.astype("float32"), name=k) for k, v in INIT.items()}
    grads = dict(zip(shared, pytensor.grad(symbolic_objective(shared), list(shared.values()))))
    lr = pytensor.shared(np.float32(lr_value), name="learning_rate")
    opt = optimizers.create(name, hyper, clip=clip)
    updates, state = optimizers.build_updates(opt, shared, grads, lr)
    return pytensor.function([], [], updates=updates), shared, lr, state


def assert_close(shared, ref, step, what):
    for k, v in ref.items():
        np.testing.assert_allclose(shared[k].get_value(), v, rtol=2e-4, atol=2e-5,
                                   err_msg=f"{what}: {k} after step {step}")


def test_every_optimizer_is_covered():
    assert set(CASES) == set(optimizers.OPTIMIZERS.names())


@pytest.mark.parametrize("name", sorted(CASES))
def test_optimizer_matches_numpy_reference_step_for_step(name):
    lr, hyper, ref_step, full = CASES[name]
    fn, shared, _, state = compiled_step(name, hyper, lr)
    ref = {k: v.copy() for k, v in INIT.items()}
    ref_state = {k: {} for k in INIT}
    for step in range(1, STEPS + 1):
        fn()
        g = numpy_grads(ref)
        ref = {k: ref_step(ref[k], g[k], ref_state[k], lr, step, full) for k in ref}
        assert_close(shared, ref, step, name)
    assert float(state.iterations.get_value()) == STEPS
    moved = np.abs(shared["q/w"].get_value() - Q0).max()
    assert moved > 1e-3, "the parameters hardly moved: the test would not see a wrong rule"


def numpy_clip(g, value=None, norm=None):
    if value is not None:
        g = {k: np.clip(v, -value, value) for k, v in g.items()}
    if norm is not None:
        total = np.sqrt(sum((v ** 2).sum() for v in g.values()))
        g = {k: v * min(1.0, norm / (total + 1e-6)) for k, v in g.items()}
    return g


@pytest.mark.parametrize("clip", [{"norm": 0.5, "value": None}, {"norm": None, "value": 0.3},
                                  {"norm": 1.0, "value": 0.5}])
def test_gradient_clipping_matches_numpy(clip):
    fn, shared, _, _ = compiled_step("momentum", {"momentum": 0.5}, 0.1, clip=clip)
    ref = {k: v.copy() for k, v in INIT.items()}
    ref_state = {k: {} for k in INIT}
    for step in range(1, 6):
        fn()
        g = numpy_clip(numpy_grads(ref), clip["value"], clip["norm"])
        ref = {k: ref_momentum(ref[k], g[k], ref_state[k], 0.1, step, {"momentum": 0.5}) for k in ref}
        assert_close(shared, ref, step, f"clip {clip}")


def test_learning_rate_change_takes_effect_without_recompiling():
    fn, shared, lr, _ = compiled_step("sgd", {}, 0.1)
    before = shared["q/w"].get_value().copy()
    lr.set_value(np.float32(0.0))
    fn()
    np.testing.assert_array_equal(shared["q/w"].get_value(), before)
    lr.set_value(np.float32(0.2))
    fn()
    np.testing.assert_allclose(shared["q/w"].get_value(), before - 0.2 * (A * before + C), rtol=1e-5)


# --- validation: one line naming the file, the key path and the line -------------------------

BASE = """data: {{train: {train}}}
layers:
  - {{type: dense, units: 1}}
{extra}
"""


@pytest.mark.parametrize("extra, path, words", [
    ("learning_rate: -0.1", "learning_rate", "> 0"),
    ("optimizer: {type: adam, beta_1: 1.0}", "optimizer.beta_1", "< 1"),
    ("optimizer: {type: adamax, beta_2: -0.5}", "optimizer.beta_2", ">= 0"),
    ("optimizer: {type: rmsprop, rho: 1.5}", "optimizer.rho", "< 1"),
    ("optimizer: {type: nesterov, momentum: 1}", "optimizer.momentum", "< 1"),
    ("optimizer: {type: adamw, weight_decay: -1}", "optimizer.weight_decay", ">= 0"),
    ("optimizer: {type: adagrad, epsilon: 0}", "optimizer.epsilon", "> 0"),
    ("optimizer: {type: sgd, momentum: 0.9}", "optimizer.momentum", "unknown key"),
    ("optimizer: adamx", "optimizer.type", "did you mean 'adamax'"),
    ("clip: {norm: -1}", "clip.norm", "> 0"),
    ("clip: {}", "clip", "norm"),
    ("clip: {nrom: 1}", "clip.nrom", "did you mean 'norm'"),
])
def test_bad_hyperparameters_are_one_line_config_errors(tmp_path, extra, path, words):
    from nncli import spec

    data = tmp_path / "d.csv"
    data.write_text("a,y\n1,2\n2,3\n")
    config = write_config(tmp_path, BASE.format(train=data, extra=extra))
    with pytest.raises(ConfigError) as info:
        spec.load(config)
    message = info.value.message
    assert info.value.exit_code == 2
    assert "\n" not in message
    assert message.startswith(f"{config}: {path} (line 4)"), message
    assert words in message


def test_optimizer_defaults_fill_missing_hyperparameters():
    opt = optimizers.create("adamw", {"beta_1": 0.5})
    assert opt.hyper == {"beta_1": 0.5, "beta_2": 0.999, "epsilon": 1e-7, "weight_decay": 0.01}
