"""Normalisation of the inputs, per feature, fitted on the training split only.

The statistics come from one running-moments accumulator (:class:`Moments`, Welford's
algorithm with Chan's merge, a small object with ``update`` and ``compute`` as Flax's
metrics are): the in-memory path updates it once with the whole array, the streamed path
once per block of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


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
    pairwise formula, in float64); ``compute()`` gives the Stats. One update with a whole array
    gives exactly numpy's ``mean(axis=0)`` and ``std(axis=0)`` of it."""

    def __init__(self):
        self.count = 0
        self.mean = self.m2 = self.lo = self.hi = None

    def update(self, rows: np.ndarray) -> "Moments":
        x64 = np.asarray(rows).astype(np.float64)
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

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return x
        return ((x - self.shift) * self.scale).astype(np.float32)

    def invert(self, z: np.ndarray) -> np.ndarray:
        """The inverse of apply: z / scale + shift (a standardised target back in its own units)."""
        if self.kind == "none":
            return z
        return (np.asarray(z, dtype=np.float64) / self.scale + self.shift).astype(np.float32)
