"""YAML config -> validated, frozen spec.

Everything is checked before anything is compiled: unknown keys, types,
ranges, names (with "did you mean"), paths of data files. Each error is one
line naming the config file, the key path, the YAML line and what is
allowed. Layer shapes are checked against the data in :mod:`nncli.network`
(they need the data's shape), with the same kind of message.

YAML is read with PyYAML's safe loader only; aliases are followed with a
node budget so an alias bomb is an error, not an out-of-memory.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from nncli import overrides as overrides_mod
from nncli.data import columns as columns_mod
from nncli.errors import ConfigError
from nncli.layers import LAYERS
from nncli.losses import CLASSIFICATION_LOSSES, LOSSES
from nncli.optimizers import OPTIMIZERS, validate_clip
from nncli import metrics as metrics_mod, regularization, schedules, tensorboard
from nncli.registry import did_you_mean
from nncli.schema import (Invalid, Key, boolean, choice, described, either, integer, list_of, mapping,
                          mapping_schema, name_in, number, optional, show, string, typed, typed_schema)

MAX_CONFIG_BYTES = 1_000_000
MAX_NODES = 20_000
MAX_DEPTH = overrides_mod.MAX_DEPTH


# --- YAML with line numbers ---------------------------------------------------

def _walk(node: yaml.Node, path: str, lines: dict[str, int], budget: list[int], depth: int, where: str) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"{where}: the config is too large (more than {MAX_NODES} values after "
                          f"expanding YAML aliases)")
    if depth > MAX_DEPTH:
        raise ConfigError(f"{where}: {path or '(top level)'} (line {node.start_mark.line + 1}): "
                          f"nested more than {MAX_DEPTH} levels deep")
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            sub = f"{path}.{key}" if path else str(key)
            if key in seen:
                raise ConfigError(f"{where}: {sub} (line {key_node.start_mark.line + 1}): duplicate key")
            seen.add(key)
            _walk(value_node, sub, lines, budget, depth + 1, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, f"{path}[{i}]", lines, budget, depth + 1, where)


def load_yaml(path: str | os.PathLike) -> tuple[Any, dict[str, int]]:
    """Read a YAML file safely; return the data and a map key-path -> line number."""
    where = str(path)
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{where}: config file not found")
    if p.is_dir():
        raise ConfigError(f"{where}: is a folder, expected a YAML config file")
    if not p.is_file():  # a FIFO, a device such as /dev/zero (through a link): never read it
        raise ConfigError(f"{where}: not a regular file, expected a YAML config file")
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)  # at most one byte past the limit, whatever the file says
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read config file: {exc.strerror}") from None
    return parse_yaml(raw, where)


def parse_yaml(raw: bytes | str, where: str) -> tuple[Any, dict[str, int]]:
    """YAML text (a config file, or the config stored in a checkpoint) with the size, node and depth
    budget of config files; `where` names it in errors."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: config file is larger than {MAX_CONFIG_BYTES // 1000} kB")
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        loader = overrides_mod.DepthLimitedLoader(text)
        loader.where = f"{where}: "
    except yaml.reader.ReaderError as exc:  # e.g. a NUL or other control character
        raise ConfigError(f"{where}: invalid YAML (character {exc.position + 1}): special character "
                          f"#x{exc.character:04x} is not allowed") from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{where}: the config file is empty")
        lines: dict[str, int] = {}
        _walk(node, "", lines, [MAX_NODES], 0, where)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: the config is nested too deeply") from None
    finally:
        loader.dispose()
    return data, lines


# --- the spec -----------------------------------------------------------------

#: the name `inputs:` uses for the network's input (no layer may take it)
INPUT = "input"


