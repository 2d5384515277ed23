"""Reading CSV and HDF5 data, label encoding, normalisation, splits and minibatches.

Inputs are float32 arrays shaped (examples, *input_shape). Targets reach the
graph as float32 matrices shaped like the network output: class labels are
encoded (the encoding goes into the checkpoint) and turned into one-hot rows.
Every problem with a file is a DataError naming the file and, where there is
one, the row and column.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from nncli import h5safe
from nncli.errors import DataError

HDF5_SUFFIXES = (".h5", ".hdf5")
MAX_CLASSES = 10_000
FLOAT32_MAX = float(np.finfo(np.float32).max)


def is_hdf5(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in HDF5_SUFFIXES


@dataclass
class Table:
    """Examples read from one file: inputs, optional raw targets, and where they came from."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    x_names: list[str] | None = None   # CSV input columns / HDF5 dataset name
    y_name: str | None = None


# --- CSV ----------------------------------------------------------------------
#
# The first row of a CSV names the columns. A first row whose cells are all numbers is
# data, not a header: training refuses it (unless data.header is false: no header row, the
# columns are col1 .. colN), and so does prediction unless the columns are taken by position.
# A trained model reads its input columns by name: every input name must be in the header,
# other columns (the target, an id) are ignored. `--by-position` (predict, evaluate) takes the
# columns in order instead. Header checks use dicts and sets: linear in the number of columns.

NO_HEADER_HINT = "add a header row of column names, or set data.header: false in the config"
PREDICT_NO_HEADER_HINT = "add a header row with the model's input names, or pass --by-position"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def generic_names(width: int) -> list[str]:
    """Column names of a CSV without a header row."""
    return [f"col{i + 1}" for i in range(width)]


def parse_header(path: str, row: list[str], hint: str) -> list[str]:
    """The column names in a CSV's first row, checked: none empty, no duplicates, not all numbers."""
    header = [h.strip() for h in row]
    if header and all(header) and all(_is_number(h) for h in header):
        raise DataError(f"{path}: line 1 is all numbers ({_preview(header, 4)}), not a header row of "
                        f"column names; {hint}")
    if not all(header):
        raise DataError(f"{path}: line 1: empty column name in the header (column {header.index('') + 1})")
    if len(set(header)) != len(header):
        seen: set[str] = set()
        dupes = {h for h in header if h in seen or seen.add(h)}
        raise DataError(f"{path}: line 1: duplicate column name '{min(dupes)}' in the header")
    return header


def header_in_position_mode(row: list[str], n_inputs: int) -> bool:
    """With --by-position: is this first row a header (skipped)? Yes when one of its input
    cells is not a number; a first row of numbers is data."""
    return not all(_is_number(c) for c in row[:n_inputs])


