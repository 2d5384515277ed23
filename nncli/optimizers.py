"""Update rules, by YAML name.

Each optimizer is a small class with validated hyperparameters, a tuple of
per-parameter state slots, and a ``step`` that maps (param, grad, slots) to
the new symbolic values. :func:`build_updates` turns that into the
``updates`` list that ``pytensor.function`` compiles, plus the named shared
state the checkpoint saves (``<slot>/<layer>/<param>`` and ``iterations``).

The learning rate reaches ``step`` as a symbolic value (the trainer's shared
variable), so a schedule changes it between epochs with ``set_value`` and
the compiled function is never rebuilt.

Gradient clipping (the top-level ``clip`` key) is applied to the gradients
here, before the update rule: by value first (each element into
[-value, value]), then by global norm (all gradients scaled by
``min(1, norm / (||g|| + 1e-6))``, ``||g||`` over every parameter together,
as ``torch.nn.utils.clip_grad_norm_``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt

from nncli.registry import Registry
from nncli.schema import Invalid, Key, described, mapping, mapping_schema, number

OPTIMIZERS: Registry = Registry("optimizer")

UNIT = number(min=0.0, max=1.0, max_open=True)
POSITIVE = number(min=0.0, min_open=True)
NONNEGATIVE = number(min=0.0)
CLIP_EPS = 1e-6


class Optimizer:
    """Base: subclasses set `keys`, `slots`, `default_learning_rate` and `step`."""

    keys: dict[str, Key] = {}
    slots: tuple[str, ...] = ()
    default_learning_rate: float = 0.001

    #: initial value of each slot (default 0)
    slot_init: dict[str, str] = {}

    def __init__(self, **hyper: Any):
        self.hyper = hyper
        self.clip: dict[str, float] | None = None  # {"norm": ..., "value": ...}, set by the trainer

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


@OPTIMIZERS.register("nesterov")
class Nesterov(Optimizer):
    """Nesterov momentum (Sutskever et al. 2013, as Keras): v <- mu*v - lr*g; p <- p + mu*v - lr*g."""

    keys = {"momentum": Key(UNIT, 0.9, "momentum coefficient in [0, 1)")}
    slots = ("velocity",)
    default_learning_rate = 0.01

    def step(self, p, g, s, lr, t):
        mu = self.hyper["momentum"]
        v = mu * s["velocity"] - lr * g
        return p + mu * v - lr * g, {"velocity": v}


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


@OPTIMIZERS.register("adamw")
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019, as torch.optim.AdamW):
    p <- p - lr*weight_decay*p, then the Adam step. The decay applies to every parameter."""

    keys = {**Adam.keys, "weight_decay": Key(NONNEGATIVE, 0.01, "decoupled weight decay >= 0")}

    def step(self, p, g, s, lr, t):
        decayed = p - lr * self.hyper["weight_decay"] * p
        new_p, slots = super().step(decayed, g, s, lr, t)
        return new_p, slots


@OPTIMIZERS.register("rmsprop")
class RMSprop(Optimizer):
    """Tieleman & Hinton (2012): ms <- rho*ms + (1-rho)*g^2; p <- p - lr*g/(sqrt(ms) + eps)."""

    keys = {
        "rho": Key(UNIT, 0.9, "decay of the mean square in [0, 1)"),
        "epsilon": Key(POSITIVE, 1e-7, "numerical stabiliser > 0"),
    }
    slots = ("ms",)
    default_learning_rate = 0.001

    def step(self, p, g, s, lr, t):
        rho, eps = self.hyper["rho"], self.hyper["epsilon"]
        ms = rho * s["ms"] + (1.0 - rho) * pt.sqr(g)
        return p - lr * g / (pt.sqrt(ms) + eps), {"ms": ms}


@OPTIMIZERS.register("adagrad")
class Adagrad(Optimizer):
    """Duchi et al. (2011): acc <- acc + g^2; p <- p - lr*g/(sqrt(acc) + eps)."""

    keys = {
        "initial_accumulator": Key(NONNEGATIVE, 0.1, "starting value of the squared-gradient sum >= 0"),
        "epsilon": Key(POSITIVE, 1e-7, "numerical stabiliser > 0"),
    }
    slots = ("accumulator",)
    slot_init = {"accumulator": "initial_accumulator"}
    default_learning_rate = 0.01

    def step(self, p, g, s, lr, t):
        acc = s["accumulator"] + pt.sqr(g)
        return p - lr * g / (pt.sqrt(acc) + self.hyper["epsilon"]), {"accumulator": acc}


