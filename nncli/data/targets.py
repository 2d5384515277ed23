"""Targets: how the raw targets of a Table map onto the network's outputs (the Encoding,
stored in the checkpoint), encoded as float32 rows, and decoded back to class names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nncli.data.table import FLOAT32_MAX, Table, preview
from nncli.errors import DataError

MAX_CLASSES = 10_000


class UnitsMismatch(DataError):
    """The targets need a different number of output units than the last layer has."""


@dataclass
class Encoding:
    """How targets map to output columns.

    kind: "categorical" (one-hot over `classes`), "binary" (one 0/1 column:
    classes[1] is the positive class), or "values" (regression / multi-label: as is).
    """

    kind: str
    classes: list[str] | None = None
    numeric: bool = False  # class labels were numbers (printed back as numbers)

    def __post_init__(self):
        if self.classes is not None:
            self.classes = [str(c) for c in self.classes]


def _label_strings(y: np.ndarray) -> tuple[np.ndarray, bool]:
    if y.dtype.kind in "iub":  # straight to text: uint64 labels >= 2**63 stay exact
        return y.astype(np.int8 if y.dtype.kind == "b" else y.dtype).astype(str), True
    if y.dtype.kind == "f":
        if not np.all(np.mod(y, 1) == 0) or not np.all(np.abs(y) < 2**53):
            raise ValueError("class labels must be integers or names, got fractional numbers")
        return y.astype(np.int64).astype(str), True
    strs = np.char.strip(y.astype(str))
    try:
        as_num = strs.astype(np.float64)
        if np.all(np.mod(as_num, 1) == 0) and np.all(np.abs(as_num) < 2**53):
            return as_num.astype(np.int64).astype(str), True
    except ValueError:
        pass
    return strs, False


def _one_label_each(y: np.ndarray, where: str) -> None:
    if y.size != len(y):
        raise ValueError(f"class labels must be one value per example, got {y.size // max(len(y), 1)} "
                         f"(shape {tuple(y.shape)})")


def _sort_classes(labels: np.ndarray, numeric: bool) -> list[str]:
    uniq = np.unique(labels)
    return [str(c) for c in (sorted(uniq, key=lambda s: int(s)) if numeric else sorted(uniq))]


def fit_encoding(table: Table, loss: str, output_units: int) -> Encoding:
    """Decide how `table.y` maps onto the network's output, or explain why it cannot."""
    y = table.y
    where = f"{table.source}: target '{table.y_name}'"
    if loss == "categorical_crossentropy":
        if y.ndim == 2 and y.shape[1] > 1:  # one-hot or probability rows
            if y.dtype.kind not in "biuf":
                raise DataError(f"{where}: one-hot targets must be numbers")
            if y.shape[1] != output_units:
                raise UnitsMismatch(f"{where}: {y.shape[1]} one-hot columns but the last layer has {output_units} units")
            return Encoding("categorical", [str(i) for i in range(y.shape[1])], numeric=True)
        try:
            _one_label_each(y, where)
            labels, numeric = _label_strings(y.reshape(-1) if y.ndim > 1 else y)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
        classes = _sort_classes(labels, numeric)
        if len(classes) > MAX_CLASSES:
            raise DataError(f"{where}: {len(classes)} distinct classes; is this a regression target?")
        if numeric and all(0 <= int(c) < output_units for c in classes):
            classes = [str(i) for i in range(output_units)]  # integer labels index the outputs
        if len(classes) != output_units:
            raise UnitsMismatch(f"{where}: {len(classes)} classes ({preview(classes)}) but the last layer has "
                            f"{output_units} units; set layers[-1].units to {len(classes)}")
        return Encoding("categorical", classes, numeric)
    if loss == "binary_crossentropy":
        if y.ndim == 2 and y.shape[1] > 1 or output_units > 1:
            yy = y.reshape(len(y), -1)
            if yy.dtype.kind not in "biuf" or not np.isin(yy, (0, 1)).all():
                raise DataError(f"{where}: multi-label targets must be 0/1 columns")
            if yy.shape[1] != output_units:
                raise UnitsMismatch(f"{where}: {yy.shape[1]} target columns but the last layer has {output_units} units")
            return Encoding("values")
        try:
            _one_label_each(y, where)
            labels, numeric = _label_strings(y.reshape(-1))
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
        classes = _sort_classes(labels, numeric)
        if numeric and set(classes) <= {"0", "1"}:
            classes = ["0", "1"]
        if len(classes) != 2:
            raise DataError(f"{where}: binary_crossentropy needs 2 classes, found {len(classes)} "
                            f"({preview(classes)}); use categorical_crossentropy with a softmax layer")
        return Encoding("binary", classes, numeric)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: regression targets must be numbers, got text such as {str(y.reshape(-1)[0])[:30]!r}")
    return Encoding("values")