def _csv_rows(path: str, header: bool | str = True, hint: str = NO_HEADER_HINT, n_inputs: int = 0
              ) -> tuple[list[str] | None, list[list[str]], int]:
    """(column names, data rows, line number of the first data row).

    header: True (the first row names the columns), False (no header row: names are None),
    or "position" (a header row is skipped when there is one, see header_in_position_mode)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    if "\x00" in text:
        raise DataError(f"{path}: contains NUL bytes; expected a CSV text file")
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # \r-only line ends too
        rows = [r for r in reader]
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()
    if not rows:
        raise DataError(f"{path}: the file is empty; expected a header row and data rows")
    if header == "position":  # a header row's names are not used, so not checked
        header = header_in_position_mode(rows[0], n_inputs)
        names = [h.strip() for h in rows[0]] if header else None
    elif header:
        names = parse_header(path, rows[0], hint)
    else:
        names = None
    width_of = "the header" if header else "line 1"
    first = 2 if header else 1
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    width = len(rows[0])
    for i, row in enumerate(body):
        if len(row) != width:
            raise DataError(f"{path}: line {i + first}: expected {width} columns as in {width_of}, got {len(row)}")
    return names, body, first


def _to_float(path: str, cells: np.ndarray, names: Sequence[str], row_offset: int = 2) -> np.ndarray:
    """Convert a (rows, cols) array of strings to float32, naming the first bad cell."""
    try:
        out = np.char.strip(cells).astype(np.float64)
    except ValueError:
        out = None
    if out is not None and np.isfinite(out).all() and (np.abs(out) <= FLOAT32_MAX).all():
        return out.astype(np.float32)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            try:
                v = float(cell)
            except ValueError:
                raise DataError(f"{path}: line {r + row_offset}, column '{names[c]}': "
                                f"expected a number, got {cell.strip()[:40]!r}") from None
            if not np.isfinite(v):
                raise DataError(f"{path}: line {r + row_offset}, column '{names[c]}': "
                                f"non-finite value {cell.strip()!r}")
            if abs(v) > FLOAT32_MAX:
                raise DataError(f"{path}: line {r + row_offset}, column '{names[c]}': "
                                f"{cell.strip()[:40]!r} is too large for float32")
    raise DataError(f"{path}: cannot read numbers")  # pragma: no cover


def read_csv(path: str, x_cols: Sequence[str] | str | None, y_col: str | None, *,
             with_targets: bool = True, expect_x: Sequence[str] | None = None,
             header: bool = True, by_position: bool = False) -> Table:
    """Read a CSV.

    Training (`with_targets`): the target is `y_col` (default: the last column);
    inputs are `x_cols` (default: every other column). Without a header row
    (`header` false) the columns are named col1 .. colN.
    Prediction (`expect_x` given): see model_columns; `header` false (a test file of a run
    with data.header false) names the columns col1 .. colN, as in training.
    """
    if expect_x is not None:
        mode = "position" if by_position else bool(header)
        names, body, first = _csv_rows(path, mode, PREDICT_NO_HEADER_HINT, len(expect_x))
        cells = np.array(body, dtype=str)
        if names is None and not by_position:
            names = generic_names(cells.shape[1])
        return _csv_for_model(path, names, cells, first, expect_x, y_col, with_targets, by_position)
    names, body, first = _csv_rows(path, bool(header))
    cells = np.array(body, dtype=str)
    header_names = names
    names = names if names is not None else generic_names(cells.shape[1])
    if isinstance(x_cols, str):
        x_cols = [x_cols]
    position = {h: i for i, h in enumerate(names)}
    y_name = y_col if y_col is not None else names[-1]
    if y_name not in position:
        raise DataError(f"{path}: no column '{y_name}' for the target; columns: {_preview(names)}")
    if x_cols is None:
        x_cols = [h for h in names if h != y_name]
    for c in x_cols:
        if c not in position:
            raise DataError(f"{path}: no input column '{c}'; columns: {_preview(names)}")
    if not x_cols:
        raise DataError(f"{path}: no input columns besides the target column '{y_name}'")
    idx = [position[c] for c in x_cols]
    y_cells = cells[:, position[y_name]]
    if header_names is not None and all(_is_number(c) for c in x_cols) and y_name in set(np.char.strip(y_cells).tolist()):
        # e.g. "5.1,3.5,1.4,0.2,setosa": numbers for input names and a target name that is also a label
        raise DataError(f"{path}: line 1 ({_preview(header_names, 4)}) looks like a data row, not a header row "
                        f"of column names; {NO_HEADER_HINT}")
    x = _to_float(path, cells[:, idx], list(x_cols), row_offset=first)
    y = _targets(path, y_cells, y_name, row_offset=first) if with_targets else None
    return Table(x, y, path, list(x_cols), y_name)


def model_columns(path: str, names: list[str] | None, width: int, expect_x: Sequence[str], y_col: str | None,
                  with_targets: bool, by_position: bool) -> tuple[list[int], int | None, list[str]]:
    """The columns a trained model reads from a CSV: (input column indices, target column index
    or None, the names of all columns for messages).

    By name (the default): every input name must be in the header; other columns are ignored;
    the target is the column named `y_col`. A header that lacks any input name is an error that
    lists the missing names and the header's unused ones.
    By position: exactly the inputs, in order, then (evaluate: required; predict: optional,
    ignored) one target column."""
    n = len(expect_x)
    shown = names if names is not None else generic_names(width)
    if by_position:
        if width == n + 1 or (width == n and not with_targets):
            return list(range(n)), (n if width == n + 1 else None), shown
        want = f"{n + 1} ({n} inputs, then the target)" if with_targets else f"{n} (the inputs) or {n + 1} (the inputs, then the target)"
        raise DataError(f"{path}: --by-position: expected {want} columns, got {width}")
    position = {h: i for i, h in enumerate(names)}
    missing = [c for c in expect_x if c not in position]
    if missing:
        inputs = set(expect_x)
        unused = [h for h in names if h not in inputs and h != y_col]
        raise DataError(f"{path}: line 1: the header does not match the model's input columns: missing "
                        f"{_preview(missing)}; not model inputs: {_preview(unused) or 'none'} (name the columns as "
                        f"the model's inputs, or pass --by-position to take them in order)")
    y_idx = position.get(y_col) if y_col is not None else None
    if with_targets and y_idx is None:
        raise DataError(f"{path}: no target column '{y_col}' to evaluate against")
    return [position[c] for c in expect_x], y_idx, shown


def _csv_for_model(path: str, names: list[str] | None, cells: np.ndarray, first: int, expect_x: Sequence[str],
                   y_col: str | None, with_targets: bool, by_position: bool) -> Table:
    """Inputs (and, with_targets, the targets) for a trained model: see model_columns."""
    idx, y_idx, shown = model_columns(path, names, cells.shape[1], expect_x, y_col, with_targets, by_position)
    x_names = [shown[i] for i in idx]
    x = _to_float(path, cells[:, idx], x_names, row_offset=first)
    y = _targets(path, cells[:, y_idx], shown[y_idx], row_offset=first) if with_targets else None
    return Table(x, y, path, x_names, shown[y_idx] if y_idx is not None else y_col)


def _targets(path: str, column: np.ndarray, name: str, row_offset: int = 2) -> np.ndarray:
    """A CSV target column: numbers when every cell is one, else the (stripped) strings."""
    y = np.char.strip(column)
    if (y == "").any():
        raise DataError(f"{path}: line {int(np.argmax(y == '')) + row_offset}, column '{name}': empty target")
    try:
        values = y.astype(np.float64)
    except ValueError:
        return y
    if not np.isfinite(values).all():
        raise DataError(f"{path}: line {int(np.argmax(~np.isfinite(values))) + row_offset}, column '{name}': "
                        f"non-finite target")
    return values


def _preview(names: Sequence[str], n: int = 6) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


# --- HDF5 ---------------------------------------------------------------------

def _open_h5(path: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError:
        raise DataError(f"{path}: not a readable HDF5 file") from None


def stored_completely(ds: h5py.Dataset) -> bool:
    """Does the file hold every value `ds` declares? HDF5 reads unwritten chunks (or never
    written contiguous storage) as fill values, so a 10 kB file can declare 8 GB of zeros.
    Answered from the dataset's metadata, before anything is read or allocated."""
    if ds.is_virtual or ds.external:  # stored in other files: refused by the link checks
        return True
    size = int(np.prod(ds.shape, dtype=object)) if ds.shape else 0
    if size == 0:
        return True
    if ds.chunks is None:
        return ds.id.get_storage_size() >= size * ds.dtype.itemsize
    needed = int(np.prod([-(-d // c) for d, c in zip(ds.shape, ds.chunks)], dtype=object))
    return ds.id.get_num_chunks() >= needed


def check_stored(ds: h5py.Dataset, path: str, name: str) -> None:
    """A DataError for a dataset whose file does not hold all it declares (see stored_completely)."""
    if not stored_completely(ds):
        raise DataError(f"{path}: dataset '{name}' declares shape {tuple(ds.shape)} but the file does not "
                        f"store all of it (unwritten parts would read as fill values); refusing it")


def _h5_dataset(f: h5py.File, path: str, name: str, what: str) -> h5py.Dataset:
    """The dataset `name`, checked (kind, shape, storage) without reading it."""
    ds = h5safe.get(f, name, path, DataError)  # only data stored in this file
    if ds is None:
        names = h5safe.dataset_names(f)
        raise DataError(f"{path}: no dataset '{name}' for the {what}; datasets: {_preview(names) or 'none'}")
    if not isinstance(ds, h5py.Dataset):
        raise DataError(f"{path}: '{name}' is a group, expected a dataset for the {what}")
    if ds.shape is None or len(ds.shape) == 0:
        raise DataError(f"{path}: dataset '{name}' is a scalar; expected one row per example")
    if ds.shape[0] == 0:
        raise DataError(f"{path}: dataset '{name}' has no rows")
    kind = ds.dtype.kind
    if kind not in "biuf" and not (what == "targets" and kind in "SOU"):
        raise DataError(f"{path}: dataset '{name}' has type {ds.dtype}, expected numbers")
    check_stored(ds, path, name)
    return ds


def _h5_read(ds: h5py.Dataset, path: str, name: str) -> np.ndarray:
    kind = ds.dtype.kind
    try:
        arr = ds[()]
    except (OSError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read dataset '{name}': {str(exc).splitlines()[0]}") from None
    if kind in "SO":
        arr = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.ravel()])
    return arr


def _h5_array(f: h5py.File, path: str, name: str, what: str) -> np.ndarray:
    return _h5_read(_h5_dataset(f, path, name, what), path, name)


def read_hdf5(path: str, x_name: str | None, y_name: str | None, *, with_targets: bool = True) -> Table:
    x_name = x_name or "x"
    if not isinstance(x_name, str):
        raise DataError(f"{path}: data.x must name one HDF5 dataset, got a list")
    y_name = y_name or "y"
    with _open_h5(path) as f:
        x_ds = _h5_dataset(f, path, x_name, "inputs")
        y_ds = _h5_dataset(f, path, y_name, "targets") if with_targets else None
        if y_ds is not None and y_ds.shape[0] != x_ds.shape[0]:  # before reading either
            raise DataError(f"{path}: '{x_name}' has {x_ds.shape[0]} rows but '{y_name}' has {y_ds.shape[0]}")
        x = _h5_read(x_ds, path, x_name)
        y = _h5_read(y_ds, path, y_name) if y_ds is not None else None
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(f"{path}: dataset '{x_name}' has a non-finite value at index {tuple(int(i) for i in bad)}")
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: '{x_name}' has {len(x)} rows but '{y_name}' has {len(y)}")
    if y is not None and y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{path}: dataset '{y_name}' has a non-finite value at row {int(np.argmax(~np.isfinite(y).reshape(len(y), -1).all(1)))}")
    if x.dtype.kind == "f" and x.size and np.abs(x).max() > FLOAT32_MAX:
        bad = np.argwhere(np.abs(x) > FLOAT32_MAX)[0]
        raise DataError(f"{path}: dataset '{x_name}' has a value too large for float32 at index "
                        f"{tuple(int(i) for i in bad)}")
    return Table(x.astype(np.float32), y, path, [x_name], y_name)


def read(path: str, x: Sequence[str] | str | None = None, y: str | None = None, *,
         with_targets: bool = True, expect_x: Sequence[str] | None = None,
         header: bool = True, by_position: bool = False) -> Table:
    """Read a labelled (or, for prediction, unlabelled) CSV or HDF5 file."""
    path = str(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, expected a .csv or .h5 file")
    if is_hdf5(path):
        if expect_x is not None:  # a trained model: its dataset names if the file has them, else x / y
            with _open_h5(path) as f:
                x = expect_x[0] if len(expect_x) == 1 and expect_x[0] in f else None
                y = y if y in f else None
        return read_hdf5(path, x, y, with_targets=with_targets)
    return read_csv(path, x, y, with_targets=with_targets, expect_x=expect_x, header=header,
                    by_position=by_position)


# --- targets ------------------------------------------------------------------

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
            raise UnitsMismatch(f"{where}: {len(classes)} classes ({_preview(classes)}) but the last layer has "
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
                            f"({_preview(classes)}); use categorical_crossentropy with a softmax layer")
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
            raise DataError(f"{where}: unknown class '{uniq[codes < 0][0]}' (the model knows {_preview(enc.classes)})")
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


def decode(enc: Encoding, output: np.ndarray) -> np.ndarray:
    """Predicted class names (classification) for network outputs."""
    if enc.kind == "categorical":
        return np.asarray(enc.classes)[np.argmax(output.reshape(len(output), -1), axis=1)]
    if enc.kind == "binary":
        return np.asarray(enc.classes)[(output.reshape(len(output)) > 0.5).astype(int)]
    raise ValueError("regression outputs have no classes")


# --- normalisation ------------------------------------------------------------

@dataclass
class Normalizer:
    """x -> (x - shift) * scale, per input feature; fitted on the training split only."""

    kind: str
    shift: np.ndarray | None = None
    scale: np.ndarray | None = None

    @classmethod
    def fit(cls, kind: str, x: np.ndarray) -> "Normalizer":
        if kind == "none":
            return cls("none")
        x64 = x.astype(np.float64)
        if kind == "standard":
            shift, spread = x64.mean(axis=0), x64.std(axis=0)
        else:
            shift, spread = x64.min(axis=0), x64.max(axis=0) - x64.min(axis=0)
        scale = np.where(spread > 0, 1.0 / np.where(spread > 0, spread, 1.0), 1.0)
        return cls(kind, shift.astype(np.float32), scale.astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return x
        return ((x - self.shift) * self.scale).astype(np.float32)


# --- splits and batches -------------------------------------------------------

def split(n: int, fraction: float, rng: np.random.Generator, strata: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) index arrays; stratified by `strata` when given."""
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    if strata is None:
        perm = rng.permutation(n)
        k = int(round(fraction * n))
        return np.sort(perm[k:]), np.sort(perm[:k])
    val = []
    for cls in np.unique(strata):
        members = np.flatnonzero(strata == cls)
        members = members[rng.permutation(len(members))]
        val.append(members[:int(round(fraction * len(members)))])
    val_idx = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(n), val_idx), val_idx


def shuffle_order(x, rng: np.random.Generator):
    """One epoch's order for `batches`: a permutation of the rows (a stream: of its blocks)."""
    return x.shuffle_order(rng) if hasattr(x, "shuffle_order") else rng.permutation(len(x))


def batches(x: np.ndarray, t: np.ndarray | None, batch_size: int, order: np.ndarray | None = None
            ) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
    """Minibatches of a fixed shape: the last one is padded with zero rows of weight 0.

    Fixed shapes mean one compiled function (the JAX backend retraces per shape).
    `x` may also be an on-disk stream (nncli.stream.XStream) with `order` from shuffle_order.
    """
    if hasattr(x, "stream_batches"):
        yield from x.stream_batches(t, batch_size, order)
        return
    if order is not None:
        x = x[order]
        t = t[order] if t is not None else None
    n = len(x)
    for start in range(0, n, batch_size):
        xb = x[start:start + batch_size]
        tb = t[start:start + batch_size] if t is not None else None
        w = np.ones(len(xb), dtype=np.float32)
        if len(xb) < batch_size:
            pad = batch_size - len(xb)
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), dtype=xb.dtype)])
            if tb is not None:
                tb = np.concatenate([tb, np.zeros((pad, *tb.shape[1:]), dtype=tb.dtype)])
            w = np.concatenate([w, np.zeros(pad, dtype=np.float32)])
        yield xb, tb, w
