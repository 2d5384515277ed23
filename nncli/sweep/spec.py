"""The sweep file: validated with nncli.schema's validators; parameter paths are nncli.overrides
paths (the same as `nncli train --set`), and every parameter's values are checked against the
base config (spec.load with sets) before any trial runs."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nncli import overrides, spec as spec_mod
from nncli.errors import ConfigError, NncliError
from nncli.schema import Invalid, Key, boolean, choice, integer, list_of, mapping, number, optional, string

SPACES = ("loguniform", "uniform", "int", "choice", "grid")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median", "hyperband")
LOSS_LIKE = ("loss", "error", "mse", "mae", "rmse")


@dataclass(frozen=True)
class Parameter:
    path: str
    space: str
    lower: float | None = None
    upper: float | None = None
    log: bool = False
    values: tuple = ()

    def corners(self) -> list:
        """The values checked against the base config before the sweep starts."""
        if self.space in ("choice", "grid"):
            return list(self.values)
        if self.space == "int":
            return [int(self.lower), int(self.upper)]
        return [float(self.lower), float(self.upper)]


@dataclass(frozen=True)
class Sweep:
    source: str
    name: str
    base: Path
    metric: str
    goal: str
    samples: int
    parallel: int
    sampler: dict
    pruner: dict
    retries: int
    parameters: tuple[Parameter, ...]
    epochs: int  # the base config's epochs (hyperband's max resource)


def yaml_value(value: Any) -> str:
    """A value as YAML text that nncli.overrides reads back as the same value (1e-05 -> 1.0e-05)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.split("\n...")[0].strip()


def assignment(path: str, value: Any) -> str:
    return f"{path}={yaml_value(value)}"


def _path(value, path):
    value = string()(value, path)
    try:
        overrides.parse_path(value)
    except ConfigError as exc:
        raise Invalid(path, exc.message) from None
    return value


def _values(value, path):
    return tuple(list_of(lambda v, p: v, min_len=1)(value, path))


PARAM_KEYS = {
    "space": Key(choice(*SPACES), doc="loguniform | uniform | int | choice | grid"),
    "lower": Key(optional(number()), None, "lower bound (loguniform, uniform, int)"),
    "upper": Key(optional(number()), None, "upper bound (loguniform, uniform, int)"),
    "log": Key(boolean(), False, "int: sample on a log scale"),
    "values": Key(optional(_values), None, "the values (choice, grid)"),
}


def _parameter(value, path, name) -> Parameter:
    p = mapping(value, path, PARAM_KEYS, "mapping with space: and its bounds or values")
    space = p["space"]
    if space in ("choice", "grid"):
        if p["values"] is None:
            raise Invalid(f"{path}.values", f"space {space} needs values: [a list]")
        if p["lower"] is not None or p["upper"] is not None:
            raise Invalid(path, f"space {space} takes values:, not lower:/upper:")
        return Parameter(name, space, values=p["values"])
    if p["values"] is not None:
        raise Invalid(f"{path}.values", f"space {space} takes lower: and upper:, not values:")
    for k in ("lower", "upper"):
        if p[k] is None:
            raise Invalid(f"{path}.{k}", f"space {space} needs {k}: (a number)")
        if not math.isfinite(p[k]):
            raise Invalid(f"{path}.{k}", f"expected a finite number, got {p[k]}")
    lower, upper = p["lower"], p["upper"]
    if lower > upper:
        raise Invalid(f"{path}.lower", f"lower ({lower}) is greater than upper ({upper})")
    if space == "int":
        for k in ("lower", "upper"):
            if float(p[k]) != int(p[k]):
                raise Invalid(f"{path}.{k}", f"space int needs integer bounds, got {p[k]}")
        lower, upper = int(lower), int(upper)
    log = p["log"] or space == "loguniform"
    if log and lower <= 0:
        raise Invalid(f"{path}.lower", f"a log scale needs lower > 0, got {lower}")
    if p["log"] and space == "uniform":
        raise Invalid(f"{path}.log", "use space: loguniform for a log scale")
    return Parameter(name, space, lower, upper, log)


def _parameters(value, path):
    if not isinstance(value, dict) or not value:
        raise Invalid(path, "expected a mapping of config paths to spaces, e.g. "
                            "learning_rate: {space: loguniform, lower: 1.0e-4, upper: 1.0e-1}")
    out = []
    for key, item in value.items():
        name = _path(key, f"{path}.{key}")
        out.append(_parameter(item, f"{path}.{key}", name))
    return tuple(out)


SAMPLER_KEYS = {"type": Key(choice(*SAMPLERS), "tpe", "tpe | random | grid"),
                "seed": Key(optional(integer(min=0, max=2**32 - 1)), None, "the sampler's seed")}
