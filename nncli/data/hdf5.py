"""Reading HDF5 data: datasets read whole (checked before anything is read), and the
block stream of training inputs bigger than the memory budget.

Only data stored in the file itself is read (see nncli.h5safe), and a dataset is read only
when the file stores every value it declares (see stored_completely).

Streaming: when the inputs of an HDF5 training file (as float32) are larger than
``data.memory_budget_mb``, they stay on disk. The rows are cut into contiguous *blocks* of a
few MB (the validation split takes whole blocks); each epoch reads the training blocks in a
shuffled order, a few at a time, permutes the rows of each such group and cuts it into
minibatches. Only the targets (one small row per example) are held in memory. The epoch's
order (block permutation and the seed of the row permutations) is drawn from the trainer's
shuffle generator, so resuming from a checkpoint replays the same batches exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import h5py
import numpy as np

from nncli import h5safe
from nncli.data.batches import Batch, Rows, Source
from nncli.data.normalize import Normalizer
from nncli.data.table import FLOAT32_MAX, Table, is_hdf5, preview
from nncli.errors import DataError

DEFAULT_BUDGET_MB = 512.0
BLOCK_BYTES = 4 << 20          # rows per block: about this many bytes of float32 inputs
MAX_BLOCKS_FOR_SPLIT = 64      # small streamed files: at least this many blocks, for the split
MIX_BLOCKS = 4                 # blocks read and shuffled together
TARGETS_FLOOR_BYTES = 64 << 20  # streamed training holds the targets in memory: up to the budget, or this


# --- datasets read whole ------------------------------------------------------------------

def open_h5(path: str) -> h5py.File:
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


def dataset(f: h5py.File, path: str, name: str, what: str) -> h5py.Dataset:
    """The dataset `name`, checked (kind, shape, storage) without reading it."""
    ds = h5safe.get(f, name, path, DataError)  # only data stored in this file
    if ds is None:
        names = h5safe.dataset_names(f)
        raise DataError(f"{path}: no dataset '{name}' for the {what}; datasets: {preview(names) or 'none'}")
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


def read_dataset(ds: h5py.Dataset, path: str, name: str) -> np.ndarray:
    kind = ds.dtype.kind
    try:
        arr = ds[()]
    except (OSError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read dataset '{name}': {str(exc).splitlines()[0]}") from None
    if kind in "SO":
        arr = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.ravel()])
    return arr


def read_hdf5(path: str, x_name: str | None, y_name: str | None, *, with_targets: bool = True) -> Table:
    x_name = x_name or "x"
    if not isinstance(x_name, str):
        raise DataError(f"{path}: data.x must name one HDF5 dataset, got a list")
    y_name = y_name or "y"
    with open_h5(path) as f:
        x_ds = dataset(f, path, x_name, "inputs")
        y_ds = dataset(f, path, y_name, "targets") if with_targets else None
        if y_ds is not None and y_ds.shape[0] != x_ds.shape[0]:  # before reading either
            raise DataError(f"{path}: '{x_name}' has {x_ds.shape[0]} rows but '{y_name}' has {y_ds.shape[0]}")
        x = read_dataset(x_ds, path, x_name)
        y = read_dataset(y_ds, path, y_name) if y_ds is not None else None
    if x.dtype.kind == "f":
        check_inputs(x, path, x_name)
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: '{x_name}' has {len(x)} rows but '{y_name}' has {len(y)}")
    if y is not None and y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{path}: dataset '{y_name}' has a non-finite value at row {int(np.argmax(~np.isfinite(y).reshape(len(y), -1).all(1)))}")
    return Table(x.astype(np.float32, copy=False), y, path, [x_name], y_name)


CHECK_BYTES = 4 << 20  # inputs checked this many bytes at a time: the temporaries stay in cache


def check_inputs(x: np.ndarray, path: str, x_name: str, first_row: int = 0) -> None:
    """Every input finite and within float32's range (true of every finite float32 and float16),
    the first bad one named by its index in the file (x's rows start at `first_row`); checked in
    row blocks."""
    rows = max(1, CHECK_BYTES // max(1, x[:1].nbytes))
    wide = x.dtype.itemsize > 4
    for start in range(0, len(x), rows):
        block = x[start:start + rows]
        if not np.isfinite(block).all():
            bad = np.argwhere(~np.isfinite(block))[0]
            bad[0] += first_row + start
            raise DataError(f"{path}: dataset '{x_name}' has a non-finite value at index {tuple(int(i) for i in bad)}")
        if wide and block.size and np.abs(block).max() > FLOAT32_MAX:
            bad = np.argwhere(np.abs(block) > FLOAT32_MAX)[0]
            bad[0] += first_row + start
            raise DataError(f"{path}: dataset '{x_name}' has a value too large for float32 at index "
                            f"{tuple(int(i) for i in bad)}")


# --- the block stream ---------------------------------------------------------------

def budget_bytes(spec) -> float:
    mb = spec["data"].get("memory_budget_mb", DEFAULT_BUDGET_MB)
    return float(DEFAULT_BUDGET_MB if mb is None else mb) * (1 << 20)


def x_info(path: str, x_name: Any) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of the inputs dataset, or None when it is not a plain numeric dataset
    (the in-memory reader then gives the precise error)."""
    if not isinstance(x_name, (str, type(None))):
        return None
    try:
        with h5py.File(path, "r") as f:
            ds = h5safe.get(f, x_name or "x", path, DataError)  # only data stored in the file
            if not isinstance(ds, h5py.Dataset) or ds.shape is None or len(ds.shape) < 1:
                return None
            if ds.dtype.kind not in "biuf" or ds.shape[0] == 0:
                return None
            return tuple(int(d) for d in ds.shape), ds.dtype
    except (OSError, ValueError, TypeError, KeyError):
        return None


def should_stream(spec) -> bool:
    """Stream the training file? (HDF5 whose inputs, as float32, exceed the memory budget.)"""
    d = spec["data"]
    if not is_hdf5(d["train"]):
        return False
    info = x_info(d["train"], d["x"])
    if info is None:
        return False
    shape, _ = info
    return 4.0 * float(np.prod(shape, dtype=np.float64)) > budget_bytes(spec)


@dataclass
class StreamOrder:
    """One epoch's order for an XStream: the block permutation and a seed for the rows."""

    blocks: np.ndarray
    seed: int

    def __len__(self) -> int:  # pragma: no cover - informative only
        return len(self.blocks)


class XStream(Source):
    """Inputs read from an HDF5 dataset block by block, normalised on the fly."""

    def __init__(self, path: str, name: str, blocks: Sequence[tuple[int, int]], input_shape: tuple[int, ...],
                 normalizer: Normalizer | None = None):
        self.path, self.name = path, name
        self.blocks = [(int(a), int(b)) for a, b in blocks]
        self.input_shape = tuple(input_shape)
        self.normalizer = normalizer or Normalizer("none")
        self.offsets = np.concatenate([[0], np.cumsum([b - a for a, b in self.blocks])]).astype(np.int64)
        self.rows = int(self.offsets[-1])

    def __len__(self) -> int:
        return self.rows

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, *self.input_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.input_shape)

    def shuffle_order(self, rng: np.random.Generator) -> StreamOrder:
        """A permutation of the blocks and a seed for the rows within each group of blocks."""
        return StreamOrder(rng.permutation(len(self.blocks)), int(rng.integers(0, 2**63 - 1)))

    def subset(self, keep: Sequence[int]) -> "XStream":
        """The stream of the blocks numbered `keep` (in that order), with the same normaliser."""
        return XStream(self.path, self.name, [self.blocks[k] for k in keep], self.input_shape, self.normalizer)

    def normalized(self, normalizer: Normalizer) -> "XStream":
        """The same blocks, normalised by `normalizer`."""
        return XStream(self.path, self.name, self.blocks, self.input_shape, normalizer)

    def targets_of(self, t_all: np.ndarray) -> np.ndarray:
        """The rows of `t_all` (one per row of the file) that belong to this stream, in stream order."""
        return np.concatenate([t_all[a:b] for a, b in self.blocks])

    def _read(self, ds: h5py.Dataset, a: int, b: int) -> np.ndarray:
        try:
            block = ds[a:b]
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"{self.path}: cannot read rows {a}-{b - 1} of dataset '{self.name}': "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        return block if block.dtype == np.float32 else block.astype(np.float32)

    def read_blocks(self, order: Sequence[int] | None = None, group: int = 1
                    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield (block indices, raw float32 rows) for groups of `group` blocks in `order`."""
        seq = list(range(len(self.blocks))) if order is None else [int(k) for k in order]
        f = open_h5(self.path)
        with f:
            ds = h5safe.get(f, self.name, self.path, DataError)
            for i in range(0, len(seq), group):
                ks = seq[i:i + group]
                parts = [self._read(ds, *self.blocks[k]) for k in ks]
                yield ks, parts[0] if len(parts) == 1 else np.concatenate(parts)
                del parts

    def checked_blocks(self, where: str) -> Iterator[np.ndarray]:
        """The raw rows of each block in order; a non-finite value is a DataError naming `where`."""
        for ks, x in self.read_blocks(None, 1):
            check_inputs(x, where, self.name, first_row=self.blocks[ks[0]][0])
            yield x

    def batches(self, t: np.ndarray | None, batch_size: int, order: StreamOrder | None = None) -> Iterator[Batch]:
        """Groups of MIX_BLOCKS blocks in the order's block order, the rows of each group permuted
        (order None: one block at a time as stored, rows in order); the last batch padded."""
        rng = np.random.default_rng(order.seed) if order is not None else None
        block_order = order.blocks if order is not None else None
        carry_x = np.zeros((0, *self.input_shape), np.float32)
        carry_t = t[:0] if t is not None else None
        for ks, x in self.read_blocks(block_order, MIX_BLOCKS if order is not None else 1):
            tt = np.concatenate([t[self.offsets[k]:self.offsets[k + 1]] for k in ks]) if t is not None else None
            if rng is not None:
                perm = rng.permutation(len(x))
                x = x[perm]
                tt = tt[perm] if tt is not None else None
            x = self.normalizer.apply(x)
            if len(carry_x):
                x = np.concatenate([carry_x, x])
                tt = np.concatenate([carry_t, tt]) if tt is not None else None
            full = len(x) - len(x) % batch_size
            w = np.ones(batch_size, dtype=np.float32)
            for start in range(0, full, batch_size):
                yield (x[start:start + batch_size], tt[start:start + batch_size] if tt is not None else None, w)
            carry_x = x[full:].copy()
            carry_t = tt[full:].copy() if tt is not None else None
            del x, tt
        if len(carry_x):
            yield from Rows(carry_x).batches(carry_t, batch_size)


def open_targets(path: str, x_name: Any, y_name: str | None, where: str, budget: float = float("inf")):
    """Check the x/y datasets of a training file; read the targets (small) into memory,
    refused before reading when they alone would take more than `budget` bytes."""
    if not isinstance(x_name, (str, type(None))):
        raise DataError(f"{path}: data.x must name one HDF5 dataset, got a list{where}")
    x_name, y_name = x_name or "x", y_name or "y"
    with open_h5(path) as f:
        info = x_info(path, x_name)
        if info is None:  # let the in-memory reader describe what is wrong
            raise DataError(f"{path}: dataset '{x_name}' cannot be streamed{where}")
        check_stored(f[x_name], path, x_name)
        y_ds = dataset(f, path, y_name, "targets")
        limit = max(budget, TARGETS_FLOOR_BYTES)
        if y_ds.size * max(y_ds.dtype.itemsize, 4) > limit:
            raise DataError(f"{path}: the targets '{y_name}' {tuple(y_ds.shape)} alone take more than "
                            f"{limit / (1 << 20):g} MB (data.memory_budget_mb); they are held in memory{where}")
        y = read_dataset(y_ds, path, y_name)
    shape, _ = info
    if len(y) != shape[0]:
        raise DataError(f"{path}: '{x_name}' has {shape[0]} rows but '{y_name}' has {len(y)}{where}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{path}: dataset '{y_name}' has a non-finite value at row "
                        f"{int(np.argmax(~np.isfinite(y).reshape(len(y), -1).all(1)))}{where}")
    return x_name, y_name, shape, y


def block_ranges(n: int, row_bytes: int) -> list[tuple[int, int]]:
    rows = max(1, min(BLOCK_BYTES // max(row_bytes, 1), -(-n // MAX_BLOCKS_FOR_SPLIT)))
    return [(a, min(a + rows, n)) for a in range(0, n, rows)]
