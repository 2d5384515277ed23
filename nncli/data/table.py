"""What a data file gives: a Table of inputs and raw targets, and the helpers every reader shares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

HDF5_SUFFIXES = (".h5", ".hdf5")
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


def preview(names: Sequence[str], n: int = 6) -> str:
    """The first `n` names, comma-separated, with the count when there are more (for messages)."""
    names = list(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


class Chunks(NamedTuple):
    """What a reader's read_chunks gives (the CSV reader, nncli.data.csv, and the JSON-lines one,
    nncli.data.jsonl): the column names (None without a header row), the number of columns, and
    the chunks: (line number of the chunk's first row, cells as a (rows, width) string array)."""

    names: list[str] | None
    width: int
    chunks: Iterator[tuple[int, np.ndarray]]
