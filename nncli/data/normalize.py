"""Normalisation of the inputs, per feature, fitted on the training split only.

The statistics come from one running-moments accumulator (:class:`Moments`, Welford's
algorithm with Chan's merge, a small object with ``update`` and ``compute`` as Flax's
metrics are): the in-memory path updates it with the whole array, the streamed path once per
block of rows. An update of more than UPDATE_BYTES (as float64) goes in row blocks itself, so
that its float64 temporaries stay small (1M rows x 31 inputs took 0.5 GB of them at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

UPDATE_BYTES = 32 << 20


class Stats(NamedTuple):
    """Per-feature statistics of the rows seen (float64)."""

    count: int
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray


class Moments:
    """Running count, mean, sum of squared deviations, minimum and maximum per feature.

    ``update(rows)`` merges a chunk of rows (axis 0) into the running values (Chan et al.'s
    pairwise formula, in float64); ``compute()`` gives the Stats. One update with an array of up
    to UPDATE_BYTES (as float64) gives exactly numpy's ``mean(axis=0)`` and ``std(axis=0)`` of it;
    a larger one is merged in row blocks (equal to float64 rounding)."""

    def __init__(self):
        self.count = 0
        self.mean = self.m2 = self.lo = self.hi = None

    def update(self, rows: np.ndarray) -> "Moments":
        rows = np.asarray(rows)
        row_bytes = 8 * max(1, rows[0].size if len(rows) else 1)
        step = max(1, UPDATE_BYTES // row_bytes)
        if len(rows) > step:
            for a in range(0, len(rows), step):
                self.update(rows[a:a + step])
            return self
        x64 = rows.astype(np.float64)
        n = len(x64)
        if n == 0:
            return self
        mean, lo, hi = x64.mean(axis=0), x64.min(axis=0), x64.max(axis=0)
        m2 = ((x64 - mean) ** 2).sum(axis=0)
        if self.mean is None:
            self.count, self.mean, self.m2, self.lo, self.hi = n, mean, m2, lo, hi
        else:
            total = self.count + n
            delta = mean - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
            self.lo, self.hi = np.minimum(self.lo, lo), np.maximum(self.hi, hi)
            self.count = total
        return self

    def compute(self) -> Stats:
        if self.mean is None:
            raise ValueError("no rows seen")
        return Stats(self.count, self.mean, np.sqrt(self.m2 / max(self.count, 1)), self.lo, self.hi)


@dataclass
class Normalizer:
    """x -> (x - shift) * scale, per input feature; fitted on the training split only."""

    kind: str
    shift: np.ndarray | None = None
    scale: np.ndarray | None = None

    @classmethod
    def fit(cls, kind: str, x: np.ndarray) -> "Normalizer":
        """Fitted on all rows of `x` (one update of the accumulator)."""
        return cls.from_moments(kind, Moments().update(x) if kind != "none" else Moments())

    @classmethod
    def from_moments(cls, kind: str, moments: Moments) -> "Normalizer":
        """`kind` ("none", "standard" or "minmax") from the statistics of the rows `moments` saw."""
        if kind == "none":
            return cls("none")
        stats = moments.compute()
        if kind == "standard":
            shift, spread = stats.mean, stats.std
        else:
            shift, spread = stats.min, stats.max - stats.min
        scale = np.where(spread > 0, 1.0 / np.where(spread > 0, spread, 1.0), 1.0)
        return cls(kind, shift.astype(np.float32), scale.astype(np.float32))

    def apply(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(x - shift) * scale as float32; into `out` when given (which may be `x` itself: in
        place, no temporary the size of x). The same bits either way."""
        if self.kind == "none":
            return x
        if x.dtype != np.float32:
            y = ((x - self.shift) * self.scale).astype(np.float32)
            if out is None:
                return y
            out[...] = y
            return out
        if out is None:
            out = np.empty(x.shape, np.float32)
        np.subtract(x, self.shift, out=out)
        np.multiply(out, self.scale, out=out)
        return out

    def invert(self, z: np.ndarray) -> np.ndarray:
        """The inverse of apply: z / scale + shift (a standardised target back in its own units)."""
        if self.kind == "none":
            return z
        return (np.asarray(z, dtype=np.float64) / self.scale + self.shift).astype(np.float32)