@dataclass(frozen=True)
class LayerSpec:
    index: int
    type: str
    name: str
    config: Mapping[str, Any]
    #: the names of the layer's inputs, resolved (by check_graph): earlier layers' names or INPUT;
    #: () until resolved, then the previous layer (INPUT for the first) when `inputs:` is absent
    inputs: tuple[str, ...] = ()
    given_inputs: Any = None   # `inputs:` as written: None (absent), a name, or a list of names

    @property
    def path(self) -> str:
        return f"layers[{self.index}]"

    @property
    def kind(self) -> str:
        """What the layer computes, for the backend choice (its class's ``kind``)."""
        return LAYERS.get(self.type).kind


@dataclass(frozen=True)
class Spec:
    source: str                      # the config file, as given
    cfg: Mapping[str, Any]           # every top-level key, defaults filled in, paths resolved
    layers: tuple[LayerSpec, ...]
    lines: Mapping[str, int]
    sets: tuple[str, ...] = ()       # the --set PATH=VALUE applied to the file, in order

    def __getitem__(self, key: str) -> Any:
        return self.cfg[key]

    @property
    def task(self) -> str:
        return "classification" if self.cfg["loss"] in CLASSIFICATION_LOSSES else "regression"

    def error(self, path: str, message: str, exit_code: int = 2) -> ConfigError:
        return ConfigError(located(self.source, self.lines, path, message), exit_code)

    def resolved(self) -> dict[str, Any]:
        """The full config as plain data (what the checkpoint stores)."""
        out = {k: _plain(v) for k, v in self.cfg.items()}
        graph = not is_chain(self.layers)   # a stack is stored as it always was; a graph with every inputs:
        out["layers"] = [{"type": l.type, "name": l.name, **({"inputs": list(l.inputs)} if graph else {}),
                          **_plain(l.config)} for l in self.layers]
        return out

    def to_yaml(self) -> str:
        return overrides_mod.record(self.sets) + yaml.safe_dump(self.resolved(), sort_keys=False)


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def located(source: str, lines: Mapping[str, int], path: str, message: str) -> str:
    probe = path
    while probe and probe not in lines:  # a missing key: point at its parent
        probe = (probe.rsplit("[", 1)[0] if probe.endswith("]")   # layers[2].inputs[1] -> layers[2].inputs
                 else probe.rsplit(".", 1)[0] if "." in probe else "")
    line = lines.get(probe)
    at = f" (from {overrides_mod.OPTION})" if line == FROM_SET else (f" (line {line})" if line else "")
    return f"{source}: {path}{at}: {message}"


DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".h5", ".hdf5")
_DATA_PATTERN = r"(?i)\.(csv|tsv|txt|jsonl|ndjson|h5|hdf5)$"


def _path_or_fraction(base: Path, what: str):
    def check(value, path):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return number(min=0.0, max=1.0, max_open=True)(value, path)
        return _data_path(base, what)(value, path)
    return described(check, lambda: {"anyOf": [{"type": "number", "minimum": 0.0, "exclusiveMaximum": 1.0},
                                                {"type": "string", "pattern": _DATA_PATTERN}]})


def _data_path(base: Path, what: str):
    def check(value, path):
        value = string()(value, path)
        p = Path(os.path.normpath(base / value))  # lexical: never touches the file system
        try:
            p.stat()
        except FileNotFoundError:
            raise Invalid(path, f"{what} file not found: {p}") from None
        except OSError as exc:
            raise Invalid(path, f"cannot read the {what} file {p}: {exc.strerror or type(exc).__name__}") from None
        if p.suffix.lower() not in DATA_SUFFIXES:
            raise Invalid(path, f"expected a .csv, .tsv, .txt, .jsonl, .h5 or .hdf5 file, got '{p.name}'")
        return str(p)
    return described(check, lambda: {"type": "string", "pattern": _DATA_PATTERN})


def _columns():
    return either(string(), list_of(string(), min_len=1), expected="a column/dataset name or a list of column names")


# --- reading your own files (delimiter, missing_values, normalize_target, class_weight) ---