PRUNER_KEYS = {"type": Key(choice(*PRUNERS), "none", "none | median | hyperband"),
               "grace_epochs": Key(integer(min=0), 1, "epochs every trial runs before it may be pruned"),
               "startup_trials": Key(integer(min=0), 2, "median: trials that complete before any is pruned")}


def _typed(keys):
    def check(value, path):
        if isinstance(value, str):
            value = {"type": value}
        return mapping(value if value is not None else {}, path, keys)
    return check


def top_keys() -> dict[str, Key]:
    return {
        "name": Key(optional(string()), None, "the sweep's name (default: the file's name)"),
        "base": Key(string(), doc="the training config, relative to the sweep file"),
        "metric": Key(optional(string()), None, "a name in the run's history (default val_loss, else loss)"),
        "goal": Key(optional(choice("minimize", "maximize")), None, "minimize | maximize"),
        "samples": Key(integer(min=1, max=100_000), 20, "trials in all"),
        "parallel": Key(integer(min=1, max=1024), 1, "concurrent trials"),
        "sampler": Key(_typed(SAMPLER_KEYS), {"type": "tpe", "seed": None}, "tpe | random | grid"),
        "pruner": Key(_typed(PRUNER_KEYS), {"type": "none", "grace_epochs": 1, "startup_trials": 2}, "pruning"),
        "retries": Key(integer(min=0, max=100), 1, "reruns of a trial whose process or worker dies"),
        "parameters": Key(_parameters, doc="config paths and their spaces"),
    }


def default_goal(metric: str) -> str:
    m = metric[4:] if metric.startswith("val_") else metric
    return "minimize" if any(w in m for w in LOSS_LIKE) else "maximize"


def load(path: str | os.PathLike, samples: int | None = None, parallel: int | None = None) -> Sweep:
    """Read and validate a sweep file; check each parameter's values against the base config."""
    source = str(path)
    data, lines = spec_mod.load_yaml(path)
    try:
        cfg = mapping(data, "", top_keys(), "mapping of sweep keys")
    except Invalid as exc:
        raise ConfigError(spec_mod.located(source, lines, exc.path, exc.message)) from None
    base = Path(os.path.normpath(Path(path).resolve().parent / cfg["base"]))
    if not base.is_file():
        raise ConfigError(spec_mod.located(source, lines, "base", f"the base config {base} does not exist"))
    try:
        base_spec = spec_mod.load(base)
    except NncliError as exc:
        raise ConfigError(f"{source}: base: {exc.message}") from None
    params = cfg["parameters"]
    for p in params:
        for v in p.corners():
            check_values(source, base, {p.path: v}, f"parameters.{p.path}")
    stype = cfg["sampler"]["type"]
    if stype == "grid":
        bad = [p.path for p in params if p.space not in ("grid", "choice")]
        if bad:
            raise ConfigError(spec_mod.located(source, lines, "sampler.type",
                              f"the grid sampler needs every parameter as space grid or choice; "
                              f"{', '.join(bad)} is not"))
    history_names = _history_names(base_spec)
    metric = cfg["metric"] or ("val_loss" if "val_loss" in history_names else "loss")
    if metric not in history_names:
        raise ConfigError(spec_mod.located(source, lines, "metric",
                          f"'{metric}' is not in the base config's history; expected one of "
                          f"{', '.join(history_names)}"))
    return Sweep(source=source, name=cfg["name"] or Path(source).stem, base=base, metric=metric,
                 goal=cfg["goal"] or default_goal(metric), samples=samples or cfg["samples"],
                 parallel=parallel or cfg["parallel"], sampler=cfg["sampler"], pruner=cfg["pruner"],
                 retries=cfg["retries"], parameters=params, epochs=base_spec["epochs"])


def _history_names(base_spec) -> list[str]:
    names = ["loss", *[m if isinstance(m, str) else str(m.get("type")) for m in base_spec["metrics"]]]
    has_val = base_spec["data"].get("validation") is not None
    return names + ([f"val_{n}" for n in names] if has_val else [])


def check_values(source: str, base: Path, values: dict, where: str | None = None) -> None:
    """The base config with `values` set validates; else one ConfigError naming the sweep file."""
    sets = tuple(assignment(k, v) for k, v in values.items())
    try:
        spec_mod.load(base, sets=sets)
    except NncliError as exc:
        shown = ", ".join(f"{k}={yaml_value(v)}" for k, v in values.items())
        raise ConfigError(f"{source}: {where or 'trial'} ({shown}): {exc.message}") from None
