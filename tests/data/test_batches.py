"""Minibatches: one protocol (nncli.data.batches.Source) for arrays in memory and streams from disk."""

from __future__ import annotations

import h5py
import numpy as np

from nncli.data.batches import Rows, Source, batches, source, split
from nncli.data.hdf5 import XStream


def test_rows_batches_have_a_fixed_shape_and_pad_with_weight_zero():
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    t = np.arange(5, dtype=np.float32).reshape(5, 1)
    got = list(Rows(x).batches(t, 2))
    assert [xb.shape for xb, _, _ in got] == [(2, 2)] * 3
    np.testing.assert_array_equal(got[-1][0], [[8, 9], [0, 0]])
    np.testing.assert_array_equal(got[-1][2], [1, 0])
    assert all(tb.shape == (2, 1) for _, tb, _ in got)


def test_the_shuffle_order_of_rows_is_the_generators_permutation():
    """Seeds and resumed runs depend on it: one rng.permutation of the rows per epoch."""
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    order = Rows(x).shuffle_order(np.random.default_rng(7))
    np.testing.assert_array_equal(order, np.random.default_rng(7).permutation(10))
    first = next(iter(batches(x, None, 3, order)))[0]
    np.testing.assert_array_equal(first, x[order[:3]])


def test_arrays_and_streams_are_sources(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"] = x
    stream = XStream(str(tmp_path / "d.h5"), "x", [(0, 20), (20, 50)], (3,))
    rows = source(x)
    assert isinstance(rows, Rows) and isinstance(stream, Source) and source(stream) is stream
    assert len(rows) == len(stream) == 50 and rows.shape == stream.shape == (50, 3)
    t = np.arange(50, dtype=np.float32).reshape(50, 1)
    for src in (rows, stream):  # in stored order: the same batches
        got = list(src.batches(t, 16))
        np.testing.assert_array_equal(np.concatenate([b[0] for b in got])[:50], x)
        np.testing.assert_array_equal(np.concatenate([b[1] for b in got])[:50], t)
        assert [b[2].sum() for b in got] == [16, 16, 16, 2]


def test_split_is_seeded_and_stratified():
    strata = np.array([0] * 80 + [1] * 20)
    tr, va = split(100, 0.25, np.random.default_rng(1), strata)
    assert len(va) == 25 and np.bincount(strata[va]).tolist() == [20, 5]
    assert sorted([*tr, *va]) == list(range(100))
    tr2, va2 = split(100, 0.25, np.random.default_rng(1), strata)
    np.testing.assert_array_equal(va, va2)
    assert split(5, 0, np.random.default_rng(0))[1].size == 0