def _delimiter(value, path):
    """auto, tab, or one character (not a quote, a line break or a letter/digit)."""
    value = string()(value, path)
    if value == "tab":
        return "\t"
    if value != "auto" and (len(value) != 1 or value in "\"\r\n" or value.isalnum()):
        raise Invalid(path, f"expected auto (sniffed: , ; tab |), tab, or one delimiter character, got {show(value)}")
    return value


described(_delimiter, lambda: {"type": "string", "anyOf": [{"enum": ["auto", "tab"]}, {"minLength": 1, "maxLength": 1}]})


def _missing_token(value, path):
    """A missing-value token: text; an unquoted YAML null is the text null, an integer its digits."""
    if value is None:
        return "null"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or len(value) > 100:
        raise Invalid(path, f"expected the text of a missing cell (quote it), got {show(value)}")
    return value.strip()


described(_missing_token, lambda: {"type": ["string", "integer", "null"]})


def _class_weight(value, path):
    """none | balanced | {label: weight > 0} (labels as text, as the target column holds them)."""
    if value in ("none", "balanced", None):
        return value or "none"
    if not isinstance(value, dict) or not value:
        raise Invalid(path, f"expected none, balanced or a mapping {{label: weight}}, got {show(value)}")
    out = {}
    for k, w in value.items():
        if isinstance(k, bool) or not isinstance(k, (str, int)):
            raise Invalid(f"{path}.{k}", f"a class label is text or an integer, got {show(k)}")
        out[str(k)] = number(min=0.0, min_open=True, max=1e6)(w, f"{path}.{k}")
    return out


described(_class_weight, lambda: {"anyOf": [{"enum": ["none", "balanced"]},
                                             {"type": "object", "additionalProperties": {"type": "number",
                                                                                          "exclusiveMinimum": 0}}]})


def data_keys(base: Path) -> dict[str, Key]:
    return {
        "train": Key(_data_path(base, "training data"), doc="path of the training data (.csv or .h5)"),
        "x": Key(optional(_columns()), None, "inputs: HDF5 dataset (default x) or CSV columns (default all but y)"),
        "y": Key(optional(string()), None, "targets: HDF5 dataset (default y) or CSV column (default the last)"),
        "validation": Key(optional(_path_or_fraction(base, "validation")), None,
                          "fraction in [0, 1) held out (seeded, stratified), or a data file"),
        "test": Key(optional(_data_path(base, "test")), None, "a labelled file evaluated after training"),
        "normalize": Key(choice("none", "standard", "minmax"), "none", "input normalisation"),
        "shuffle": Key(boolean(), True, "shuffle training examples each epoch"),
        "memory_budget_mb": Key(number(min=0.0), 512.0, "HDF5 inputs larger than this are streamed from disk"),
        "header": Key(boolean(), True, "CSV files start with a header row of column names (false: no header "
                                       "row; the columns are col1, col2, ...)"),
        "delimiter": Key(_delimiter, "auto", "CSV delimiter: auto (a .tsv is tab-separated, any other file is "
                                             "sniffed among , ; tab |; refused when ambiguous), tab, or the character"),
        "missing_values": Key(list_of(_missing_token, max_len=100), list(columns_mod.MISSING_VALUES),
                              "cells (stripped) read as missing; a missing target or number input is an error"),
        "normalize_target": Key(choice("auto", "none", "standard"), "auto",
                                "regression targets: standardise for training (auto: for mse/mae losses with a "
                                "linear output); the loss is reported as trained, predictions and mae/rmse/r2 in "
                                "the target's units"),
        "class_weight": Key(_class_weight, "none", "classification: none, balanced (n / (classes * count)) or "
                                                   "{label: weight}; weights the training loss per row"),
        "columns": Key(optional(columns_mod.validate_columns), None,
                       "CSV column types: {name: number | category | binary | date | ignore, or {type, ...}}; "
                       "other columns are inferred (README: Typed columns)"),
        "max_categories": Key(integer(min=2), columns_mod.MAX_CATEGORIES,
                              "a category column may have at most this many levels (inference refuses more)"),
    }


