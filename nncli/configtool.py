"""`nncli config`: the resolved config (every default filled in, with where each value came from),
a dry run that checks a config without compiling or training, and starting configs.

- ``resolve(path, sets)`` -> a Spec; ``resolved_plain(spec)`` -> the config as plain data that
  `nncli train` accepts unchanged (data paths absolute; ``output: null`` when the run goes to the
  default runs/<name> of the current folder); ``commented_yaml(spec)`` -> that as YAML with a
  comment on each value taken from the file (its line) or from --set.
- ``check(spec)`` -> a Check: the input shape read from the data files' header and first rows
  (CSV) or dataset shapes (HDF5, no data read), and the layer table from network shape inference.
  Nothing is compiled: PyTensor builds no function.
- ``TEMPLATES`` / ``template(name)``: commented configs that train as they are on the shipped data
  files, with paths relative to the repository root (save the file there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import yaml

from nncli import data, network
from nncli import spec as spec_mod
from nncli.data import hdf5
from nncli.data.csv import generic_names, model_columns, training_columns
from nncli.training import prepare as prepare_mod
from nncli.errors import DataError

CSV_PEEK_ROWS = 5


def resolve(path: str | os.PathLike, sets: Sequence[str] = ()) -> spec_mod.Spec:
    return spec_mod.load(path, None, tuple(sets))


def resolved_plain(spec: spec_mod.Spec) -> dict[str, Any]:
    """The resolved config as plain data that trains the same run from any folder."""
    out = spec.resolved()
    if not os.path.isabs(out["output"]):  # a given output is made absolute: this is the default
        out["output"] = None  # runs/<name> in the folder nncli train runs in
    return out


# --- YAML with origins ------------------------------------------------------------------------

def _scalar(value: Any) -> str:
    return yaml.safe_dump([value], default_flow_style=True, width=10**9).strip()[1:-1]


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()


def _origin(spec: spec_mod.Spec, path: str) -> str:
    where = spec.lines.get(path)
    if where == spec_mod.FROM_SET:
        return "--set"
    probe = path  # a value under a --set path (e.g. --set 'layers[1]={type: dropout, rate: 0.2}')
    while probe:
        probe = probe.rsplit(".", 1)[0] if "." in probe else (probe.rsplit("[", 1)[0] if "[" in probe else "")
        if spec.lines.get(probe) == spec_mod.FROM_SET:
            return "--set"
    return f"line {where}" if isinstance(where, int) else ""


def _emit(spec: spec_mod.Spec, value: Any, path: str, indent: int, out: list[str], key: str | None) -> None:
    pad = " " * indent
    head = f"{pad}{_scalar(key)}:" if key is not None else ""
    origin = _origin(spec, path)
    comment = f"  # {origin}" if origin else ""
    nested = isinstance(value, dict) and value or (isinstance(value, list) and any(isinstance(v, dict) for v in value))
    if not nested:
        text = _flow(value) if isinstance(value, (dict, list)) else _scalar(value)
        out.append(f"{head} {text}{comment}")
        return
    out.append(f"{head}{comment if origin == '--set' else ''}")  # (a mapping's line is its first key's)
    if isinstance(value, dict):
        for k, v in value.items():
            _emit(spec, v, f"{path}.{k}" if path else str(k), indent + 2, out, k)
        return
    for i, item in enumerate(value):
        sub: list[str] = []
        if isinstance(item, dict) and item:
            for k, v in item.items():
                _emit(spec, v, f"{path}[{i}].{k}", indent + 4, sub, k)
            sub[0] = f"{pad}  - {sub[0].lstrip()}"
        else:
            _emit(spec, item, f"{path}[{i}]", indent + 4, sub, None)
            sub[0] = f"{pad}  -{sub[0]}"
        out.extend(sub)


def commented_yaml(spec: spec_mod.Spec) -> str:
    """The resolved config as YAML: a value from the file says its line, one from --set says so;
    a value without a comment is a default."""
    lines = [f"# {spec.source} resolved by nncli config: every key, defaults filled in.",
             f"# 'line N': given on that line of {spec.source}; '--set': given on the command line;",
             "# no comment: the default. Data paths are absolute; `nncli train` accepts this file as it is."]
    lines += [f"#   --set {s}" for s in spec.sets]
    for key, value in resolved_plain(spec).items():
        if key == "output" and value is None:
            lines.append("output: null  # default: runs/<name> in the folder `nncli train` runs in")
            continue
        _emit(spec, value, key, 0, lines, key)
    return "\n".join(lines) + "\n"


# --- the dry run ----------------------------------------------------------------------------

@dataclass
class Check:
    input_shape: tuple[int, ...]
    layers: list[dict[str, Any]]   # name, type, output_shape, params (as inference.inspect gives them)
    total_params: int
    files: list[str]               # what was checked in each data file, one line each


def _peek_csv(path: str, header: bool, delimiter: str = "auto",
              missing=data.MISSING_VALUES) -> tuple[list[str], list[list[str]], int]:
    """(column names, the first CSV_PEEK_ROWS data rows, the line of the first): the one CSV
    reader's first chunk, so every error is the one training would give; the rest is not parsed."""
    names, width, chunks = data.read_chunks(path, CSV_PEEK_ROWS, header=header, delimiter=delimiter, missing=missing)
    try:
        first, cells = next(chunks)
    finally:
        chunks.close()
    return names or generic_names(width), cells.tolist(), first


