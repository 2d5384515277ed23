"""Feeding an epoch's minibatches to the compiled training step, several steps per call.

``steps_per_execution`` (Keras' name) is how many minibatches one call of the
compiled training function trains on. The updates are the same as one call
per minibatch; what goes away is the per-call cost (argument checks, dispatch,
a fresh output buffer for every parameter and moment), which dominates small
steps. On the JAX backend the step's own jitted function runs inside
``jax.lax.scan`` (jax_steps); on the others PyTensor's ``scan`` runs a clone
of the step graph (compile_steps). compile_several builds the function for
a setting, from the single step of nncli/functions.py.

``auto`` (choose): on the JAX backend, as many minibatches as make AUTO_ROWS
rows, at most AUTO_STEPS and at most an epoch, for batches up to
AUTO_MAX_BATCH; one for larger batches, and on C and NUMBA (not measured to
help there; their ``scan`` needs a second compile of the whole graph).
Measured on the 2-core machine (JAX, MLP 784-256-128-10 with Adam, epochs of
16384 rows): batch 32, 16 per call: 0.45 -> 0.36 s an epoch (pure JAX with
lax.scan: 0.46 -> 0.30); batch 128: 0.19 -> 0.16 s (pure JAX); batch 1024:
no gain (0.20 s with 1 and 4 per call, 0.23 s with 2), hence the batch
limit. adding-lstm: about 10%. Figures: bench/results.md.

Calls cover the minibatches [first + j*k, first + (j+1)*k) of an epoch; the
last ones that do not fill a call run one by one through the single step. A
run interrupted after any call and resumed with the same setting therefore
makes exactly the calls of an uninterrupted run (bit-exact resume).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.replace import clone_replace

from nncli.functions import Compiled, TrainGraph, compile_step

AUTO_STEPS = 16
AUTO_ROWS = 2048         # auto: minibatches per call * batch size stays within this,
AUTO_MAX_BATCH = 256     # and larger batches go one per call (their steps are long: no gain)
CHUNK_BYTES = 16 << 20   # auto: and the stacked inputs of one call within this


def choose(setting: Any, backend: str, batch_size: int, batch_bytes: int, n_batches: int) -> int:
    """Steps per call for the `steps_per_execution` setting ('auto' or an integer)."""
    if setting != "auto":
        return max(1, min(int(setting), n_batches))
    if backend != "jax" or batch_size > AUTO_MAX_BATCH:
        return 1
    return max(1, min(AUTO_STEPS, AUTO_ROWS // max(batch_size, 1), CHUNK_BYTES // max(batch_bytes, 1), n_batches))


def for_data(setting: Any, backend: str, batch_size: int, rows: int, input_shape, output_shape) -> int:
    """`choose` for an epoch of `rows` examples of the given shapes (float32 inputs, targets and
    per-example weights) in minibatches of `batch_size`."""
    floats = int(np.prod(input_shape)) + int(np.prod(output_shape)) + 1
    return choose(setting, backend, batch_size, batch_size * 4 * floats, -(-rows // batch_size))


def compile_steps(graph: TrainGraph, steps: int) -> Compiled:
    """`steps` training steps in one call (Keras' ``steps_per_execution``), for any backend: a
    ``scan`` over stacked minibatches (steps, batch, ...) of a clone of the step graph, carrying
    every updated shared variable from one step to the next and writing the last values back.
    Returns (steps, outputs): row i is what the single step returns for minibatch i. The same
    updates as `steps` calls of the single step (which it also compiles, for the last minibatches
    of an epoch)."""
    shared = [var for var, _ in graph.updates]
    news = [new for _, new in graph.updates]
    n_in = len(graph.inputs)
    stacked = [pt.tensor(f"{v.name}s", dtype=v.dtype, shape=(steps, *v.type.shape)) for v in graph.inputs]

    def one(*args):
        replace = dict(zip(graph.inputs, args[:n_in]))
        replace.update(zip(shared, args[n_in:]))
        out = clone_replace([graph.out, *news], replace=replace)
        return [out[0], *(var.type.filter_variable(new) for var, new in zip(shared, out[1:]))]

    results = pytensor.scan(one, sequences=stacked, outputs_info=[None, *shared], n_steps=steps,
                            strict=False, return_updates=False, name="train_steps")
    updates = [(var, seq[-1]) for var, seq in zip(shared, results[1:])]
    fn = pytensor.function(stacked, results[0], updates=updates, name="train_steps")
    single = compile_step(graph)
    return Compiled(fn, single.batch_size, graph.outputs, steps, single.fn)


def compile_several(graph: TrainGraph, steps: int, backend: str) -> Compiled:
    """The training function for `steps` minibatches per call (1: the plain step). On the JAX
    backend: the compiled step's own JAX function in ``jax.lax.scan`` (jax_steps: no second
    compile of the graph), else compile_steps."""
    if steps == 1:
        return compile_step(graph)
    if backend == "jax":
        single = compile_step(graph)
        fn = jax_steps(single.fn, len(graph.inputs))
        if fn is not None:
            return Compiled(fn, single.batch_size, single.outputs, steps, single.fn)
    return compile_steps(graph, steps)


def calls(compiled, batches: Iterable[tuple], first: int = 0) -> Iterator[tuple[int, int, Any]]:
    """Run the minibatches of an epoch, from batch `first` on, through `compiled` (a
    functions.Compiled training function: `compiled.steps` stacked minibatches per call of its fn;
    the last minibatches of the epoch that do not fill a call go one by one through
    `compiled.single`). Yields, per call, (index of its first minibatch, how many it trained
    on, its output: the output vector, or one row per step)."""
    fn, steps = compiled.fn, compiled.steps
    group: list = []
    start = first
    for b, batch in enumerate(batches):
        if b < first:
            continue
        if steps == 1:
            yield b, 1, fn(*batch)
            continue
        if not group:
            start = b
        group.append(batch)
        if len(group) == steps:
            yield start, steps, fn(*(np.stack(arrays) for arrays in zip(*group)))
            group = []
    for i, batch in enumerate(group):
        yield start + i, 1, compiled.single(*batch)


def jax_steps(single, n_explicit: int):
    """The JAX backend's several-steps function, built from the compiled single step `single`
    (a PyTensor function of its `n_explicit` inputs (x, t, w) with updates): ``jax.lax.scan``
    of the step's own jitted function over stacked minibatches, carrying the values of the
    updated shared variables.

    Same updates as compile_steps (PyTensor's ``scan`` of a clone of the step graph, which
    any backend can run) but without a second PyTensor compile of the whole graph: that took
    1.5-2 s more per network (PyTensor's scan rewrites), this one costs a JAX trace. Returns
    None when the step's JAX function cannot be called from inside a trace (shape inputs passed
    as Python ints); the caller then uses compile_steps."""
    import jax

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

    def many(carry, fixed_values, *stacked):
        def body(carry, batch):
            values = [None] * n_inputs
            values[:n_explicit] = batch
            for i, v in zip(carried, carry):
                values[i] = v
            for i, v in zip(fixed, fixed_values):
                values[i] = v
            outs = jit_fn(*values)
            return tuple(outs[update_of[i]] for i in carried), outs[0]

        carry, rows = jax.lax.scan(body, carry, stacked)
        return rows, carry

    jitted = jax.jit(many)

    def call(*stacked):
        rows, carry = jitted(tuple(storage[i][0] for i in carried), tuple(storage[i][0] for i in fixed), *stacked)
        for i, v in zip(carried, carry):
            storage[i][0] = v
        return rows

    return call