def _optimizer(value, path):
    kind, rest = typed(value, path, OPTIMIZERS.names(), "optimizer")
    cls = OPTIMIZERS.get(kind)
    if "learning_rate" in rest:
        raise Invalid(f"{path}.learning_rate", "set the learning rate with the top-level key learning_rate")
    return {"type": kind, **mapping(rest, path, cls.keys, "optimizer mapping")}


described(_optimizer, lambda: typed_schema({n: OPTIMIZERS.get(n).keys for n in OPTIMIZERS.names()}, "optimizer"))


EARLY_STOPPING_KEYS = {
    "monitor": Key(string(), "val_loss", "what to watch: loss, val_loss, val_<metric>, <metric>"),
    "mode": Key(choice("auto", "min", "max"), "auto", "min for losses and errors, max for accuracy"),
    "patience": Key(integer(min=0), 10, "epochs without improvement before stopping"),
    "min_delta": Key(number(min=0.0), 0.0, "smallest change that counts as improvement"),
    "restore_best": Key(boolean(), True, "model.h5 holds the best epoch"),
}


def _early_stopping(value, path):
    if value is False or value is None:
        return None
    if value is True:
        value = {}
    return mapping(value, path, EARLY_STOPPING_KEYS, "mapping (or true/false)")


described(_early_stopping, lambda: {"anyOf": [{"type": ["boolean", "null"]}, mapping_schema(EARLY_STOPPING_KEYS)],
                                    "description": "early stopping (default: on with validation data, else off)"})


MAX_NAME = 100


def _run_name(value, path):
    """A run name is one folder name under runs/: no path separators, no '..', no odd characters."""
    value = string()(value, path)
    if not re.fullmatch(r"[\w-][\w.-]*", value) or len(value) > MAX_NAME or not value.isprintable():
        raise Invalid(path, f"a run name is letters, digits, '_', '-' and '.' (not first), at most {MAX_NAME} "
                            f"characters, got {show(value)}")
    return value


described(_run_name, lambda: {"type": "string", "minLength": 1, "maxLength": MAX_NAME,
                              "pattern": r"^[^./\\\s][^/\\\s]*$"})


def _output_path(value, path):
    value = string()(value, path)
    try:
        os.fsencode(value)
    except UnicodeError:
        raise Invalid(path, f"the folder name cannot be encoded for this file system, got {show(value)}") from None
    return value


described(_output_path, lambda: {"type": "string", "pattern": r"\S"})


def _layer_item(value, path):
    return value  # each item is validated by _layer (its type's keys)


described(_layer_item, lambda: typed_schema({n: LAYERS.get(n).keys for n in LAYERS.names()}, "layer", name_ok=False,
                                            extra={"name": {"type": "string", "minLength": 1, "pattern": r"^[^.][^/]*$",
                                                            "not": {"const": INPUT},
                                                            "description": "layer name (default: <type>_<n>)"},
                                                   "inputs": {"anyOf": [{"type": "string", "minLength": 1},
                                                                        {"type": "array", "minItems": 1,
                                                                         "items": {"type": "string", "minLength": 1}}],
                                                              "description": INPUTS_DOC}}))


