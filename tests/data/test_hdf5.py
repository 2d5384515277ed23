"""HDF5 data (nncli.data.hdf5): datasets checked before they are read, and the block stream."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from nncli.data.hdf5 import XStream, read_hdf5, stored_completely
from nncli.data.normalize import Normalizer
from nncli.errors import DataError


def test_a_declared_but_unwritten_dataset_is_refused_before_reading(tmp_path):
    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", (10_000_000, 100), dtype="f4", chunks=(1000, 100))[:10] = 1
        f["y"] = np.zeros(10_000_000, np.int8)
        assert not stored_completely(f["x"]) and stored_completely(f["y"])
    with pytest.raises(DataError, match="declares shape .* does not store all of it"):
        read_hdf5(str(path), "x", "y")


def test_the_stream_checks_every_block_and_normalises_on_the_fly(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["x"] = x
    stream = XStream(str(path), "x", [(0, 7), (7, 14), (14, 20)], (2,))
    np.testing.assert_array_equal(np.concatenate(list(stream.checked_blocks(str(path)))), x)
    part = stream.subset([2, 0]).normalized(Normalizer("standard", np.zeros(2, np.float32), np.full(2, 0.5, np.float32)))
    assert len(part) == 13 and part.blocks == [(14, 20), (0, 7)]
    np.testing.assert_array_equal(part.targets_of(np.arange(20)), [*range(14, 20), *range(7)])
    got = np.concatenate([b[0] for b in part.batches(None, 5)])[:13]
    np.testing.assert_array_equal(got, np.concatenate([x[14:20], x[0:7]]) * 0.5)
    with h5py.File(path, "a") as f:
        f["x"][9, 1] = np.nan
    with pytest.raises(DataError, match=r"'x' has a non-finite value at index \(9, 1\)"):
        list(stream.checked_blocks(str(path)))
