"""Update rules, by YAML name.

Each optimizer is a small class with validated hyperparameters, a tuple of
per-parameter state slots, and a ``step`` that maps (param, grad, slots) to
the new symbolic values. :func:`build_updates` turns that into the
``updates`` list that ``pytensor.function`` compiles, plus the named shared
state the checkpoint saves (``<slot>/<layer>/<param>`` and ``iterations``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt

from nncli.registry import Registry
from nncli.schema import Key, number

OPTIMIZERS: Registry = Registry("optimizer")

UNIT = number(min=0.0, max=1.0, max_open=True)
POSITIVE = number(min=0.0, min_open=True)


class Optimizer:
    """Base: subclasses set `keys`, `slots`, `default_learning_rate` and `step`."""

    keys: dict[str, Key] = {}
    slots: tuple[str, ...] = ()
    default_learning_rate: float = 0.001

    def __init__(self, **hyper: Any):
        self.hyper = hyper

    def step(self, p, g, s: dict, lr, t):
        """Return (new_param, {slot: new_value}); `t` is the 1-based step count (float)."""
        raise NotImplementedError


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    """The tutorials' rule: p <- p - lr * g."""

    default_learning_rate = 0.01

    def step(self, p, g, s, lr, t):
        return p - lr * g, {}


@OPTIMIZERS.register("momentum")
class Momentum(Optimizer):
    """Classical momentum: v <- mu*v - lr*g; p <- p + v."""

    keys = {"momentum": Key(UNIT, 0.9, "momentum coefficient in [0, 1)")}
    slots = ("velocity",)
    default_learning_rate = 0.01

    def step(self, p, g, s, lr, t):
        v = self.hyper["momentum"] * s["velocity"] - lr * g
        return p + v, {"velocity": v}


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    """Kingma & Ba (2015), Algorithm 1, with bias correction folded into the step size."""

    keys = {
        "beta_1": Key(UNIT, 0.9, "first-moment decay in [0, 1)"),
        "beta_2": Key(UNIT, 0.999, "second-moment decay in [0, 1)"),
        "epsilon": Key(POSITIVE, 1e-7, "numerical stabiliser > 0"),
    }
    slots = ("m", "v")
    default_learning_rate = 0.001

    def step(self, p, g, s, lr, t):
        b1, b2, eps = self.hyper["beta_1"], self.hyper["beta_2"], self.hyper["epsilon"]
        m = b1 * s["m"] + (1.0 - b1) * g
        v = b2 * s["v"] + (1.0 - b2) * pt.sqr(g)
        m_hat = m / (1.0 - b1 ** t)
        v_hat = v / (1.0 - b2 ** t)
        return p - lr * m_hat / (pt.sqrt(v_hat) + eps), {"m": m, "v": v}


@dataclass
class OptimizerState:
    """The shared variables an optimizer owns, by checkpoint name."""

    iterations: Any
    slots: dict[str, Any] = field(default_factory=dict)  # "<slot>/<layer>/<param>" -> shared

    def named(self) -> dict[str, Any]:
        return {"iterations": self.iterations, **self.slots}


def create(name: str, hyper: dict[str, Any]) -> Optimizer:
    return OPTIMIZERS.get(name)(**hyper)


def iterations_variable():
    """The shared step counter (float, so `beta ** t` stays in floatX)."""
    return pytensor.shared(np.zeros((), dtype=pytensor.config.floatX), name="iterations")


def build_updates(opt: Optimizer, params: dict[str, Any], grads: dict[str, Any], lr,
                  iterations=None) -> tuple[list, OptimizerState]:
    """`params`/`grads`: "<layer>/<param>" -> shared / symbolic gradient."""
    iterations = iterations if iterations is not None else iterations_variable()
    t = iterations + np.asarray(1, dtype=iterations.dtype)
    state = OptimizerState(iterations)
    updates = [(iterations, t)]
    for key, p in params.items():
        slots = {}
        for slot in opt.slots:
            var = pytensor.shared(np.zeros_like(p.get_value()), name=f"{slot}/{key}")
            state.slots[f"{slot}/{key}"] = var
            slots[slot] = var
        new_p, new_slots = opt.step(p, grads[key], slots, lr, t)
        updates.append((p, pt.cast(new_p, p.dtype)))
        updates.extend((slots[k], pt.cast(v, slots[k].dtype)) for k, v in new_slots.items())
    return updates, state