def top_keys(base: Path) -> dict[str, Key]:
    return {
        "name": Key(_run_name, None, "run name (default: the config file's name)"),
        "seed": Key(integer(min=0, max=2**32 - 1), 0, "random seed"),
        "device": Key(choice("cpu", "gpu", "auto"), "auto", "where to train"),
        "backend": Key(choice("auto", "jax", "numba", "c"), "auto", "PyTensor backend"),
        "data": Key(described(lambda v, p: mapping(v, p, data_keys(base)), lambda: mapping_schema(data_keys(base))),
                    doc="the data section"),
        "layers": Key(list_of(_layer_item, min_len=1, max_len=1000), doc="the list of layers"),
        "loss": Key(optional(name_in(LOSSES)), None, "loss (default from the last activation)"),
        "metrics": Key(optional(list_of(metrics_mod.validate_item)), None, "metrics (default accuracy or mae)"),
        "optimizer": Key(_optimizer, {"type": "adam"}, "optimizer"),
        "learning_rate": Key(optional(number(min=0.0, min_open=True, max=1e3)), None, "learning rate"),
        "epochs": Key(integer(min=1, max=1_000_000), 10, "number of epochs"),
        "batch_size": Key(integer(min=1, max=1_000_000), 32, "examples per minibatch"),
        "steps_per_execution": Key(either(choice("auto"), integer(min=1, max=4096),
                                          expected="auto or an integer from 1 to 4096"), "auto",
                                   "training steps per call of the compiled function (auto: the backend's "
                                   "best; the same updates either way)"),
        "early_stopping": Key(_early_stopping, "default", "early stopping"),
        "schedule": Key(schedules.validate, None, "learning-rate schedule (default constant)"),
        "regularization": Key(regularization.validate, None, "L1/L2 weight penalties"),
        "clip": Key(validate_clip, None, "gradient clipping: {norm: N} and/or {value: V}"),
        "output": Key(optional(_output_path), None, "output folder (default runs/<name> in the current folder; "
                                                    "a relative output: is relative to the config file)"),
        "checkpoint_interval": Key(number(min=0.0), 5.0,
                                   "seconds between checkpoint writes (0: after every epoch); "
                                   "the last epoch and interrupts always write"),
        "tensorboard": Key(tensorboard.validate, False, tensorboard.DOC),
    }


INPUTS_DOC = ("the layer's input: the name of an earlier layer, or a list of names for a layer with several "
              "inputs (a merge layer); 'input' is the network's input (default: the previous layer)")


def _layer(item: Any, path: str, index: int) -> LayerSpec:
    kind, rest = typed(item, path, LAYERS.names(), "layer type", name_ok=False,
                       example=" (e.g. {type: dense, units: 10})")
    cls = LAYERS.get(kind)
    rest.pop("name", None)
    given = rest.pop("inputs", None)
    if "inputs" in item:
        given = either(string(), list_of(string(), min_len=1, max_len=1000),
                       expected="a layer name or a list of layer names")(given, f"{path}.inputs")
    config = mapping(rest, path, cls.keys, "layer mapping")
    name = item.get("name", f"{kind}_{index + 1}")
    name = string()(name, f"{path}.name")
    if "/" in name or name.startswith("."):
        raise Invalid(f"{path}.name", f"layer names may not contain '/' or start with '.', got {show(name)}")
    if name == INPUT:
        raise Invalid(f"{path}.name", f"'{INPUT}' names the network's input in inputs:; choose another layer name")
    return LayerSpec(index, kind, name, MappingProxyType(config),
                     given_inputs=tuple(given) if isinstance(given, list) else given)