def _csv_shape(path: str, x_cols: Any, y_col: str | None, header: bool, delimiter: str = "auto",
               missing=data.MISSING_VALUES) -> tuple[tuple[int, ...], str]:
    names, body, first = _peek_csv(path, header, delimiter, missing)
    x_cols, y_name, idx, _ = training_columns(path, names, x_cols, y_col)   # the rule training uses
    data.to_float(path, np.array(body, dtype=str)[:, idx], x_cols, row_offset=first, missing=missing)
    return (len(x_cols),), (f"{path}: CSV, {len(names)} columns, inputs {len(x_cols)}, target '{y_name}' "
                            f"(header and first {len(body)} rows read)")


def _h5_shape(path: str, x_name: Any, y_name: str | None) -> tuple[tuple[int, ...], str]:
    if isinstance(x_name, list):
        raise DataError(f"{path}: data.x must name one HDF5 dataset, got a list")
    x_name, y_name = x_name or "x", y_name or "y"
    with hdf5.open_h5(path) as f:
        xs = hdf5.dataset(f, path, x_name, "inputs")  # shape, type and storage: no data read
        ys = hdf5.dataset(f, path, y_name, "targets")
        if xs.shape[0] != ys.shape[0]:
            raise DataError(f"{path}: '{x_name}' has {xs.shape[0]} rows but '{y_name}' has {ys.shape[0]}")
        return tuple(int(d) for d in xs.shape[1:]), (f"{path}: HDF5, '{x_name}' {tuple(xs.shape)} {xs.dtype}, "
                                                     f"'{y_name}' {tuple(ys.shape)} {ys.dtype} (no data read)")


def _file_shape(spec: spec_mod.Spec, path: str, key: str) -> tuple[tuple[int, ...], str]:
    d = spec["data"]
    try:
        if data.is_hdf5(path):
            return _h5_shape(path, d["x"], d["y"])
        return _csv_shape(path, d["x"], d["y"], d["header"], d["delimiter"], d["missing_values"])
    except DataError as exc:
        raise DataError(f"{exc.message} (from {spec.source}: data.{key})") from None


def _typed_shape(spec: spec_mod.Spec) -> tuple[tuple[int, ...], list[str], list[str]]:
    """A training CSV with typed columns: fitted as training fits them (the whole file read);
    (input shape, the input columns, the notes: one line per column)."""
    cols = prepare_mod.typed_columns(spec)
    path = spec["data"]["train"]
    return (cols.width,), cols.raw_names, [f"{path}: CSV, typed columns (the whole file read), inputs "
                                           f"{len(cols.raw_names)} columns -> {cols.width}"] + cols.lines()


def _typed_other(spec: spec_mod.Spec, path: str, key: str, raw: list[str]) -> str:
    """A validation or test CSV for typed columns: its header names every input column."""
    d = spec["data"]
    try:
        names, body, _ = _peek_csv(path, d["header"])
        model_columns(path, names, len(names), raw, None, False, False)
    except DataError as exc:
        raise DataError(f"{exc.message} (from {spec.source}: data.{key})") from None
    return f"{path}: CSV, the {len(raw)} input columns by name (header and first {len(body)} rows read)"


