"""The checkpoint file: HDF5, readable with h5py and numpy alone, never pickle.

Layout (format_version 2; version 1 files, which have none of version 2's optional items, still load)::

    /                     attrs: format="nncli-checkpoint", format_version=2, nncli_version,
                                 created (ISO time), epoch, step, backend, best_epoch, best_value,
                                 finished ("" while training, "epochs" or "early_stopping" once done)
    /config               attr "yaml": the resolved config as YAML text
    /model                attrs: input_shape, task, loss, x_names, y_name, trainable (names)
    /params/<layer>/<p>   one dataset per parameter or state value, e.g. /params/dense_1/W
    /optimizer            attr "type"; datasets iterations and <slot>/<layer>/<p>
    /normalization        attr "kind"; datasets shift, scale (x -> (x - shift) * scale)
    /labels               attrs kind, numeric; dataset classes (UTF-8 strings)
    /history/<metric>     one value per finished epoch (loss, val_loss, accuracy, ...)
    /rng                  attr "state": JSON of the numpy generator states for an exact resume (and,
                          optional, "batch_slices": the slices of each batch split, layers/batch_shards.py)

Version 2 adds optional items (a version 1 file, which has none of them, loads as before):
    /columns              (typed CSV inputs only) dataset missing_values; one group per input column,
                          /columns/0, /1, ... in input order (see nncli.data.columns and the README)
    /target_normalization attr "kind" ("standard"); datasets shift, scale shaped like one example's
                          output: the network predicts (y - shift) * scale, predictions are
                          output / scale + shift (absent: the targets were used as they are)

Writes are atomic: a temporary file in the same folder, flushed and synced,
then ``os.replace``; a failure at any moment leaves the previous file intact.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nncli import __version__, fileio, h5safe
from nncli.data import MAX_CLASSES, Encoding, Normalizer, stored_completely
from nncli.data.columns import Columns
from nncli.errors import CheckpointError
from nncli.losses import CLASSIFICATION_LOSSES, LOSSES
from nncli.network import MAX_PARAMS

FORMAT = "nncli-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no optional version-2 items
FINISHED = ("", "epochs", "early_stopping")  # the root attribute "finished": why training ended


@dataclass
class Checkpoint:
    config_yaml: str
    input_shape: tuple[int, ...]
    task: str
    loss: str
    params: dict[str, np.ndarray]            # "<layer>/<name>": trainable and state values
    trainable: list[str]
    normalizer: Normalizer
    encoding: Encoding
    x_names: list[str] = field(default_factory=list)
    y_name: str | None = None
    epoch: int = 0
    step: int = 0
    backend: str = ""
    optimizer_type: str = ""
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = 0
    best_value: float = float("nan")
    finished: str = ""                       # why training ended: "", "epochs" or "early_stopping"
    created: str = ""
    nncli_version: str = __version__
    target_scaler: Normalizer = field(default_factory=lambda: Normalizer("none"))  # v2: /target_normalization
    columns: Columns | None = None           # typed CSV input columns (None: plain numeric inputs)


def _str_list(values) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=h5py.string_dtype("utf-8"))


def _write_tree(group: h5py.Group, values: dict[str, np.ndarray]) -> None:
    for key, value in values.items():
        group.create_dataset(key, data=np.asarray(value))


def image(ckpt: Checkpoint) -> bytes:
    """The bytes of the checkpoint file, built in memory."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        _fill(f, ckpt)
    return buf.getvalue()


def save(ckpt: Checkpoint, path: str | os.PathLike) -> None:
    """Write `ckpt` to `path` atomically.

    The HDF5 image is built in memory and written with one plain write, so a
    full disk is a clean OSError here (HDF5 failing mid-file leaves noise and
    broken handles behind), and the temporary file is removed.
    """
    path = Path(path)
    try:
        data = image(ckpt)
        path.parent.mkdir(parents=True, exist_ok=True)
        with fileio.atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(data)
    except OSError as exc:
        reason = exc.strerror or str(exc).splitlines()[0] or type(exc).__name__
        raise CheckpointError(f"{path}: cannot write checkpoint: {reason}; "
                              f"the previous file is unchanged") from None