def check_graph(layers: tuple[LayerSpec, ...]) -> tuple[LayerSpec, ...]:
    """Resolve each layer's inputs (default: the previous layer; the first: the network's input)
    and check the graph: unique names, inputs that name earlier layers (or 'input'), as many
    inputs as each layer takes, and every layer's output used by a later one (but the last's).
    Raises Invalid at the offending key path."""
    where = {}
    for l in layers:
        if l.name in where:
            raise Invalid(f"{l.path}.name", f"duplicate layer name '{l.name}' ({where[l.name].path} has it too)")
        where[l.name] = l
    out, used = [], set()
    for i, l in enumerate(layers):
        given = l.given_inputs
        if given is None:
            names, paths = (layers[i - 1].name if i else INPUT,), (f"{l.path}.inputs",)
        elif isinstance(given, str):
            names, paths = (given,), (f"{l.path}.inputs",)
        else:
            names, paths = tuple(given), tuple(f"{l.path}.inputs[{j}]" for j in range(len(given)))
        earlier = [INPUT, *(m.name for m in layers[:i])]
        for name, path in zip(names, paths):
            if name == l.name:
                raise Invalid(path, f"a layer cannot take its own output as its input; inputs name earlier "
                                    f"layers (or '{INPUT}', the network's input)")
            if name in where and name not in earlier:
                raise Invalid(path, f"'{name}' is {where[name].path}, after this layer; inputs name earlier "
                                    f"layers (or '{INPUT}', the network's input)")
            if name not in earlier:
                raise Invalid(path, f"unknown layer '{name}'{did_you_mean(name, earlier)}; inputs name earlier "
                                    f"layers ({', '.join(earlier)})")
        lo, hi = LAYERS.get(l.type).n_inputs
        if len(names) < lo or (hi is not None and len(names) > hi):
            takes = ("one input" if (lo, hi) == (1, 1) else f"exactly {lo} inputs" if lo == hi
                     else f"{lo} or {hi} inputs" if hi == lo + 1 else
                     f"{lo} to {hi} inputs" if hi is not None else f"at least {lo} inputs")
            hint = (f" (default: the previous layer); name them, e.g. inputs: [{', '.join(earlier[-lo:])}]"
                    if given is None else "")
            raise Invalid(f"{l.path}.inputs", f"{l.type} takes {takes}, got {len(names)}{hint}")
        used.update(names)
        out.append(dataclasses.replace(l, inputs=names))
    for l in layers[:-1]:
        if l.name not in used:
            raise Invalid(l.path, f"the output of {l.type} '{l.name}' is not used by any later layer (only the "
                                  f"last layer, the network's output, may go unused); name '{l.name}' in a "
                                  f"later layer's inputs, or remove it")
    return tuple(out)


def is_chain(layers: tuple[LayerSpec, ...]) -> bool:
    """Whether each layer takes just the previous layer's output (the first: the network's input)."""
    return all(l.inputs == ((layers[i - 1].name if i else INPUT),) for i, l in enumerate(layers))


def parse_layers(items: Any, source: str, lines: Mapping[str, int] | None = None) -> tuple[LayerSpec, ...]:
    """Validate just the layers list (used when rebuilding a network from a checkpoint)."""
    try:
        layers = list_of(lambda v, p: v, min_len=1)(items, "layers")
        return check_graph(tuple(_layer(item, f"layers[{i}]", i) for i, item in enumerate(layers)))
    except Invalid as exc:
        raise ConfigError(located(source, lines or {}, exc.path, exc.message)) from None


def output_chain(layers: tuple[LayerSpec, ...]) -> list[LayerSpec]:
    """The output layer, then its input, its input's input, ... while each takes one input (for a
    stack: the layers in reverse order); a layer with several inputs ends it."""
    by_name, chain = {l.name: l for l in layers}, []
    layer = layers[-1] if layers else None
    while layer is not None:
        chain.append(layer)
        layer = by_name.get(layer.inputs[0]) if len(layer.inputs) == 1 else None
    return chain


def output_activation(layers: tuple[LayerSpec, ...]) -> str:
    """The activation of the network's output: the first one declared along `output_chain`
    (linear if none, e.g. when the output is a merge layer)."""
    return next((l.config.get("activation") for l in output_chain(layers) if "activation" in l.config),
                None) or "linear"


def _default_loss(layers: tuple[LayerSpec, ...]) -> str:
    last_act = output_activation(layers)
    if last_act == "softmax":
        return "categorical_crossentropy"
    if last_act == "sigmoid":
        return "binary_crossentropy"
    return "mse"


FROM_SET = "--set"  # in a Spec's lines: this key path's value came from --set, not from a line of the file


def with_sets(data: Any, lines: Mapping[str, int], sets: tuple[str, ...] | list[str]) -> tuple[Any, dict]:
    """The file's mapping with the --set assignments applied (nncli.overrides), and its line map
    with each set path (and everything below it) marked FROM_SET."""
    data, paths = overrides_mod.apply(data, list(sets))
    lines = dict(lines)
    for p in paths:
        for key in [k for k in lines if k == p or k.startswith(p + ".") or k.startswith(p + "[")]:
            del lines[key]
        lines[p] = FROM_SET
    return data, lines


