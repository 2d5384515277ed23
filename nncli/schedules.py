"""Learning-rate schedules (the top-level ``schedule`` key).

A schedule is a pure function of the epoch index and the history of the
epochs already finished: ``lr(epoch, history)`` gives the learning rate of
epoch ``epoch`` (0-based). The trainer sets its shared learning-rate
variable with ``set_value`` before each epoch, so the compiled training
function is never rebuilt, and the value used goes into
``history["learning_rate"]`` (metrics.csv).

Because ``reduce_on_plateau`` is replayed from the monitored values in the
history (which the checkpoint stores), its state (best value, epochs
waited, reductions so far) survives ``--resume`` with nothing extra saved.

Closed forms, with ``base`` = the top-level ``learning_rate``, ``W`` =
``warmup_epochs`` and ``e`` = the epoch index after warm-up (``epoch - W``):

* warm-up (any type): epoch ``i < W`` uses ``base * (i + 1) / W``;
* ``constant``: ``base``;
* ``step``: ``base * factor ** floor(e / every)``;
* ``exponential``: ``base * factor ** e``;
* ``cosine``: ``min_lr + (base - min_lr) * (1 + cos(pi * c / T)) / 2`` where,
  without restarts, ``T = period`` (default: the epochs after warm-up) and
  ``c = min(e, T)``; with ``restart: true`` (SGDR, Loshchilov & Hutter 2017)
  the cycles last ``period``, ``period * period_mult``, ... epochs and ``c``
  counts epochs since the last restart;
* ``reduce_on_plateau``: ``max(base * factor ** n, min_lr)`` where ``n``
  counts the reductions so far: after ``patience`` epochs in a row without
  improvement of ``monitor`` (by more than ``min_delta``) the rate is reduced
  and the count starts again after ``cooldown`` epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from nncli.metrics import Monitor
from nncli.registry import Registry, did_you_mean
from nncli.schema import (Invalid, Key, boolean, choice, described, integer, mapping, number, optional, string, typed,
                          typed_schema)

# The schedule types, in the order the docs and the "unknown schedule" error list them.
SCHEDULES: Registry = Registry("schedule", sort=False)

COMMON_KEYS = {"warmup_epochs": Key(integer(min=0, max=1_000_000), 0, "linear warm-up epochs before the schedule")}
FACTOR = number(min=0.0, max=1.0, min_open=True)


class Rule:
    """A schedule type: its keys (besides warmup_epochs, which every type has) and the rate of
    epoch `e`, counted from the end of warm-up, of a Schedule `s` given the finished epochs'
    history."""

    keys: dict[str, Key] = {}

    @staticmethod
    def rate(s: "Schedule", e: int, history: Mapping[str, Sequence[float]]) -> float:
        raise NotImplementedError


@SCHEDULES.register("constant")
class Constant(Rule):
    @staticmethod
    def rate(s, e, history):
        return s.base


@SCHEDULES.register("step")
class Step(Rule):
    keys = {
        "every": Key(integer(min=1, max=1_000_000), 10, "epochs between reductions"),
        "factor": Key(FACTOR, 0.1, "multiplier at each reduction, in (0, 1]"),
    }

    @staticmethod
    def rate(s, e, history):
        return s.base * s.config["factor"] ** (e // s.config["every"])


@SCHEDULES.register("exponential")
class Exponential(Rule):
    keys = {"factor": Key(FACTOR, 0.95, "multiplier per epoch, in (0, 1]")}

    @staticmethod
    def rate(s, e, history):
        return s.base * s.config["factor"] ** e


@SCHEDULES.register("cosine")
class Cosine(Rule):
    keys = {
        "period": Key(optional(integer(min=1, max=1_000_000)), None,
                      "epochs of one cosine cycle (default: all epochs after warm-up)"),
        "min_lr": Key(number(min=0.0), 0.0, "the rate at the end of a cycle"),
        "restart": Key(boolean(), False, "warm restarts (SGDR): start a new cycle after each period"),
        "period_mult": Key(integer(min=1, max=1000), 1, "each cycle is this many times longer (with restart)"),
    }

    @staticmethod
    def rate(s, e, history):
        c = s.config
        lo = c["min_lr"]
        period = c["period"] or max(s.epochs - s.warmup, 1)
        if c["restart"]:
            mult = c["period_mult"]
            while e >= period:
                e -= period
                period *= mult
            pos = e
        else:
            pos = min(e, period)
        return lo + (s.base - lo) * (1.0 + math.cos(math.pi * pos / period)) / 2.0


@SCHEDULES.register("reduce_on_plateau")
class ReduceOnPlateau(Rule):
    keys = {
        "monitor": Key(optional(string()), None, "what to watch (default val_loss with validation data, else loss)"),
        "mode": Key(choice("auto", "min", "max"), "auto", "min for losses and errors, max for accuracy-like"),
        "factor": Key(number(min=0.0, max=1.0, min_open=True, max_open=True), 0.1,
                      "multiplier at each reduction, in (0, 1)"),
        "patience": Key(integer(min=0, max=1_000_000), 10, "epochs without improvement before reducing"),
        "min_delta": Key(number(min=0.0), 0.0, "smallest change that counts as improvement"),
        "cooldown": Key(integer(min=0, max=1_000_000), 0, "epochs to wait after a reduction"),
        "min_lr": Key(number(min=0.0), 0.0, "never reduce below this"),
    }

    @staticmethod
    def rate(s, e, history):
        c = s.config
        values = list(history.get(s.monitor, []))[s.warmup:s.warmup + e]
        return max(s.base * c["factor"] ** plateau_reductions(values, c), c["min_lr"]) if values else s.base


@SCHEDULES.register("warmup")
class Warmup(Rule):
    keys = {"warmup_epochs": Key(integer(min=1, max=1_000_000), doc="epochs of linear warm-up")}

    @staticmethod
    def rate(s, e, history):
        return s.base


def validate(value: Any, path: str) -> dict[str, Any] | None:
    """`schedule: cosine` or `schedule: {type: cosine, ...}`; null: constant."""
    if value is None:
        return None
    kind, rest = typed(value, path, SCHEDULES.names(), "schedule")
    keys = {**COMMON_KEYS, **SCHEDULES.get(kind).keys}
    out = {"type": kind, **mapping(rest, path, keys, "schedule mapping")}
    if kind == "cosine" and out["restart"] and out["period"] is None:
        raise Invalid(f"{path}.period", "restart: true needs the length of the first cycle (period: N epochs)")
    return out


described(validate, lambda: {"anyOf": [{"type": "null"},
                                       typed_schema({k: {**COMMON_KEYS, **SCHEDULES.get(k).keys} for k in SCHEDULES.names()},
                                                    "schedule")]})


def check(cfg: Mapping[str, Any], monitors: Sequence[str], path: str = "schedule") -> None:
    """Checks that need the rest of the config (the monitored name, min_lr below the rate)."""
    sch = cfg.get("schedule")
    if not sch:
        return
    if sch["type"] == "reduce_on_plateau":
        monitor = sch["monitor"] or ("val_loss" if "val_loss" in monitors else "loss")
        if monitor not in monitors:
            raise Invalid(f"{path}.monitor", f"cannot monitor '{monitor}'{did_you_mean(monitor, list(monitors))}; "
                                             f"allowed: {', '.join(monitors)}")
    if "min_lr" in sch and sch["min_lr"] > cfg["learning_rate"]:
        raise Invalid(f"{path}.min_lr", f"min_lr {sch['min_lr']} is above learning_rate {cfg['learning_rate']}")


@dataclass
class Schedule:
    """The learning rate of each epoch; see the module docstring for the closed forms."""

    base: float
    config: Mapping[str, Any] | None = None
    epochs: int = 1
    has_validation: bool = False

    @property
    def kind(self) -> str:
        return self.config["type"] if self.config else "constant"

    @property
    def monitor(self) -> str | None:
        if self.kind != "reduce_on_plateau":
            return None
        return self.config["monitor"] or ("val_loss" if self.has_validation else "loss")

    @property
    def warmup(self) -> int:
        return int((self.config or {}).get("warmup_epochs", 0) or 0)

    def lr(self, epoch: int, history: Mapping[str, Sequence[float]] | None = None) -> float:
        warm = self.warmup
        if epoch < warm:
            return self.base * (epoch + 1) / warm
        return SCHEDULES.get(self.kind).rate(self, epoch - warm, history or {})

    def sequence(self, n: int) -> list[float]:
        """The rates of the first `n` epochs (closed-form schedules)."""
        return [self.lr(i) for i in range(n)]


def plateau_reductions(values: Sequence[float], c: Mapping[str, Any]) -> int:
    """How many times reduce_on_plateau has reduced the rate after seeing `values` (one per epoch).

    A value better than the best (by more than min_delta) resets the wait; otherwise
    the wait grows, and reaching `patience` reduces the rate and resets the wait.
    The `cooldown` epochs after a reduction are not counted (they may still set a
    new best). NaN never improves.
    """
    watch = Monitor(c.get("monitor") or "val_loss", c.get("mode", "auto"), c["min_delta"])
    wait = cooldown = n = 0
    for epoch, v in enumerate(values, 1):
        improved = watch.update(float(v), epoch)
        if improved:
            wait = 0
        if cooldown > 0:  # the epochs right after a reduction are not counted
            cooldown -= 1
            continue
        if not improved:
            wait += 1
            if wait >= c["patience"]:
                n += 1  # the rate is max(base * factor ** n, min_lr): reductions below min_lr are no-ops
                cooldown, wait = c["cooldown"], 0
    return n


def build(spec_cfg: Mapping[str, Any], has_validation: bool) -> Schedule:
    return Schedule(float(spec_cfg["learning_rate"]), spec_cfg["schedule"], int(spec_cfg["epochs"]),
                    has_validation)