def _fill(f: h5py.File, c: Checkpoint) -> None:
    f.attrs.update({
        "format": FORMAT, "format_version": FORMAT_VERSION, "nncli_version": c.nncli_version,
        "created": c.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "epoch": int(c.epoch), "step": int(c.step), "backend": c.backend,
        "best_epoch": int(c.best_epoch), "best_value": float(c.best_value), "finished": c.finished,
    })
    f.create_group("config").attrs["yaml"] = c.config_yaml
    model = f.create_group("model")
    model.attrs.update({"input_shape": np.asarray(c.input_shape, dtype=np.int64), "task": c.task,
                        "loss": c.loss, "y_name": c.y_name or ""})
    model.create_dataset("x_names", data=_str_list(c.x_names))
    model.create_dataset("trainable", data=_str_list(c.trainable))
    _write_tree(f.create_group("params"), c.params)
    opt = f.create_group("optimizer")
    opt.attrs["type"] = c.optimizer_type
    _write_tree(opt, c.optimizer)
    _write_normalizer(f.create_group("normalization"), c.normalizer)
    labels = f.create_group("labels")
    labels.attrs.update({"kind": c.encoding.kind, "numeric": bool(c.encoding.numeric)})
    if c.encoding.classes is not None:
        labels.create_dataset("classes", data=_str_list(c.encoding.classes))
    hist = f.create_group("history", track_order=True)  # metrics.csv's column order survives --resume
    for key, values in c.history.items():
        hist.create_dataset(key, data=np.asarray(values, dtype=np.float64))
    f.create_group("rng").attrs["state"] = json.dumps(c.rng)
    _write_v2(f, c)


# --- version 2's optional items (absent in version 1 files): written and read here ---

def _write_v2(f: h5py.File, c: Checkpoint) -> None:
    if c.columns is not None:
        c.columns.store(f.create_group("columns"))
    if c.target_scaler.kind != "none":
        _write_normalizer(f.create_group("target_normalization"), c.target_scaler)


def _write_normalizer(group: h5py.Group, norm: Normalizer) -> None:
    """/normalization and /target_normalization: attr kind; datasets shift, scale (float32)."""
    group.attrs["kind"] = norm.kind
    if norm.kind != "none":
        group.create_dataset("shift", data=np.asarray(norm.shift, dtype=np.float32))
        group.create_dataset("scale", data=np.asarray(norm.scale, dtype=np.float32))


def _read_v2(f: h5py.File) -> dict[str, Any]:
    """The optional items as Checkpoint fields; the target scaling's shape is checked against the
    network by inference.load_model."""
    out: dict[str, Any] = {}
    if "target_normalization" in f:
        tn = f["target_normalization"]
        if not isinstance(tn, h5py.Group) or _attr_str(tn, "kind") != "standard":
            raise ValueError("/target_normalization is not a group of kind standard")
        vectors = _shift_scale(tn, "/target_normalization")
        if vectors[0].shape != vectors[1].shape or not (vectors[1] > 0).all():
            raise ValueError("/target_normalization: shift and scale differ in shape, or a scale is not positive")
        out["target_scaler"] = Normalizer("standard", *vectors)
    return out


# --- reading defensively: every size is checked before it is read, every value before use ---

MAX_INPUT_VALUES = 100_000_000   # values per example (the product of input_shape)
MAX_HISTORY = 1_000_000          # epochs (the config's maximum)
MAX_NAMES = 1_000_000            # x_names, trainable, history keys
MAX_STRING_BYTES = 65_536        # one stored name (input, class, category level), UTF-8
MAX_STRINGS_BYTES = 64 << 20     # one list of them: a list's count is checked before reading, its
                                 # variable-length strings' sizes only as they are read, block by block
STRING_BLOCK = 4096
BIT_GENERATOR = "PCG64"          # what numpy.random.default_rng draws with (the shuffle generator)


def _declared(ds, max_values: int, what: str) -> h5py.Dataset:
    """`ds` as a dataset holding at most `max_values` values (checked before anything is read)."""
    if not isinstance(ds, h5py.Dataset):
        raise ValueError(f"{what} is not a dataset")
    shape = ds.shape
    if shape is None:
        raise ValueError(f"{what} is empty (no shape)")
    size = int(np.prod(shape, dtype=object))
    if size > max_values or size * max(ds.dtype.itemsize, 1) > max(8 * max_values, 1 << 20):
        raise ValueError(f"{what} declares shape {tuple(shape)}, more than the {max_values:,} values allowed")
    if not stored_completely(ds):
        raise ValueError(f"{what} declares shape {tuple(shape)} but the file does not store all of it")
    return ds


