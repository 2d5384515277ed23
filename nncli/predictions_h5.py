"""`nncli predict ... -o FILE.h5`: predictions as arrays in an HDF5 file, not as CSV text.

Formatting numbers as text is most of `predict`'s time on a big HDF5 input (bench/results.md);
arrays skip it and keep every bit. The file, written chunk by chunk into a temporary file that
replaces the output atomically:

    attrs     nncli_predictions (format 1), model (the checkpoint's path), task, rows
    label          classifier: one class name per row (fixed-length UTF-8, the names `predict` prints)
    probabilities  classifier with --proba: float32 (rows, classes); attrs classes (in column order)
    <target>       regression: float32 (rows, *output shape), in the target's own units

Outputs are checked as every output is (fileio.output_target): never an input, never a folder,
link target or device; an existing file is replaced only when it is itself a predictions file
(a checkpoint or a data file given as -o by mistake is refused, not overwritten).
"""

from __future__ import annotations

from typing import Iterator

import h5py
import numpy as np

from nncli import data, fileio
from nncli.errors import ConfigError, DataError

FORMAT = 1
CHUNK_ROWS = 65_536


def wants_hdf5(output: str | None) -> bool:
    return bool(output) and output != "-" and data.is_hdf5(output)


def check_target(target: fileio.OutputTarget) -> None:
    """An HDF5 output must be a file; an existing one must be an nncli predictions file."""
    if target.kind != "file":
        raise ConfigError(f"{target.path}: an HDF5 predictions file must be a regular file, not a stream or "
                          f"stdout (use a .csv name for a pipe)")
    if target.like is None:
        return
    try:
        with h5py.File(target.real, "r") as f:
            ours = int(f.attrs.get("nncli_predictions", 0)) > 0
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise ConfigError(f"{target.path}: exists and is not an nncli predictions file; predict never replaces "
                          f"another file with HDF5 predictions (remove it or choose another name)")


def write(model, outputs: Iterator[np.ndarray], proba: bool, target: fileio.OutputTarget) -> int:
    """Write the network's outputs, chunk by chunk, to `target`; return the row count."""
    enc = model.ck.encoding
    classify = enc.kind in ("categorical", "binary")
    total = 0
    try:
        with fileio.atomic_path(target.real, target.like) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs.update({"nncli_predictions": FORMAT, "model": str(model.path), "task": model.ck.task})
                sets: dict[str, h5py.Dataset] = {}
                for out in outputs:
                    n = len(out)
                    for name, values in _columns(model, out, proba, classify).items():
                        if name not in sets:
                            sets[name] = _create(f, name, values)
                        ds = sets[name]
                        ds.resize(total + n, axis=0)
                        ds[total:total + n] = values
                    total += n
                if classify and proba and "probabilities" in sets:
                    sets["probabilities"].attrs["classes"] = np.array(enc.classes, dtype=h5py.string_dtype())
                f.attrs["rows"] = total
    except OSError as exc:
        raise DataError(f"{target.path}: cannot write: {exc.strerror or exc}; the previous file is unchanged") from None
    return total


def _columns(model, out: np.ndarray, proba: bool, classify: bool) -> dict[str, np.ndarray]:
    enc = model.ck.encoding
    if classify:
        names = [c.encode("utf-8") for c in enc.classes]
        cols = {"label": np.array(names, dtype=h5py.string_dtype("utf-8", max(map(len, names))))[
            data.class_codes(enc, out)]}
        if proba:
            cols["probabilities"] = data.class_probabilities(enc, out).astype(np.float32)
        return cols
    name = model.ck.y_name or "output"
    return {name: model.ck.target_scaler.invert(out).astype(np.float32)}


def _create(f: h5py.File, name: str, values: np.ndarray) -> h5py.Dataset:
    rows = max(1, min(CHUNK_ROWS, len(values)))
    if values.dtype.kind == "S":  # class names: fixed-length UTF-8, as long as the longest name
        return f.create_dataset(name, (0,), dtype=h5py.string_dtype("utf-8", values.dtype.itemsize),
                                maxshape=(None,), chunks=(rows,))
    return f.create_dataset(name, (0, *values.shape[1:]), dtype=values.dtype, maxshape=(None, *values.shape[1:]),
                            chunks=(rows, *values.shape[1:]))