def load(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None, sets: tuple[str, ...] = ()) -> Spec:
    """Read and validate a config file. `sets` (--set PATH=VALUE) change the file's mapping before
    validation; `overrides` replace top-level keys (CLI options such as --epochs)."""
    source = str(path)
    data, lines = load_yaml(path)
    data, lines = with_sets(data, lines, sets)
    if isinstance(data, dict):
        data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    spec = from_dict(data, source, lines, base=Path(path).resolve().parent)
    return dataclasses.replace(spec, sets=tuple(sets)) if sets else spec


def from_dict(data: Any, source: str, lines: Mapping[str, int] | None = None, base: Path | None = None) -> Spec:
    lines = lines or {}
    base = base or Path.cwd()
    try:
        cfg = mapping(data, "", top_keys(base), "mapping of config keys")
        layers = check_graph(tuple(_layer(item, f"layers[{i}]", i) for i, item in enumerate(cfg.pop("layers"))))
    except Invalid as exc:
        raise ConfigError(located(source, lines, exc.path, exc.message)) from None
    if cfg["name"] is None:
        cfg["name"] = Path(source).stem
    if cfg["loss"] is None:
        cfg["loss"] = _default_loss(layers)
    classification = cfg["loss"] in CLASSIFICATION_LOSSES
    if cfg["metrics"] is None:
        cfg["metrics"] = ["accuracy"] if classification else ["mae"]
    try:
        metrics_mod.check(cfg["metrics"], cfg["loss"], classification)
    except Invalid as exc:
        raise ConfigError(located(source, lines, exc.path, exc.message)) from None
    if cfg["learning_rate"] is None:
        cfg["learning_rate"] = OPTIMIZERS.get(cfg["optimizer"]["type"]).default_learning_rate
    d = cfg["data"]
    if d["normalize_target"] == "standard" and classification:
        raise ConfigError(located(source, lines, "data.normalize_target", f"standard is for regression targets; "
                                                                          f"the loss {cfg['loss']} is a classification loss"))
    if d["normalize_target"] == "standard" and output_activation(layers) != "linear":
        raise ConfigError(located(source, lines, "data.normalize_target", f"standard needs a linear output (a "
                                                                          f"standardised target is unbounded); the "
                                                                          f"output activation is "
                                                                          f"{output_activation(layers)}"))
    if d["class_weight"] != "none" and not classification:
        raise ConfigError(located(source, lines, "data.class_weight", f"class weights need a classification loss; "
                                                                      f"the loss is {cfg['loss']}"))
    has_validation = cfg["data"]["validation"] not in (None, 0.0)
    if cfg["early_stopping"] == "default":
        cfg["early_stopping"] = _early_stopping({}, "early_stopping") if has_validation else None
    es = cfg["early_stopping"]
    if es is not None:
        allowed = ["loss"] + [m for m in cfg["metrics"]]
        allowed += [f"val_{m}" for m in allowed] if has_validation else []
        if es["monitor"] not in allowed:
            raise ConfigError(located(source, lines, "early_stopping.monitor",
                                      f"cannot monitor '{es['monitor']}'{did_you_mean(es['monitor'], allowed)}; "
                                      f"allowed: {', '.join(allowed)}"))
    try:  # training controls (nncli.schedules, nncli.regularization)
        monitors = ["loss", *cfg["metrics"]]
        monitors += [f"val_{m}" for m in monitors] if has_validation else []
        schedules.check(cfg, monitors)
        regularization.check(cfg["regularization"], [l.name for l in layers])
    except Invalid as exc:
        raise ConfigError(located(source, lines, exc.path, exc.message)) from None
    if cfg["output"] is None:
        cfg["output"] = str(Path("runs") / cfg["name"])
    elif not os.path.isabs(cfg["output"]):
        cfg["output"] = os.path.normpath(base / cfg["output"])
    return Spec(source, MappingProxyType(cfg), layers, MappingProxyType(dict(lines)))