def encode_targets(table: Table, enc: Encoding, output_shape: tuple[int, ...]) -> np.ndarray:
    """Targets as a float32 array shaped (examples, *output_shape)."""
    y = table.y
    where = f"{table.source}: target '{table.y_name}'"
    n = len(y)
    if enc.kind in ("categorical", "binary") and not (enc.kind == "categorical" and y.ndim == 2 and y.shape[1] > 1):
        try:
            _one_label_each(y, where)
            labels, _ = _label_strings(y.reshape(-1))
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
        uniq, inverse = np.unique(labels, return_inverse=True)
        index = {c: i for i, c in enumerate(enc.classes)}
        codes = np.array([index.get(str(u), -1) for u in uniq], dtype=np.int64)
        if (codes < 0).any():
            raise DataError(f"{where}: unknown class '{uniq[codes < 0][0]}' (the model knows {preview(enc.classes)})")
        idx = codes[inverse]
        per_example = (1,) if enc.kind == "binary" else (len(enc.classes),)
        if tuple(output_shape) != per_example:
            raise UnitsMismatch(f"{where}: one class label per example needs an output of shape {per_example}, "
                                f"the network outputs {tuple(output_shape)} (flatten before the last layer?)")
        if enc.kind == "binary":
            return idx.astype(np.float32).reshape(n, 1)
        return np.eye(len(enc.classes), dtype=np.float32)[idx]
    if y.dtype.kind == "f" and y.size and np.abs(y).max() > FLOAT32_MAX:
        raise DataError(f"{where}: a target value is too large for float32 ({float(np.abs(y).max()):.3g})")
    arr = np.asarray(y, dtype=np.float32)
    if arr.size != n * int(np.prod(output_shape)):
        per = arr.size // max(n, 1)
        raise UnitsMismatch(f"{where}: {per} target value(s) per example but the network outputs shape "
                        f"{tuple(output_shape)}")
    return arr.reshape(n, *output_shape)


def class_codes(enc: Encoding, output: np.ndarray) -> np.ndarray:
    """The predicted classes (classification) as indices into enc.classes."""
    if enc.kind == "categorical":
        return np.argmax(output.reshape(len(output), -1), axis=1)
    if enc.kind == "binary":
        return (output.reshape(len(output)) > 0.5).astype(np.intp)
    raise ValueError("regression outputs have no classes")


def class_probabilities(enc: Encoding, output: np.ndarray) -> np.ndarray:
    """(rows, classes) probabilities in enc.classes' order: a binary output p is (1 - p, p)."""
    if enc.kind == "binary":
        p = output.reshape(len(output), 1)
        return np.concatenate([1.0 - p, p], axis=1)
    if enc.kind == "categorical":
        return output.reshape(len(output), -1)
    raise ValueError("regression outputs have no classes")


def decode(enc: Encoding, output: np.ndarray) -> np.ndarray:
    """Predicted class names (classification) for network outputs."""
    return np.asarray(enc.classes)[class_codes(enc, output)]
