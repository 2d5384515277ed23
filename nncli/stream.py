"""Bounded memory on big files.

Training: when the inputs of an HDF5 training file (as float32) are larger
than ``data.memory_budget_mb``, they stay on disk. The rows are cut into
contiguous *blocks* of a few MB; the validation split takes whole blocks
(seeded); the normalisation statistics come from one chunked pass over the
training blocks; and each epoch reads the training blocks in a shuffled
order, a few at a time, permutes the rows of each such group and cuts it
into minibatches. Only the targets (one small row per example) are held in
memory. The epoch's order (block permutation and the seed of the row
permutations) is drawn from the trainer's shuffle generator, so resuming
from a checkpoint replays the same batches exactly.

The trainer sees an :class:`XStream` where it would see an array: it has a
length, a ``shape``, ``shuffle_order(rng)`` (see :func:`nncli.data.shuffle_order`)
and ``stream_batches`` (see :func:`nncli.data.batches`).

Prediction: a CSV input larger than ``PREDICT_STREAM_BYTES`` is read, run
through the network and written out in chunks of rows; the output goes to a
temporary file that replaces ``-o`` only when every row is done (or straight
to stdout).
"""

from __future__ import annotations

import csv
import itertools
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TextIO

import h5py
import numpy as np

from nncli import data, fileio, h5safe
from nncli.errors import DataError

DEFAULT_BUDGET_MB = 512.0
BLOCK_BYTES = 4 << 20          # rows per block: about this many bytes of float32 inputs
MAX_BLOCKS_FOR_SPLIT = 64      # small streamed files: at least this many blocks, for the split
MIX_BLOCKS = 4                 # blocks read and shuffled together
PREDICT_STREAM_BYTES = 16 << 20
TARGETS_FLOOR_BYTES = 64 << 20  # streamed training holds the targets in memory: up to the budget, or this
PREDICT_CHUNK_ROWS = 50_000


# --- training: HDF5 inputs on disk ---------------------------------------------------

def budget_bytes(spec) -> float:
    mb = spec["data"].get("memory_budget_mb", DEFAULT_BUDGET_MB)
    return float(DEFAULT_BUDGET_MB if mb is None else mb) * (1 << 20)


def _x_info(path: str, x_name: Any) -> tuple[tuple[int, ...], np.dtype] | None:
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
    if not data.is_hdf5(d["train"]):
        return False
    info = _x_info(d["train"], d["x"])
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


class XStream:
    """Inputs read from an HDF5 dataset block by block, normalised on the fly."""

    def __init__(self, path: str, name: str, blocks: Sequence[tuple[int, int]], input_shape: tuple[int, ...],
                 normalizer: data.Normalizer | None = None):
        self.path, self.name = path, name
        self.blocks = [(int(a), int(b)) for a, b in blocks]
        self.input_shape = tuple(input_shape)
        self.normalizer = normalizer or data.Normalizer("none")
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
        return StreamOrder(rng.permutation(len(self.blocks)), int(rng.integers(0, 2**63 - 1)))

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
        f = data._open_h5(self.path)
        with f:
            ds = h5safe.get(f, self.name, self.path, DataError)
            for i in range(0, len(seq), group):
                ks = seq[i:i + group]
                parts = [self._read(ds, *self.blocks[k]) for k in ks]
                yield ks, parts[0] if len(parts) == 1 else np.concatenate(parts)
                del parts

    def stream_batches(self, t: np.ndarray | None, batch_size: int, order: StreamOrder | None = None
                       ) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
        """Fixed-shape minibatches as :func:`nncli.data.batches` gives them (last one padded)."""
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
            yield from data.batches(carry_x, carry_t, batch_size)


def _check_finite_and_stats(stream: XStream, kind: str, stats: bool, where: str) -> data.Normalizer | None:
    """One pass over `stream`: fail on a non-finite value; fit the normaliser when `stats`."""
    count = 0
    mean = m2 = lo = hi = None
    for ks, x in stream.read_blocks(None, 1):
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            row = stream.blocks[ks[0]][0] + int(bad[0])
            raise DataError(f"{where}: dataset '{stream.name}' has a non-finite value at index "
                            f"{(row, *(int(i) for i in bad[1:]))}")
        if not stats or kind == "none":
            continue
        x64 = x.astype(np.float64)
        if kind == "standard":
            n_b = len(x64)
            mean_b = x64.mean(axis=0)
            m2_b = ((x64 - mean_b) ** 2).sum(axis=0)
            if mean is None:
                count, mean, m2 = n_b, mean_b, m2_b
            else:
                total = count + n_b
                delta = mean_b - mean
                mean = mean + delta * (n_b / total)
                m2 = m2 + m2_b + delta ** 2 * (count * n_b / total)
                count = total
        else:
            b_lo, b_hi = x64.min(axis=0), x64.max(axis=0)
            lo = b_lo if lo is None else np.minimum(lo, b_lo)
            hi = b_hi if hi is None else np.maximum(hi, b_hi)
        del x, x64
    if not stats:
        return None
    if kind == "none":
        return data.Normalizer("none")
    if kind == "standard":
        shift, spread = mean, np.sqrt(m2 / max(count, 1))
    else:
        shift, spread = lo, hi - lo
    scale = np.where(spread > 0, 1.0 / np.where(spread > 0, spread, 1.0), 1.0)
    return data.Normalizer(kind, shift.astype(np.float32), scale.astype(np.float32))


