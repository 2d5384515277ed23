"""Weight initializers, by YAML name: (shape, fan_in, fan_out, rng) -> numpy array.

They draw from the run's numpy Generator, so the same seed gives the same
weights on every run and every backend.
"""

from __future__ import annotations

import numpy as np

from nncli.registry import Registry

INITIALIZERS: Registry = Registry("initializer")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras' convention: dense (in, out); conv (out, in, kh, kw) -> receptive field times channels."""
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


@INITIALIZERS.register("glorot_uniform")
def glorot_uniform(shape, rng):
    fan_in, fan_out = fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


@INITIALIZERS.register("glorot_normal")
def glorot_normal(shape, rng):
    fan_in, fan_out = fans(shape)
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=shape)


@INITIALIZERS.register("he_uniform")
def he_uniform(shape, rng):
    fan_in, _ = fans(shape)
    limit = np.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape)


@INITIALIZERS.register("he_normal")
def he_normal(shape, rng):
    fan_in, _ = fans(shape)
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)


@INITIALIZERS.register("normal")
def normal(shape, rng):
    return rng.normal(0.0, 0.05, size=shape)


@INITIALIZERS.register("uniform")
def uniform(shape, rng):
    return rng.uniform(-0.05, 0.05, size=shape)


@INITIALIZERS.register("orthogonal")
def orthogonal(shape, rng):
    rows, cols = shape[0], int(np.prod(shape[1:]))
    a = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    q = q if rows >= cols else q.T
    return q[:rows, :cols].reshape(shape)


@INITIALIZERS.register("zeros")
def zeros(shape, rng):
    return np.zeros(shape)


@INITIALIZERS.register("ones")
def ones(shape, rng):
    return np.ones(shape)


def make(name: str, shape: tuple[int, ...], rng: np.random.Generator, dtype: str = "float32") -> np.ndarray:
    return np.asarray(INITIALIZERS.get(name)(tuple(shape), rng), dtype=dtype)
