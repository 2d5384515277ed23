"""`--set PATH=VALUE`: change one key of a config's YAML mapping before it is validated.

The one implementation of config paths; `nncli train`, `nncli config` and the sweep's
parameters use it. API:

- ``parse_path("layers[-1].activation") -> ["layers", -1, "activation"]``: dotted keys, each
  followed by any number of list indices (negative ones count from the end);
- ``format_path(parts) -> str``: the inverse;
- ``parse_assignment("layers[0].units=64") -> ("layers[0].units", 64)``: the value is read with
  YAML's safe loader (``false``, ``0.2``, ``[accuracy, f1]``, ``{type: dropout, rate: 0.2}``);
- ``set_path(config_dict, path, value) -> str``: set one value in place; returns the path with
  negative indices resolved (``layers[2].activation``). Every error is a ConfigError (exit 2)
  naming the path and ``--set``: ``--set layers[7].units: there are 3 layers``;
- ``apply(config_dict, assignments) -> (new dict, [resolved paths])``: a deep copy with each
  ``PATH=VALUE`` applied in order (the last one wins);
- ``recorded(config_yaml) / record(assignments)``: the ``# --set: [...]`` comment line with which
  the resolved config stored in a checkpoint records them (so ``--resume`` needs none repeated).

Missing intermediate mappings are created (``--set early_stopping.patience=5``); a type written
as a bare name becomes a mapping (``optimizer: sgd`` + ``--set optimizer.momentum=0.5`` gives
``{type: sgd, momentum: 0.5}``). List items are replaced, never appended: give the whole list
(``--set 'metrics=[accuracy, f1]'``) to change its length.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Sequence

import yaml

from nncli.errors import ConfigError

OPTION = "--set"
MAX_VALUE_CHARS = 100_000
MAX_DEPTH = 50   # as for config files (nncli.spec.MAX_DEPTH)
RECORD_PREFIX = "# --set: "

Part = str | int
_SEGMENT = re.compile(r"([^.\[\]=\s]+)((?:\[[^\]]*\])*)")
_INDEX = re.compile(r"\[([^\]]*)\]")


def _error(path: str, message: str) -> ConfigError:
    return ConfigError(f"{OPTION} {path}: {message}")


def parse_path(text: str) -> list[Part]:
    """`a.b[0][-1].c` -> ["a", "b", 0, -1, "c"]; a ConfigError for anything else."""
    if not isinstance(text, str) or not text.strip():
        raise _error(str(text), "empty path; expected KEY[.KEY...] with list indices, e.g. layers[0].units")
    parts: list[Part] = []
    for segment in text.strip().split("."):
        m = _SEGMENT.fullmatch(segment)
        if not m:
            raise _error(text, f"bad path segment {segment!r}; expected KEY or KEY[INDEX], "
                               f"e.g. layers[0].units or optimizer.type")
        parts.append(m.group(1))
        for index in _INDEX.findall(m.group(2)):
            if not re.fullmatch(r"-?\d{1,9}", index.strip()):
                raise _error(text, f"list index [{index}] is not an integer")
            parts.append(int(index))
    return parts


def format_path(parts: Sequence[Part]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses flow collections (`[`, `{`) nested deeper than MAX_DEPTH
    as it scans them: its scanner does work proportional to the nesting depth for every token, so
    a 1 MB run of `[` would take hours before any later depth check ran. Used for config files
    (nncli.spec) and --set values alike; `where` starts the one-line error."""

    where = ""

    def fetch_flow_collection_start(self, token_class):
        if self.flow_level >= MAX_DEPTH:
            raise ConfigError(f"{self.where}line {self.line + 1}: nested more than {MAX_DEPTH} levels deep")
        super().fetch_flow_collection_start(token_class)


