"""Small composable validators for config values.

A validator is a callable ``(value, path) -> value`` that returns the
(normalised) value or raises :class:`Invalid` with the key path and what is
allowed. Layers, optimizers and the top-level spec declare their keys with
these, so every family validates the same way and every error names its key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from nncli.registry import Registry, UnknownName, did_you_mean

Validator = Callable[[Any, str], Any]


def described(check: Validator, json_schema: Callable[[], dict]) -> Validator:
    """Attach the JSON Schema (draft 2020-12) of what `check` accepts, as a function called when the
    schema is generated (registries are complete by then); nncli.schema_export reads it."""
    check.json_schema = json_schema  # type: ignore[attr-defined]
    return check


def json_schema_of(check: Validator) -> dict:
    """The JSON Schema of a validator (`{}`, anything, for one that declares none)."""
    make = getattr(check, "json_schema", None)
    return make() if make is not None else {}

REQUIRED = object()  # marker default: the key must be given


class Invalid(Exception):
    """A bad config value: the key path and a message saying what is allowed."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def integer(min: int | None = None, max: int | None = None) -> Validator:
    def check(value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                value = int(value)
            else:
                raise Invalid(path, f"expected an integer{_range(min, max)}, got {show(value)}")
        if (min is not None and value < min) or (max is not None and value > max):
            raise Invalid(path, f"expected an integer{_range(min, max)}, got {value}")
        return value
    return described(check, lambda: {"type": "integer", **_bounds(min, max)})


def number(min: float | None = None, max: float | None = None,
           min_open: bool = False, max_open: bool = False) -> Validator:
    def describe():
        parts = []
        if min is not None:
            parts.append(f"{'>' if min_open else '>='} {min}")
        if max is not None:
            parts.append(f"{'<' if max_open else '<='} {max}")
        return "a number" + (" " + " and ".join(parts) if parts else "")

    def check(value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(path, f"expected {describe()}, got {show(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise Invalid(path, f"expected a finite number, got {value}")
        if min is not None and (value < min or (min_open and value == min)):
            raise Invalid(path, f"expected {describe()}, got {value}")
        if max is not None and (value > max or (max_open and value == max)):
            raise Invalid(path, f"expected {describe()}, got {value}")
        return value
    return described(check, lambda: {"type": "number", **_bounds(min, max, min_open, max_open)})


def _bounds(min, max, min_open: bool = False, max_open: bool = False) -> dict:
    out = {}
    if min is not None:
        out["exclusiveMinimum" if min_open else "minimum"] = min
    if max is not None:
        out["exclusiveMaximum" if max_open else "maximum"] = max
    return out


def _range(min, max) -> str:
    if min is not None and max is not None:
        return f" from {min} to {max}"
    if min is not None:
        return f" >= {min}"
    if max is not None:
        return f" <= {max}"
    return ""


def boolean() -> Validator:
    def check(value, path):
        if not isinstance(value, bool):
            raise Invalid(path, f"expected true or false, got {show(value)}")
        return value
    return described(check, lambda: {"type": "boolean"})


def string(nonempty: bool = True) -> Validator:
    def check(value, path):
        if not isinstance(value, str) or (nonempty and not value.strip()):
            raise Invalid(path, f"expected a non-empty string, got {show(value)}")
        return value
    return described(check, lambda: {"type": "string", **({"pattern": r"\S"} if nonempty else {})})


def choice(*options: str) -> Validator:
    def check(value, path):
        if value not in options:
            hint = did_you_mean(value, list(options)) if isinstance(value, str) else ""
            raise Invalid(path, f"expected one of {', '.join(options)}, got {show(value)}{hint}")
        return value
    return described(check, lambda: {"enum": list(options)})


def name_in(registry: Registry) -> Validator:
    def check(value, path):
        if not isinstance(value, str):
            raise Invalid(path, f"expected a {registry.family} name (one of {', '.join(registry.names())}), "
                                f"got {show(value)}")
        try:
            registry.get(value)
        except UnknownName as exc:
            raise Invalid(path, exc.describe()) from None
        return value
    return described(check, lambda: {"enum": registry.names()})


def optional(inner: Validator) -> Validator:
    def check(value, path):
        return None if value is None else inner(value, path)
    return described(check, lambda: {"anyOf": [json_schema_of(inner), {"type": "null"}]})


def list_of(inner: Validator, min_len: int = 0, max_len: int | None = None) -> Validator:
    def check(value, path):
        if not isinstance(value, list):
            raise Invalid(path, f"expected a list, got {_kind(value)} {show(value)}")
        if len(value) < min_len or (max_len is not None and len(value) > max_len):
            span = f"{min_len} to {max_len}" if max_len is not None else f"at least {min_len}"
            raise Invalid(path, f"expected a list of {span} items, got {len(value)}")
        return [inner(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return described(check, lambda: {"type": "array", "items": json_schema_of(inner), "minItems": min_len,
                                     **({"maxItems": max_len} if max_len is not None else {})})


def int_tuple(length: int, min: int = 1) -> Validator:
    """An int (repeated) or a list of `length` ints, e.g. kernel_size: 3 or [3, 3]."""
    one = integer(min=min)

    def check(value, path):
        if isinstance(value, list):
            if len(value) != length:
                raise Invalid(path, f"expected {length} integers, got {len(value)}")
            return tuple(one(v, f"{path}[{i}]") for i, v in enumerate(value))
        return (one(value, path),) * length
    return described(check, lambda: {"anyOf": [json_schema_of(one), {"type": "array", "items": json_schema_of(one),
                                                                     "minItems": length, "maxItems": length}]})


def either(*validators: Validator, expected: str) -> Validator:
    def check(value, path):
        for v in validators:
            try:
                return v(value, path)
            except Invalid:
                continue
        raise Invalid(path, f"expected {expected}, got {show(value)}")
    return described(check, lambda: {"anyOf": [json_schema_of(v) for v in validators]})


@dataclass(frozen=True)
class Key:
    validator: Validator
    default: Any = REQUIRED
    doc: str = ""


def mapping(value: Any, path: str, keys: dict[str, Key], what: str = "mapping") -> dict[str, Any]:
    """Validate a mapping against declared keys: unknown keys, missing keys, each value."""
    if not isinstance(value, dict):
        raise Invalid(path or "(top level)", f"expected a {what}, got {_kind(value)} {show(value)}")
    out = {}
    for key in value:
        if key not in keys:
            known = sorted(keys)
            raise Invalid(_join(path, key), f"unknown key{did_you_mean(str(key), known)}; "
                                             f"allowed: {', '.join(known)}")
    for key, spec in keys.items():
        sub = _join(path, key)
        if key in value:
            out[key] = spec.validator(value[key], sub)
        elif spec.default is REQUIRED:
            raise Invalid(sub, f"missing required key ({spec.doc or 'no default'})")
        else:
            out[key] = spec.default
    return out


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def typed(value: Any, path: str, known: list[str], family: str, *, name_ok: bool = True,
          example: str = "") -> tuple[str, dict[str, Any]]:
    """A `{type: NAME, ...}` mapping (or, when `name_ok`, just `NAME`): return NAME and the other keys.

    Layers, optimizers and schedules share this, so all three report a missing or unknown
    type the same way (with the known names and a "did you mean").
    """
    if name_ok and isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        what = f"a {family} name or a mapping with 'type'" if name_ok else f"a mapping with 'type'{example}"
        raise Invalid(path, f"expected {what}, got {show(value)}")
    if "type" not in value:
        raise Invalid(f"{path}.type", f"missing required key (one of {', '.join(known)})")
    kind = value["type"]
    if kind not in known:
        hint = did_you_mean(kind, known) if isinstance(kind, str) else ""
        raise Invalid(f"{path}.type", f"unknown {family} {show(kind)}{hint}; known: {', '.join(known)}")
    return kind, {k: v for k, v in value.items() if k != "type"}


# --- JSON Schema of declared keys (nncli.schema_export builds the whole document from these) ---

def mapping_schema(keys: dict[str, Key], extra: dict[str, dict] | None = None) -> dict:
    """The JSON Schema of a mapping validated by `mapping(value, path, keys)`: its keys with their
    types, defaults and descriptions, the required ones, and no others (unknown keys are errors)."""
    props = {**(extra or {})}
    for name, key in keys.items():
        sub = dict(json_schema_of(key.validator))
        if key.doc:
            sub["description"] = key.doc
        if key.default is not REQUIRED and _accepts(key.validator, key.default):
            sub["default"] = _json_default(key.default)  # (not a marker such as early_stopping's "default")
        props[name] = sub
    out = {"type": "object", "properties": props, "additionalProperties": False}
    required = [name for name, key in keys.items() if key.default is REQUIRED]
    if required:
        out["required"] = required
    return out


def typed_schema(kinds: dict[str, dict[str, Key]], family: str, name_ok: bool = True,
                 extra: dict[str, dict] | None = None) -> dict:
    """The JSON Schema of a `{type: NAME, ...}` value validated by `typed` then `mapping`: one
    branch per type (`oneOf`), each with only its own keys; `NAME` alone where `name_ok`."""
    branches = []
    for kind, keys in kinds.items():
        branch = mapping_schema(keys, {"type": {"const": kind, "description": f"{family} type"}, **(extra or {})})
        branch["required"] = ["type", *branch.get("required", [])]
        branch["title"] = kind
        branches.append(branch)
    if name_ok:
        branches.append({"enum": list(kinds), "description": f"a {family} with its default settings"})
    return {"oneOf": branches}


def _accepts(check: Validator, value: Any) -> bool:
    try:
        check(value, "")
    except Invalid:
        return False
    return True


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_default(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_default(v) for k, v in value.items()}
    return value
