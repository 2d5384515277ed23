"""The checkpoint file: HDF5, readable with h5py and numpy alone, never pickle.

Layout (format_version 1)::

    /                     attrs: format="nncli-checkpoint", format_version=1, nncli_version,
                                 created (ISO time), epoch, step, backend, best_epoch, best_value,
                                 finished ("" while training, "epochs" or "early_stopping" once done)
    /config               attr "yaml": the resolved config as YAML text
    /model                attrs: input_shape, task, loss, x_names, y_name, trainable (names)
    /params/<layer>/<p>   one dataset per parameter or state value, e.g. /params/dense_1/W
    /optimizer            attr "type"; datasets iterations and <slot>/<layer>/<p>
    /normalization        attr "kind"; datasets shift, scale (x -> (x - shift) * scale)
    /labels               attrs kind, numeric; dataset classes (UTF-8 strings)
    /history/<metric>     one value per finished epoch (loss, val_loss, accuracy, ...)
    /rng                  attr "state": JSON of the numpy generator states for an exact resume

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
from nncli.data import Encoding, Normalizer
from nncli.errors import CheckpointError

FORMAT = "nncli-checkpoint"
FORMAT_VERSION = 1


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
    norm = f.create_group("normalization")
    norm.attrs["kind"] = c.normalizer.kind
    if c.normalizer.kind != "none":
        norm.create_dataset("shift", data=c.normalizer.shift)
        norm.create_dataset("scale", data=c.normalizer.scale)
    labels = f.create_group("labels")
    labels.attrs.update({"kind": c.encoding.kind, "numeric": bool(c.encoding.numeric)})
    if c.encoding.classes is not None:
        labels.create_dataset("classes", data=_str_list(c.encoding.classes))
    hist = f.create_group("history", track_order=True)  # metrics.csv's column order survives --resume
    for key, values in c.history.items():
        hist.create_dataset(key, data=np.asarray(values, dtype=np.float64))
    f.create_group("rng").attrs["state"] = json.dumps(c.rng)


def _read_tree(group: h5py.Group) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            if obj.dtype.kind not in "biuf":
                raise ValueError(f"{obj.name} holds {obj.dtype}, expected numbers")
            out[name] = np.asarray(obj[()])
    group.visititems(visit)
    return out


def _strings(ds) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in ds[()]]


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
            if not isinstance(version, (int, np.integer)) or int(version) != FORMAT_VERSION:
                raise CheckpointError(f"{where}: checkpoint format version {version} is not supported "
                                      f"(this nncli reads version {FORMAT_VERSION})")
            for group in ("config", "model", "params", "optimizer", "normalization", "labels", "history", "rng"):
                if group not in f:
                    raise CheckpointError(f"{where}: damaged checkpoint: missing /{group}")
            model = f["model"]
            norm = f["normalization"]
            labels = f["labels"]
            normalizer = Normalizer(str(norm.attrs["kind"]),
                                    norm["shift"][()] if "shift" in norm else None,
                                    norm["scale"][()] if "scale" in norm else None)
            return Checkpoint(
                config_yaml=str(f["config"].attrs["yaml"]),
                input_shape=tuple(int(d) for d in model.attrs["input_shape"]),
                task=str(model.attrs["task"]), loss=str(model.attrs["loss"]),
                params=_read_tree(f["params"]), trainable=_strings(model["trainable"]),
                normalizer=normalizer,
                encoding=Encoding(str(labels.attrs["kind"]),
                                  _strings(labels["classes"]) if "classes" in labels else None,
                                  bool(labels.attrs["numeric"])),
                x_names=_strings(model["x_names"]), y_name=str(model.attrs["y_name"]) or None,
                epoch=int(f.attrs["epoch"]), step=int(f.attrs["step"]), backend=str(f.attrs.get("backend", "")),
                optimizer_type=str(f["optimizer"].attrs.get("type", "")), optimizer=_read_tree(f["optimizer"]),
                history={k: [float(v) for v in f["history"][k][()]] for k in f["history"]},
                rng=json.loads(str(f["rng"].attrs["state"])),
                best_epoch=int(f.attrs.get("best_epoch", 0)), best_value=float(f.attrs.get("best_value", np.nan)),
                finished=str(f.attrs.get("finished", "")),
                created=str(f.attrs.get("created", "")), nncli_version=str(f.attrs.get("nncli_version", "")),
            )
    except CheckpointError:
        raise
    except (KeyError, OSError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{where}: damaged checkpoint: {msg}") from None