@OPTIMIZERS.register("adadelta")
class Adadelta(Optimizer):
    """Zeiler (2012), Algorithm 1, with a learning rate scaling the step (1.0 = the paper):
    Eg <- rho*Eg + (1-rho)*g^2; d <- sqrt(Ed + eps)/sqrt(Eg + eps)*g; Ed <- rho*Ed + (1-rho)*d^2;
    p <- p - lr*d."""

    keys = {
        "rho": Key(UNIT, 0.95, "decay of the running averages in [0, 1)"),
        "epsilon": Key(POSITIVE, 1e-6, "numerical stabiliser > 0"),
    }
    slots = ("grad_sq", "delta_sq")
    default_learning_rate = 1.0

    def step(self, p, g, s, lr, t):
        rho, eps = self.hyper["rho"], self.hyper["epsilon"]
        eg = rho * s["grad_sq"] + (1.0 - rho) * pt.sqr(g)
        d = pt.sqrt(s["delta_sq"] + eps) / pt.sqrt(eg + eps) * g
        ed = rho * s["delta_sq"] + (1.0 - rho) * pt.sqr(d)
        return p - lr * d, {"grad_sq": eg, "delta_sq": ed}


@OPTIMIZERS.register("adamax")
class Adamax(Optimizer):
    """Kingma & Ba (2015), Algorithm 2 (infinity norm): m <- b1*m + (1-b1)*g;
    u <- max(b2*u, |g|); p <- p - lr/(1 - b1^t) * m/(u + eps)."""

    keys = {
        "beta_1": Key(UNIT, 0.9, "first-moment decay in [0, 1)"),
        "beta_2": Key(UNIT, 0.999, "infinity-norm decay in [0, 1)"),
        "epsilon": Key(POSITIVE, 1e-7, "numerical stabiliser > 0"),
    }
    slots = ("m", "u")
    default_learning_rate = 0.002

    def step(self, p, g, s, lr, t):
        b1, b2, eps = self.hyper["beta_1"], self.hyper["beta_2"], self.hyper["epsilon"]
        m = b1 * s["m"] + (1.0 - b1) * g
        u = pt.maximum(b2 * s["u"], pt.abs(g))
        return p - lr / (1.0 - b1 ** t) * m / (u + eps), {"m": m, "u": u}


# --- gradient clipping (top-level key `clip`) ---------------------------------

CLIP_KEYS = {
    "norm": Key(POSITIVE, None, "scale all gradients together so their global L2 norm is at most this"),
    "value": Key(POSITIVE, None, "clip every gradient element into [-value, value]"),
}


def validate_clip(value: Any, path: str) -> dict[str, float] | None:
    """`clip: {norm: 1.0}`, `{value: 0.5}` or both; null/false: off."""
    if value is None or value is False:
        return None
    out = mapping(value, path, CLIP_KEYS, "mapping with norm and/or value")
    if out["norm"] is None and out["value"] is None:
        raise Invalid(path, "give norm (global gradient norm) and/or value (per element), e.g. {norm: 1.0}")
    return out


described(validate_clip, lambda: {"anyOf": [{"type": "null"}, {"const": False}, {
    **mapping_schema(CLIP_KEYS), "anyOf": [{"required": ["norm"]}, {"required": ["value"]}]}]})


def clip_gradients(grads: dict[str, Any], clip: dict[str, float] | None) -> dict[str, Any]:
    """Symbolic clipping: by value, then by global norm (see the module docstring)."""
    if not clip:
        return grads
    out = dict(grads)
    if clip.get("value") is not None:
        c = clip["value"]
        out = {k: pt.clip(g, -c, c) for k, g in out.items()}
    if clip.get("norm") is not None and out:
        total = pt.sqrt(sum(pt.sum(pt.sqr(g)) for g in out.values()))
        scale = pt.minimum(1.0, clip["norm"] / (total + CLIP_EPS))
        out = {k: g * scale for k, g in out.items()}
    return out


@dataclass
class OptimizerState:
    """The shared variables an optimizer owns, by checkpoint name."""

    iterations: Any
    slots: dict[str, Any] = field(default_factory=dict)  # "<slot>/<layer>/<param>" -> shared

    def named(self) -> dict[str, Any]:
        return {"iterations": self.iterations, **self.slots}


def create(name: str, hyper: dict[str, Any], clip: dict[str, float] | None = None) -> Optimizer:
    """An optimizer with its hyperparameters; `hyper` gets the declared defaults for missing keys."""
    cls = OPTIMIZERS.get(name)
    full = {k: key.default for k, key in cls.keys.items()}
    full.update(hyper)
    opt = cls(**full)
    opt.clip = clip or None
    return opt


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
    grads = clip_gradients(grads, getattr(opt, "clip", None))
    for key, p in params.items():
        slots = {}
        for slot in opt.slots:
            init = float(opt.hyper[opt.slot_init[slot]]) if slot in opt.slot_init else 0.0
            var = pytensor.shared(np.full_like(p.get_value(), init), name=f"{slot}/{key}")
            state.slots[f"{slot}/{key}"] = var
            slots[slot] = var
        new_p, new_slots = opt.step(p, grads[key], slots, lr, t)
        updates.append((p, pt.cast(new_p, p.dtype)))
        updates.extend((slots[k], pt.cast(v, slots[k].dtype)) for k, v in new_slots.items())
    return updates, state
