"""Validation splits and minibatches.

Minibatches come from a :class:`Source`, the one protocol of training data: ``len``,
``shape``, ``shuffle_order(rng)`` (one epoch's order) and ``batches(t, batch_size, order)``.
:class:`Rows` is an array in memory; :class:`nncli.data.hdf5.XStream` reads an HDF5 dataset
from disk block by block. Batches have a fixed shape: the last one is padded with zero rows
of weight 0 (fixed shapes mean one compiled function; the JAX backend retraces per shape).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator

import numpy as np

Batch = tuple[np.ndarray, "np.ndarray | None", np.ndarray]  # inputs, targets, weights


def split(n: int, fraction: float, rng: np.random.Generator, strata: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) index arrays, each sorted; stratified by `strata` when given."""
    in_val = validation_mask(n, fraction, rng, strata)
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def validation_mask(n: int, fraction: float, rng: np.random.Generator, strata: np.ndarray | None = None
                    ) -> np.ndarray:
    """The seeded validation rows of `split` as a boolean mask (1 byte a row: what a file of
    millions of rows keeps, rather than index arrays of 8)."""
    in_val = np.zeros(n, dtype=bool)
    if fraction <= 0:
        return in_val
    if strata is None:
        perm = rng.permutation(n)
        in_val[perm[:int(round(fraction * n))]] = True
        return in_val
    for cls in np.unique(strata):
        members = np.flatnonzero(strata == cls)
        members = members[rng.permutation(len(members))]
        in_val[members[:int(round(fraction * len(members)))]] = True
    return in_val


class Source(ABC):
    """Training or validation inputs, as the trainer sees them."""

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]: ...

    @abstractmethod
    def shuffle_order(self, rng: np.random.Generator) -> Any:
        """One epoch's order for `batches`, drawn from `rng`."""

    @abstractmethod
    def batches(self, t: np.ndarray | None, batch_size: int, order: Any = None) -> Iterator[Batch]:
        """Fixed-shape minibatches of the inputs with the matching rows of `t` (one per row of
        the source, in source order), in `order` (None: as stored)."""


class Rows(Source):
    """Inputs held in memory: an array shaped (examples, *input_shape)."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.x.shape

    def shuffle_order(self, rng: np.random.Generator) -> np.ndarray:
        """A permutation of the rows."""
        return rng.permutation(len(self.x))

    def batches(self, t: np.ndarray | None, batch_size: int, order: np.ndarray | None = None) -> Iterator[Batch]:
        x = self.x
        if order is not None:
            x = x[order]
            t = t[order] if t is not None else None
        n = len(x)
        for start in range(0, n, batch_size):
            xb = x[start:start + batch_size]
            tb = t[start:start + batch_size] if t is not None else None
            w = np.ones(len(xb), dtype=np.float32)
            if len(xb) < batch_size:
                pad = batch_size - len(xb)
                xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), dtype=xb.dtype)])
                if tb is not None:
                    tb = np.concatenate([tb, np.zeros((pad, *tb.shape[1:]), dtype=tb.dtype)])
                w = np.concatenate([w, np.zeros(pad, dtype=np.float32)])
            yield xb, tb, w


def source(x: np.ndarray | Source) -> Source:
    """`x` as a Source: an array is held as Rows."""
    return x if isinstance(x, Source) else Rows(np.asarray(x))


def batches(x: np.ndarray | Source, t: np.ndarray | None, batch_size: int, order: Any = None) -> Iterator[Batch]:
    """The minibatches of `x` (an array or a Source): see Source.batches."""
    return source(x).batches(t, batch_size, order)
