"""The one running-moments accumulator (nncli.data.normalize.Moments) against numpy, and the
Normalizer built from it for the in-memory path (one update) and the streamed path (one per block)."""

from __future__ import annotations

import numpy as np
import pytest

from nncli.data.normalize import Moments, Normalizer


def uneven_chunks(x, rng):
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=min(9, len(x) - 1), replace=False))
    return np.split(x, cuts)


@pytest.mark.parametrize("seed", range(5))
def test_moments_over_uneven_chunks_equal_numpy(seed):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(1000 + seed * 37, 4)) * [1, 1e-3, 1e3, 5] + [0, 7, -3e4, 1e6]).astype(np.float32)
    moments = Moments()
    for chunk in uneven_chunks(x, rng):
        moments.update(chunk)
    stats = moments.compute()
    x64 = x.astype(np.float64)
    assert stats.count == len(x)
    np.testing.assert_allclose(stats.mean, x64.mean(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(stats.std, x64.std(axis=0), rtol=1e-9)
    np.testing.assert_array_equal(stats.min, x64.min(axis=0))
    np.testing.assert_array_equal(stats.max, x64.max(axis=0))


def test_one_update_is_exactly_numpy():
    x = np.random.default_rng(0).normal(size=(257, 3, 2)).astype(np.float32)
    stats = Moments().update(x).compute()
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(stats.mean, x64.mean(axis=0))
    np.testing.assert_array_equal(stats.std, x64.std(axis=0))


@pytest.mark.parametrize("kind", ["standard", "minmax"])
def test_normalizer_from_chunks_equals_the_in_memory_one_within_float32_rounding(kind):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(3001, 5)) * [1, 2, 3, 4, 5] + [0, 1, 2, 3, 4]).astype(np.float32)
    x[:, 4] = 2.5  # a constant feature: scale 1
    whole = Normalizer.fit(kind, x)
    moments = Moments()
    for chunk in uneven_chunks(x, rng):
        moments.update(chunk)
    chunked = Normalizer.from_moments(kind, moments)
    np.testing.assert_allclose(chunked.shift, whole.shift, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunked.scale, whole.scale, rtol=1e-6)
    assert whole.scale[4] == 1.0 and whole.shift.dtype == whole.scale.dtype == np.float32
    if kind == "standard":
        np.testing.assert_array_equal(whole.shift, x.astype(np.float64).mean(axis=0).astype(np.float32))
        y = whole.apply(x)
        np.testing.assert_allclose(y[:, :4].mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(y[:, :4].std(axis=0), 1, rtol=1e-5)
    else:
        y = whole.apply(x)
        np.testing.assert_allclose(y[:, :4].min(axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(y[:, :4].max(axis=0), 1, rtol=1e-6)


def test_none_is_the_identity():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    n = Normalizer.fit("none", x)
    assert n.kind == "none" and n.apply(x) is x
    assert Normalizer.from_moments("none", Moments()).kind == "none"


def test_a_big_update_goes_in_blocks_and_still_equals_numpy(monkeypatch):
    import nncli.data.normalize as normalize

    monkeypatch.setattr(normalize, "UPDATE_BYTES", 8 * 3 * 100)  # blocks of 100 rows of 3 features
    x = (np.random.default_rng(1).normal(size=(1037, 3)) * [1, 1e3, 1e-3] + [5, -2e4, 0]).astype(np.float32)
    stats = Moments().update(x).compute()
    x64 = x.astype(np.float64)
    assert stats.count == 1037
    np.testing.assert_allclose(stats.mean, x64.mean(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(stats.std, x64.std(axis=0), rtol=1e-9)
    np.testing.assert_array_equal(stats.min, x64.min(axis=0))
    np.testing.assert_array_equal(stats.max, x64.max(axis=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_apply_in_place_gives_the_same_bits(dtype):
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(500, 4)) * [1, 10, 100, 1e4] + [0, 3, -7, 1e5]).astype(dtype)
    norm = Normalizer.fit("standard", x)
    want = ((x - norm.shift) * norm.scale).astype(np.float32)  # the formula, written out
    np.testing.assert_array_equal(norm.apply(x), want)
    out = np.empty(x.shape, np.float32)
    assert norm.apply(x, out=out) is out
    np.testing.assert_array_equal(out, want)
    if dtype == np.float32:
        same = x.copy()
        assert norm.apply(same, out=same) is same
        np.testing.assert_array_equal(same, want)
