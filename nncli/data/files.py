"""Reading a data file of either kind: a CSV or an HDF5 file, by its suffix."""

from __future__ import annotations

import os
from typing import Sequence

from nncli.data.csv import MISSING_VALUES, read_csv
from nncli.data.hdf5 import open_h5, read_hdf5
from nncli.data.table import Table, is_hdf5
from nncli.errors import DataError


def read(path: str, x: Sequence[str] | str | None = None, y: str | None = None, *,
         with_targets: bool = True, expect_x: Sequence[str] | None = None,
         header: bool = True, by_position: bool = False, delimiter: str = "auto",
         missing: Sequence[str] = MISSING_VALUES) -> Table:
    """Read a labelled (or, for prediction, unlabelled) CSV, JSON-lines or HDF5 file (`delimiter`,
    `missing`: see nncli.data.csv)."""
    path = str(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, expected a data file (.csv, .tsv, .jsonl or .h5)")
    if is_hdf5(path):
        if expect_x is not None:  # a trained model: its dataset names if the file has them, else x / y
            with open_h5(path) as f:
                x = expect_x[0] if len(expect_x) == 1 and expect_x[0] in f else None
                y = y if y in f else None
        return read_hdf5(path, x, y, with_targets=with_targets)
    return read_csv(path, x, y, with_targets=with_targets, expect_x=expect_x, header=header,
                    by_position=by_position, delimiter=delimiter, missing=missing)