def _open_source(path: str, x_name: Any, y_name: str | None, where: str, budget: float = float("inf")):
    """Check the x/y datasets of a training file; read the targets (small) into memory,
    refused before reading when they alone would take more than `budget` bytes."""
    if not isinstance(x_name, (str, type(None))):
        raise DataError(f"{path}: data.x must name one HDF5 dataset, got a list{where}")
    x_name, y_name = x_name or "x", y_name or "y"
    with data._open_h5(path) as f:
        info = _x_info(path, x_name)
        if info is None:  # let the in-memory reader describe what is wrong
            raise DataError(f"{path}: dataset '{x_name}' cannot be streamed{where}")
        data.check_stored(f[x_name], path, x_name)
        y_ds = data._h5_dataset(f, path, y_name, "targets")
        limit = max(budget, TARGETS_FLOOR_BYTES)
        if y_ds.size * max(y_ds.dtype.itemsize, 4) > limit:
            raise DataError(f"{path}: the targets '{y_name}' {tuple(y_ds.shape)} alone take more than "
                            f"{limit / (1 << 20):g} MB (data.memory_budget_mb); they are held in memory{where}")
        y = data._h5_read(y_ds, path, y_name)
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


def prepare(spec):
    """trainer.prepare for a training file that is streamed from disk."""
    from nncli import network
    from nncli.trainer import Prepared

    d = spec["data"]
    path = d["train"]
    where = f" (from {spec.source}: data.train)"
    try:
        x_name, y_name, shape, y = _open_source(path, d["x"], d["y"], where, budget_bytes(spec))
    except DataError as exc:
        if exc.message.endswith(where):
            raise
        raise DataError(f"{exc.message}{where}") from None
    n, input_shape = shape[0], tuple(shape[1:])
    net = network.build(spec, input_shape)
    table = data.Table(np.zeros((0, *input_shape), np.float32), y, path, [x_name], y_name)
    try:
        enc = data.fit_encoding(table, spec["loss"], net.output_shape[-1])
        t_all = data.encode_targets(table, enc, net.output_shape)
    except data.UnitsMismatch as exc:
        raise spec.error(spec.layers[-1].path, exc.message) from None
    del table, y
    blocks = block_ranges(n, 4 * int(np.prod(input_shape, dtype=np.int64)))
    val = d["validation"]
    x_va = t_va = None
    if isinstance(val, str):
        tr_blocks = blocks
    elif val:
        k = int(round(val * len(blocks)))
        if k == 0 or k == len(blocks):
            raise spec.error("data.validation", f"a fraction of {val} of {len(blocks)} blocks of {n} examples "
                                                f"(streamed from disk) leaves an empty "
                                                f"{'validation' if k == 0 else 'training'} set")
        chosen = set(np.random.default_rng([spec["seed"], 1]).permutation(len(blocks))[:k].tolist())
        tr_blocks = [b for i, b in enumerate(blocks) if i not in chosen]
        va_blocks = [b for i, b in enumerate(blocks) if i in chosen]
    else:
        tr_blocks = blocks
    x_tr = XStream(path, x_name, tr_blocks, input_shape)
    normalizer = _check_finite_and_stats(x_tr, d["normalize"], True, path)
    x_tr.normalizer = normalizer
    t_tr = np.ascontiguousarray(x_tr.targets_of(t_all))
    if isinstance(val, str):
        from nncli.trainer import _read_table

        vt = _read_table(spec, val, "validation")
        if vt.x.shape[1:] != input_shape:
            raise DataError(f"{val}: inputs of shape {vt.x.shape[1:]} but the training data has {input_shape}")
        x_va, t_va = normalizer.apply(vt.x), data.encode_targets(vt, enc, net.output_shape)
    elif val:
        x_va = XStream(path, x_name, va_blocks, input_shape, normalizer)
        _check_finite_and_stats(x_va, "none", False, path)
        t_va = np.ascontiguousarray(x_va.targets_of(t_all))
    del t_all
    return Prepared(spec, net, enc, normalizer, x_tr, t_tr, x_va, t_va, [x_name], y_name)


# --- prediction: CSV in, CSV out, in chunks of rows ------------------------------------

def streams_csv(path: str | os.PathLike) -> bool:
    """Predict from this input in chunks? (A CSV file larger than PREDICT_STREAM_BYTES.)"""
    p = str(path)
    try:
        return (not data.is_hdf5(p)) and os.path.isfile(p) and os.path.getsize(p) > PREDICT_STREAM_BYTES
    except OSError:
        return False