def _read_tree(group: h5py.Group, max_values: int | None = None) -> dict[str, np.ndarray]:
    """Every numeric dataset under `group`, at most `max_values` values in all (default: the
    network's parameter budget); each size is checked before the dataset is read."""
    budget = [MAX_PARAMS if max_values is None else max_values]
    out: dict[str, np.ndarray] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            if obj.dtype.kind not in "biuf":
                raise ValueError(f"{obj.name} holds {obj.dtype}, expected numbers")
            _declared(obj, budget[0], f"{obj.name}")
            budget[0] -= int(np.prod(obj.shape, dtype=object))
            out[name] = np.asarray(obj[()])
    group.visititems(visit)
    return out


def _strings(ds, max_values: int = MAX_NAMES) -> list[str]:
    """A 1-D dataset of strings: at most `max_values` of them (checked before reading), each at most
    MAX_STRING_BYTES and all together at most MAX_STRINGS_BYTES (checked block by block as read)."""
    ds = _declared(ds, max_values, getattr(ds, "name", "a string list"))
    if len(ds.shape) != 1:
        raise ValueError(f"{ds.name} has shape {tuple(ds.shape)}, expected a list of strings")
    out: list[str] = []
    total = 0
    for start in range(0, ds.shape[0], STRING_BLOCK):
        for v in ds[start:start + STRING_BLOCK]:
            text = v.decode("utf-8") if isinstance(v, bytes) else str(v)
            size = len(v) if isinstance(v, bytes) else len(text.encode("utf-8"))
            if size > MAX_STRING_BYTES:
                raise ValueError(f"{ds.name} holds a string of {size:,} bytes, more than the "
                                 f"{MAX_STRING_BYTES:,} allowed")
            total += size
            if total > MAX_STRINGS_BYTES:
                raise ValueError(f"{ds.name} holds more than {MAX_STRINGS_BYTES:,} bytes of strings")
            out.append(text)
    return out


def _attr_int(obj, key: str, lo: int, hi: int, default: int | None = None) -> int:
    value = obj.attrs.get(key, default)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ValueError(f"attribute {key} of {obj.name} is {_show(value)}, expected an integer from {lo} to {hi}")
    return int(value)


def _attr_str(obj, key: str, default: str | None = None) -> str:
    value = obj.attrs.get(key, default)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise ValueError(f"attribute {key} of {obj.name} is {_show(value)}, expected a string")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _input_shape(model: h5py.Group) -> tuple[int, ...]:
    dims = np.asarray(model.attrs["input_shape"])
    if dims.ndim != 1 or not 1 <= len(dims) <= 8 or dims.dtype.kind not in "iu" or (dims < 1).any() \
            or int(np.prod(dims, dtype=object)) > MAX_INPUT_VALUES:
        raise ValueError(f"/model input_shape is {_show(dims.tolist())}, expected 1 to 8 positive sizes")
    return tuple(int(d) for d in dims)


def _normalizer(norm: h5py.Group, input_shape: tuple[int, ...]) -> Normalizer:
    kind = _attr_str(norm, "kind")
    if kind not in ("none", "standard", "minmax"):
        raise ValueError(f"/normalization kind is {_show(kind)}, expected none, standard or minmax")
    if kind == "none":
        return Normalizer("none")
    return Normalizer(kind, *_shift_scale(norm, "/normalization", input_shape))


def _shift_scale(group: h5py.Group, where: str, shape: tuple[int, ...] | None = None) -> list[np.ndarray]:
    """A normaliser's datasets shift and scale, each checked (size before reading, numbers, finite;
    `shape`: the shape it must have) and read as float32."""
    vectors = []
    for name in ("shift", "scale"):
        if name not in group:
            raise ValueError(f"missing {where}/{name}")
        ds = _declared(group[name], MAX_INPUT_VALUES, f"{where}/{name}")
        if ds.dtype.kind not in "iuf" or (shape is not None and tuple(ds.shape) != shape):
            raise ValueError(f"{where}/{name} has shape {tuple(ds.shape)} ({ds.dtype})"
                             + (f", the inputs have shape {shape}" if shape is not None else ", expected numbers"))
        value = np.asarray(ds[()], dtype=np.float32)
        if not np.isfinite(value).all():
            raise ValueError(f"{where}/{name} has non-finite values")
        vectors.append(value)
    return vectors


def _encoding(labels: h5py.Group) -> Encoding:

    kind = _attr_str(labels, "kind")
    if kind not in ("categorical", "binary", "values"):
        raise ValueError(f"/labels kind is {_show(kind)}, expected categorical, binary or values")
    numeric = labels.attrs["numeric"]
    if not isinstance(numeric, (bool, np.bool_)):
        raise ValueError(f"/labels numeric is {_show(numeric)}, expected true or false")
    classes = _strings(labels["classes"], MAX_CLASSES) if "classes" in labels else None
    if kind != "values" and (not classes or (kind == "binary" and len(classes) != 2)):
        raise ValueError(f"/labels/classes holds {len(classes or [])} class names, a {kind} model needs "
                         f"{'2' if kind == 'binary' else 'at least 1'}")
    return Encoding(kind, classes if kind != "values" else None, bool(numeric))