def check(spec: spec_mod.Spec) -> Check:
    """Check a validated config against its data files and the layers' shapes, compiling nothing."""
    d = spec["data"]
    raw = None
    if data.is_hdf5(d["train"]):
        shape, note = _file_shape(spec, d["train"], "train")
        files = [note]
    else:
        try:
            if d.get("columns"):
                raise DataError("typed")
            shape, note = _file_shape(spec, d["train"], "train")
            files = [note]
        except DataError:  # words or missing cells in the first rows, or data.columns: typed columns
            shape, raw, files = _typed_shape(spec)
    for key in ("validation", "test"):
        if isinstance(d[key], str) and raw is not None and not data.is_hdf5(d[key]):
            files.append(_typed_other(spec, d[key], key, raw))
        elif isinstance(d[key], str):
            other, note = _file_shape(spec, d[key], key)
            if other != shape:
                raise DataError(f"{d[key]}: inputs of shape {other} but the training data has {shape} "
                                f"(from {spec.source}: data.{key})")
            files.append(note)
    net = network.build(spec, shape)
    counts = network.trainable_counts(net)
    rows = [{"name": s.name, "type": s.type, "inputs": list(s.inputs), "output_shape": list(out), "params": int(c)}
            for s, out, c in zip(spec.layers, net.shapes, counts)]
    return Check(shape, rows, int(np.sum(counts, dtype=np.int64)) if counts else 0, files)


# --- starting configs -------------------------------------------------------------------------

_HEAD = """\
# A starting config from `nncli config --init --template {name}`.
# Paths are relative to this file: save it in the nncli repository root (next to data/),
# e.g. `nncli config --init --template {name} > my.yaml`, then `nncli train my.yaml`.
# Every key: `nncli config my.yaml`; a dry run: `nncli config my.yaml --check`;
# one change without editing: `nncli train my.yaml --set learning_rate=0.003`.
"""

TEMPLATES = {
    "mlp": """\
name: my-mlp
seed: 0
data:
  train: data/digits.h5         # 8x8 digits: datasets x (1437, 64) and y (1437,) labels 0..9
  test: data/digits-test.h5     # evaluated after training
  validation: 0.1               # a seeded, stratified hold-out for early stopping
  normalize: standard
layers:
  - {type: dense, units: 64, activation: relu}
  - {type: dense, units: 10, activation: softmax}   # one unit per class
loss: categorical_crossentropy
metrics: [accuracy]
optimizer: adam
learning_rate: 0.001
epochs: 20
batch_size: 32
""",
    "cnn": """\
name: my-cnn
seed: 0
data:
  train: data/digits.h5         # 8x8 digits: x (1437, 64) pixel values 0..16
  test: data/digits-test.h5
  validation: 0.1
  normalize: minmax
layers:
  - {type: reshape, shape: [1, 8, 8]}      # channels first: (channels, height, width)
  - {type: conv2d, filters: 16, kernel_size: 3, padding: same, activation: relu}
  - {type: max_pool2d, pool_size: 2}       # -> (16, 4, 4)
  - {type: flatten}
  - {type: dense, units: 10, activation: softmax}
loss: categorical_crossentropy
metrics: [accuracy]
optimizer: adam
learning_rate: 0.002
epochs: 10
batch_size: 32
""",
    "rnn": """\
name: my-rnn
seed: 0
data:
  train: data/majority.h5       # x (4000, 15, 3): 15 one-hot symbols; y: the most frequent one
  test: data/majority-test.h5
  validation: 0.1
layers:
  - {type: simple_rnn, units: 32}          # (15, 3) -> (32,): the last hidden state
  - {type: dense, units: 3, activation: softmax}
loss: categorical_crossentropy
metrics: [accuracy]
optimizer: adam
learning_rate: 0.003
epochs: 10
batch_size: 32
""",
    "tabular": """\
name: my-tabular
seed: 0
data:
  train: data/iris.csv          # a CSV with a header row; the target is the last column
  # x: [sepal_length, petal_length]   # inputs (default: every column but the target)
  # y: species                        # the target column (default: the last)
  validation: 0.2
  normalize: standard
layers:
  - {type: dense, units: 16, activation: tanh}
  - {type: dense, units: 3, activation: softmax}   # one unit per class (3 species)
loss: categorical_crossentropy
metrics: [accuracy]
optimizer: adam
learning_rate: 0.01
epochs: 100
batch_size: 16
early_stopping: {monitor: val_loss, patience: 20}
""",
}


def template(name: str) -> str:
    return _HEAD.format(name=name) + TEMPLATES[name]