def csv_chunks(path: str, chunk_rows: int = PREDICT_CHUNK_ROWS, header: bool | str = True,
               hint: str = data.PREDICT_NO_HEADER_HINT, n_inputs: int = 0
               ) -> tuple[list[str] | None, int, Iterator[tuple[int, np.ndarray]]]:
    """(column names, column count, a generator of (line number of the chunk's first row, cells)
    chunks), with the header rules, checks and messages of :func:`nncli.data._csv_rows` (which
    reads the whole file; `header`, `hint` and `n_inputs` mean what they mean there).
    Line numbers count rows as read_csv does: data row i is line i + 2 (i + 1 without a header)."""
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    where = {"line": 0}

    def lines() -> Iterator[str]:
        for line in fh:
            where["line"] += 1
            if "\x00" in line:
                raise DataError(f"{path}: contains NUL bytes; expected a CSV text file")
            yield line

    reader = csv.reader(lines(), strict=True)

    def read_rows() -> Iterator[list[str]]:
        try:
            yield from reader
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text (a bad byte after line {where['line']})") from None
        except csv.Error as exc:
            raise DataError(f"{path}: malformed CSV: {exc}") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None

    def blank(row: list[str]) -> bool:
        return not row or not (row[0].strip() or any(c.strip() for c in row))

    rows = read_rows()
    try:
        first_row = next(rows, None)
        if first_row is not None and blank(first_row):  # only blank rows: an empty file, as read_csv says
            blanks = [first_row]
            for row in rows:
                blanks.append(row)
                if not blank(row):
                    break
            else:
                first_row = None
            rows = itertools.chain(blanks[1:], rows)
        if first_row is None:
            raise DataError(f"{path}: the file is empty; expected a header row and data rows")
        if header == "position":  # as data._csv_rows: a header row's names are not used, so not checked
            header = data.header_in_position_mode(first_row, n_inputs)
            names = [h.strip() for h in first_row] if header else None
        elif header:
            names = data.parse_header(path, first_row, hint)
        else:
            names = None
        if not header:
            rows = itertools.chain([first_row], rows)
    except BaseException:
        fh.close()
        raise
    width = len(first_row)
    width_of = "the header" if header else "line 1"

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        with fh:
            buf: list[list[str]] = []
            pending_blank: tuple[int, int] | None = None  # (line, width): a blank row, unless trailing
            first = line = 2 if header else 1
            count = 0
            for row in rows:
                if blank(row):
                    pending_blank = pending_blank or (line, len(row))
                    line += 1
                    continue
                if pending_blank:  # blank rows before data: read_csv reports the first as ragged
                    raise DataError(f"{path}: line {pending_blank[0]}: expected {width} columns as in "
                                    f"{width_of}, got {pending_blank[1]}")
                if len(row) != width:
                    raise DataError(f"{path}: line {line}: expected {width} columns as in {width_of}, got {len(row)}")
                buf.append(row)
                line += 1
                count += 1
                if len(buf) >= chunk_rows:
                    yield first, np.array(buf, dtype=str)
                    first += len(buf)
                    buf = []
            if buf:
                yield first, np.array(buf, dtype=str)
            if count == 0:
                raise DataError(f"{path}: no data rows after the header")

    return names, width, chunks()


def predict_csv(model, input_path: str, output: str | fileio.OutputTarget | None, proba: bool, out_stream: TextIO | None,
                by_position: bool = False) -> int:
    """inference.predict for a big CSV: chunks of rows in, chunks of CSV out; returns the row count.
    The columns are chosen (data.model_columns) and the text written (inference.format_predictions)
    as for a small file."""
    from nncli import inference
    from nncli import functions

    path = str(input_path)
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    ck = model.ck
    names = inference.input_names(ck, path)
    # whole batches per chunk, and the batch size of the in-memory path (inference.outputs): the
    # same batches through the same compiled function, so the same numbers as for a small file
    batch = inference.PREDICT_BATCH
    chunk_rows = max(1, PREDICT_CHUNK_ROWS // batch) * batch
    header, width, chunks = csv_chunks(path, chunk_rows, header="position" if by_position else True,
                                       n_inputs=len(names))
    idx, _, shown = data.model_columns(path, header, width, names, ck.y_name, False, by_position)
    if (len(idx),) != tuple(ck.input_shape):
        raise DataError(f"{path}: inputs of shape {(len(idx),)} per example, the model expects {ck.input_shape}")
    col_names = [shown[i] for i in idx]
    fn = None

    def write_all(fh: TextIO) -> int:
        nonlocal batch, fn
        total = 0
        for first, cells in chunks:
            x = data._to_float(path, cells[:, idx], col_names, row_offset=first)
            x = ck.normalizer.apply(x)
            if fn is None:  # fewer rows than a batch: all of them (as inference.outputs)
                batch = min(batch, len(x))
                fn = functions.compile_predict(model.net, batch)
            out = np.concatenate(list(functions.run_predict(fn, data.batches(x, None, batch))))
            fh.write(inference.format_predictions(model, out, proba, header=total == 0))
            total += len(out)
        return total

    if output:
        target = fileio.output_target(output, inputs=(model.path, path))
        try:
            with fileio.open_output(target) as fh:
                return write_all(fh)
        except OSError as exc:
            raise DataError(f"{target.path}: cannot write: {exc.strerror or exc}; nothing was written") from None
    if out_stream is None:
        return sum(len(c) for _, c in chunks)
    return write_all(out_stream)