def _history(group: h5py.Group, epoch: int) -> dict[str, list[float]]:
    if len(group) > MAX_NAMES:
        raise ValueError(f"/history holds {len(group)} entries")
    out = {}
    for key in group:
        ds = _declared(group[key], epoch, f"/history/{key}")
        if ds.dtype.kind not in "iuf" or len(ds.shape) != 1:
            raise ValueError(f"/history/{key} is {ds.dtype} of shape {ds.shape}, expected one number per epoch")
        out[key] = [float(v) for v in ds[()]]
    return out


def _rng(text: str) -> dict[str, Any]:
    """The resume state: the shuffle generator's state at the start of the epoch in progress,
    the minibatches of it already done, and their running sums (checked again by the trainer,
    which knows how many there may be); optionally the slices each batch split of the training
    step made (layers/batch_shards.py; [] when nothing was split)."""
    try:
        rng = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("/rng state is not valid JSON") from None
    if not isinstance(rng, dict) or not {"shuffle", "batch", "sums"} <= set(rng):
        raise ValueError("/rng state is not a mapping with shuffle, batch and sums")
    batch, sums, shuffle = rng["batch"], rng["sums"], rng["shuffle"]
    if isinstance(batch, bool) or not isinstance(batch, int) or not 0 <= batch < 2**63:
        raise ValueError(f"/rng batch is {_show(batch)}, expected a count of minibatches")
    if not isinstance(sums, list) or len(sums) > 1000 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in sums):
        raise ValueError("/rng sums is not a list of finite numbers")
    state = shuffle.get("state") if isinstance(shuffle, dict) else None
    if not isinstance(shuffle, dict) or shuffle.get("bit_generator") != BIT_GENERATOR \
            or set(shuffle) != {"bit_generator", "state", "has_uint32", "uinteger"} \
            or not isinstance(state, dict) or set(state) != {"state", "inc"} \
            or not all(_int_in(state[k], 0, 2**128 - 1) for k in state) \
            or not _int_in(shuffle["has_uint32"], 0, 1) or not _int_in(shuffle["uinteger"], 0, 2**32 - 1):
        raise ValueError(f"/rng shuffle is not a {BIT_GENERATOR} generator state")
    try:
        np.random.PCG64().state = shuffle
    except (TypeError, ValueError, OverflowError, KeyError):
        raise ValueError(f"/rng shuffle is not a {BIT_GENERATOR} generator state") from None
    slices = rng.get("batch_slices", [])       # optional (written since 2026-11-29)
    if not isinstance(slices, list) or len(slices) > 10_000 or not all(_int_in(v, 2, 4096) for v in slices):
        raise ValueError(f"/rng batch_slices is {_show(slices)}, expected a list of slice counts (2 to 4096)")
    return rng


