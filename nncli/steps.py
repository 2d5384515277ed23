"""Feeding an epoch's minibatches to the compiled training step, several steps per call.

``steps_per_execution`` (Keras' name) is how many minibatches one call of the
compiled function trains on: model.compile_steps wraps the step in a ``scan``
that carries the parameters and optimizer state from one step to the next.
The updates are the same as one call per minibatch; what goes away is the
per-call cost (argument checks, dispatch, fresh output buffers for every
parameter and moment), which dominates small steps. Measured on the 2-core
machine, JAX backend, median whole epochs (bench/results.md): MLP
784-256-128-10 with Adam at batch 32, 0.45 s -> 0.36 s with 16 steps per
call; the adding-lstm example 0.62 s -> 0.53 s.

``auto``: 16 steps per call on the JAX backend (fewer when the epoch has fewer
minibatches, or when 16 stacked minibatches would exceed CHUNK_BYTES), one on
C and NUMBA, whose Python-driven ``scan`` loop would cost more than it saves.

Calls cover the minibatches [j*k, (j+1)*k) of an epoch (counted from where it
starts), so a run interrupted after any call and resumed with the same setting
repeats exactly the calls of an uninterrupted run.
The last call of an epoch is padded with all-zero-weight minibatches, which
leave every variable as it was (see model.compile_steps), so one compiled
function serves every epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

AUTO_STEPS = 16
CHUNK_BYTES = 16 << 20  # the stacked inputs of one call stay below this (auto)


def choose(setting: Any, backend: str, batch_bytes: int, n_batches: int) -> int:
    """Steps per call for the `steps_per_execution` setting ('auto' or an integer)."""
    if setting != "auto":
        return max(1, min(int(setting), n_batches))
    if backend != "jax":
        return 1
    return max(1, min(AUTO_STEPS, CHUNK_BYTES // max(batch_bytes, 1), n_batches))


def _padding(batch):
    return tuple(np.zeros_like(a) for a in batch)


def calls(fn, steps: int, batches: Iterable[tuple], first: int = 0) -> Iterator[tuple[int, int, Any]]:
    """Run `fn` over the minibatches of an epoch from batch `first` on.

    `fn` is the single step (steps == 1) or the `steps`-step function. Yields, per call,
    (index of its first minibatch, how many real minibatches it trained on, its output:
    the output vector, or one row per step)."""
    if steps == 1:
        for b, batch in enumerate(batches):
            if b >= first:
                yield b, 1, fn(*batch)
        return
    group: list = []
    start = first
    for b, batch in enumerate(batches):
        if b < first:
            continue
        if not group:
            start = b
        group.append(batch)
        if len(group) == steps:
            yield start, steps, fn(*(np.stack(arrays) for arrays in zip(*group)))
            group = []
    if group:
        real = len(group)
        group += [_padding(group[0])] * (steps - real)
        yield start, real, fn(*(np.stack(arrays) for arrays in zip(*group)))


def jax_steps(single, n_explicit: int):
    """The JAX backend's several-steps function, built from the compiled single step `single`
    (a PyTensor function of its `n_explicit` inputs (x, t, w) with updates): ``jax.lax.scan`` of the step's own jitted
    function over stacked minibatches, carrying the values of the updated shared variables.

    Same updates as model.compile_steps (PyTensor's ``scan`` of a clone of the step graph, which
    any backend can run) but without a second PyTensor compile of the whole graph: that took
    1.5-2 s more per network (PyTensor's scan rewrites), this one costs a JAX trace. Returns
    None when the step's JAX function cannot be called from inside a trace (shape inputs passed
    as Python ints); the caller then uses model.compile_steps."""
    import jax
    import jax.numpy as jnp

    thunk = single.vm
    linker = single.maker.linker
    jit_fn = getattr(thunk, "jit_fn", None)
    if jit_fn is None or getattr(linker, "scalar_shape_inputs", ()):
        return None
    fgraph = single.maker.fgraph
    update_of = {inp: out for out, inp in fgraph.update_mapping.items()}
    carried = sorted(update_of)
    fixed = [i for i in range(n_explicit, len(fgraph.inputs)) if i not in update_of]
    storage = thunk.inputs
    n_inputs = len(fgraph.inputs)
    weights = n_explicit - 1

    def many(carry, fixed_values, *stacked):
        def body(carry, batch):
            values = [None] * n_inputs
            values[:n_explicit] = batch
            for i, v in zip(carried, carry):
                values[i] = v
            for i, v in zip(fixed, fixed_values):
                values[i] = v
            outs = jit_fn(*values)
            active = jnp.sum(batch[weights]) > 0   # an all-padding minibatch changes nothing
            new = tuple(jnp.where(active, outs[update_of[i]], c) for i, c in zip(carried, carry))
            return new, outs[0]

        carry, rows = jax.lax.scan(body, carry, stacked)
        return rows, carry

    jitted = jax.jit(many)

    def call(*stacked):
        rows, carry = jitted(tuple(storage[i][0] for i in carried), tuple(storage[i][0] for i in fixed), *stacked)
        for i, v in zip(carried, carry):
            storage[i][0] = v
        return rows

    return call