def parse_value(path: str, text: str) -> Any:
    """A --set value: YAML (safe loader only); empty text is null."""
    if len(text) > MAX_VALUE_CHARS:
        raise _error(path, f"the value is longer than {MAX_VALUE_CHARS:,} characters")
    loader = DepthLimitedLoader(text)
    loader.where = f"{OPTION} {path}: "
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise _error(path, f"the value is not valid YAML: {problem} (quote the whole --set for the shell, "
                           f"e.g. --set 'metrics=[accuracy, f1]')") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise _error(path, f"the value is not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def parse_assignment(text: str) -> tuple[str, Any]:
    """`PATH=VALUE` -> (PATH, the YAML value)."""
    if "=" not in text:
        raise ConfigError(f"{OPTION} {text}: expected PATH=VALUE, e.g. --set layers[0].units=64")
    path, value = text.split("=", 1)
    path = path.strip()
    parse_path(path)
    return path, parse_value(path, value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _count(prefix: list[Part], n: int) -> str:
    if prefix == ["layers"]:
        return f"there {'is' if n == 1 else 'are'} {n} layer{'' if n == 1 else 's'}"
    return f"{format_path(prefix)} has {n} item{'' if n == 1 else 's'}"


def set_path(config: dict, path: str | Sequence[Part], value: Any) -> str:
    """Set `path` in the plain config mapping `config` (in place) to `value`; return the path with
    negative indices resolved. Errors are ConfigErrors naming the path and --set."""
    parts = parse_path(path) if isinstance(path, str) else list(path)
    text = path if isinstance(path, str) else format_path(parts)
    if not isinstance(config, dict):
        raise _error(text, f"the config is {_kind(config)}, not a mapping of keys")
    node: Any = config
    resolved: list[Part] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, int):
            if not isinstance(node, list):
                raise _error(text, f"{format_path(resolved) or 'the config'} is {_kind(node)}, not a list; "
                                   f"[{part}] needs a list")
            if not -len(node) <= part < len(node):
                raise _error(text, _count(resolved, len(node)))
            index = part % len(node)
            resolved.append(index)
            if last:
                node[index] = value
            else:
                node[index] = _container(node[index], parts[i + 1], text, resolved)
                node = node[index]
        else:
            if not isinstance(node, dict):
                raise _error(text, f"{format_path(resolved)} is {_kind(node)}, not a mapping; "
                                   f".{part} needs a mapping")
            resolved.append(part)
            if last:
                node[part] = value
            else:
                node[part] = _container(node.get(part), parts[i + 1], text, resolved)
                node = node[part]
    return format_path(resolved)


def _container(value: Any, following: Part, text: str, at: list[Part]) -> Any:
    """What a path goes on through: a missing or shorthand value becomes a mapping."""
    if isinstance(following, int):
        if value is None:
            raise _error(text, f"{format_path(at)} is not set; give the whole list, "
                               f"e.g. --set '{format_path(at)}=[...]'")
        return value
    if value is None or value is True:          # absent, or `early_stopping: true` (the defaults)
        return {}
    if isinstance(value, str) and value:        # `optimizer: sgd` -> {type: sgd}
        return {"type": value}
    return value


def apply(config: Any, assignments: Sequence[str]) -> tuple[Any, list[str]]:
    """A deep copy of `config` with each `PATH=VALUE` applied in order; and the resolved paths."""
    if not assignments:
        return config, []
    out = copy.deepcopy(config)
    paths = []
    for text in assignments:
        path, value = parse_assignment(text)
        paths.append(set_path(out, path, value))
    return out, paths


def record(assignments: Sequence[str]) -> str:
    """The comment line that records the --set of a run in its stored config ('' for none)."""
    return f"{RECORD_PREFIX}{json.dumps(list(assignments))}\n" if assignments else ""


def recorded(config_yaml: str) -> list[str]:
    """The --set assignments recorded in a stored config (see record); [] when there are none."""
    for line in config_yaml.splitlines():
        if not line.startswith("#"):
            break
        if line.startswith(RECORD_PREFIX):
            try:
                items = json.loads(line[len(RECORD_PREFIX):])
            except ValueError:
                return []
            return [s for s in items if isinstance(s, str)] if isinstance(items, list) else []
    return []


def merge(stored: Sequence[str], given: Sequence[str]) -> list[str]:
    """The stored assignments of a run, then the given ones; a stored one whose path is given again
    is dropped (the new value wins, and the record stays short)."""
    again = {s.split("=", 1)[0].strip() for s in given}
    return [s for s in stored if s.split("=", 1)[0].strip() not in again] + list(given)