def _int_in(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _floats(ds, length: int) -> np.ndarray:
    ds = _declared(ds, length, getattr(ds, "name", "a number list"))
    if ds.dtype.kind not in "iuf" or tuple(ds.shape) != (length,):
        raise ValueError(f"{ds.name} has shape {tuple(ds.shape)} ({ds.dtype}), expected {length} numbers")
    values = np.asarray(ds[()], dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{ds.name} has non-finite values")
    return values


def _columns(group: h5py.Group, ck: Checkpoint) -> Columns:
    """/columns, checked: each column's sizes before reading, the encoded width against the inputs."""
    if not isinstance(group, h5py.Group):
        raise ValueError("/columns is not a group")
    width = int(np.prod(ck.input_shape))
    cols = Columns.load(group, _strings, _floats, max(width, 1))
    if len(ck.input_shape) != 1 or cols.width != width or cols.names != list(ck.x_names):
        raise ValueError(f"/columns encode {cols.width} inputs named {cols.names[:3]}..., the model has input shape "
                         f"{ck.input_shape} named {list(ck.x_names)[:3]}...")
    return cols


def _check_loaded(ck: Checkpoint) -> None:
    """Checks across the parts of a checkpoint that was read."""

    if ck.loss not in LOSSES.names():
        raise ValueError(f"/model loss is {_show(ck.loss)}, not a known loss")
    if ck.task != ("classification" if ck.loss in CLASSIFICATION_LOSSES else "regression"):
        raise ValueError(f"/model task {_show(ck.task)} does not go with the loss {ck.loss}")
    if ck.encoding.kind != "values" and ck.task != "classification":
        raise ValueError(f"/labels kind {ck.encoding.kind} needs a classification loss, the loss is {ck.loss}")
    unknown = [k for k in ck.trainable if k not in ck.params]
    if unknown:
        raise ValueError(f"/model/trainable names {_show(unknown[0])}, which /params does not hold")
    if not 0 <= ck.best_epoch <= ck.epoch:
        raise ValueError(f"best_epoch {ck.best_epoch} is not between 0 and the epoch {ck.epoch}")
    short = [k for k, v in ck.history.items() if len(v) < ck.best_epoch]
    if short:
        raise ValueError(f"/history/{short[0]} has fewer values than the best epoch {ck.best_epoch}")


def _finished(f: h5py.File) -> str:
    """Why training ended ("" while it runs; files from before the attribute read as "")."""
    value = _attr_str(f, "finished", "")
    if value not in FINISHED:
        raise CheckpointError(f"{f.filename}: damaged checkpoint: /finished is {_show(value)}, "
                              f"expected one of {', '.join(repr(v) for v in FINISHED)}")
    return value


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint; any problem is a CheckpointError naming the file."""
    where = str(path)
    if not os.path.exists(where):
        raise CheckpointError(f"{where}: checkpoint not found")
    if os.path.isdir(where):
        raise CheckpointError(f"{where}: is a folder, expected a checkpoint file (.h5)")
    try:
        f = h5py.File(where, "r")
    except OSError:
        raise CheckpointError(f"{where}: not an HDF5 file (or truncated/corrupted); expected an nncli checkpoint") from None
    try:
        with f:
            h5safe.check_file(f, where, CheckpointError)  # nothing from other files
            if f.attrs.get("format") != FORMAT:
                raise CheckpointError(f"{where}: an HDF5 file, but not an nncli checkpoint (no format tag '{FORMAT}')")
            version = f.attrs.get("format_version")
            if not isinstance(version, (int, np.integer)) or int(version) not in READABLE_VERSIONS:
                raise CheckpointError(f"{where}: checkpoint format version {version} is not supported "
                                      f"(this nncli reads versions {', '.join(map(str, READABLE_VERSIONS))})")
            for group in ("config", "model", "params", "optimizer", "normalization", "labels", "history", "rng"):
                if group not in f:
                    raise CheckpointError(f"{where}: damaged checkpoint: missing /{group}")
            model = f["model"]
            input_shape = _input_shape(model)
            epoch = _attr_int(f, "epoch", 0, MAX_HISTORY)
            params = _read_tree(f["params"])
            n_params = sum(v.size for v in params.values())
            ck = Checkpoint(
                config_yaml=_attr_str(f["config"], "yaml"),
                input_shape=input_shape,
                task=_attr_str(model, "task"), loss=_attr_str(model, "loss"),
                params=params, trainable=_strings(model["trainable"]),
                normalizer=_normalizer(f["normalization"], input_shape),
                encoding=_encoding(f["labels"]),
                x_names=_strings(model["x_names"], max(int(np.prod(input_shape)), 1)),
                y_name=_attr_str(model, "y_name") or None,
                epoch=epoch, step=_attr_int(f, "step", 0, 2**63 - 1), backend=_attr_str(f, "backend", ""),
                optimizer_type=_attr_str(f["optimizer"], "type", ""),
                optimizer=_read_tree(f["optimizer"], 4 * n_params + 16),
                history=_history(f["history"], epoch),
                rng=_rng(_attr_str(f["rng"], "state")),
                best_epoch=_attr_int(f, "best_epoch", 0, MAX_HISTORY, 0),
                best_value=float(f.attrs.get("best_value", np.nan)),
                finished=_finished(f),
                created=str(f.attrs.get("created", "")), nncli_version=str(f.attrs.get("nncli_version", "")),
                **(_read_v2(f) if int(version) >= 2 else {}),
            )
            for item in ("columns", "target_normalization"):   # version 2's items
                if item in f and int(version) < 2:
                    raise ValueError(f"/{item} in a version 1 checkpoint")
            if "columns" in f:
                ck.columns = _columns(f["columns"], ck)
            _check_loaded(ck)
            return ck
    except CheckpointError:
        raise
    except (KeyError, OSError, ValueError, TypeError, RuntimeError, AttributeError, IndexError,
            OverflowError, UnicodeDecodeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{where}: damaged checkpoint: {msg}") from None
