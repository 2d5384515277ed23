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


@pytest.mark.parametrize("dtype", ["f2", "f4", "f8"])
def test_a_bad_input_is_named_by_its_index_past_the_first_check_block(tmp_path, monkeypatch, dtype):
    """read_hdf5 checks the inputs in row blocks (hdf5.CHECK_BYTES): the index is the file's."""
    from nncli.data import hdf5

    monkeypatch.setattr(hdf5, "CHECK_BYTES", 64)  # a few rows a block
    path = tmp_path / "bad.h5"
    x = np.ones((100, 3), dtype)
    for value, at, said in ((np.inf, (61, 2), "a non-finite value"), (-np.nan, (99, 0), "a non-finite value"),
                            (1e39, (47, 1), "a value too large for float32")):
        if dtype != "f8" and said.endswith("float32"):
            continue  # float16 and float32 cannot hold the value
        bad = x.copy()
        bad[at] = value
        with h5py.File(path, "w") as f:
            f["x"], f["y"] = bad, np.zeros(100)
        with pytest.raises(DataError) as info:
            read_hdf5(str(path), "x", "y")
        assert info.value.message == f"{path}: dataset 'x' has {said} at index {at}"
    with h5py.File(path, "w") as f:
        f["x"], f["y"] = x, np.zeros(100)
    got = read_hdf5(str(path), "x", "y").x
    assert got.dtype == np.float32 and np.array_equal(got, x)
