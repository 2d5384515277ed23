"""A network with its compiled functions.

``compile_train`` builds the training graph, lets PyTensor differentiate it
and compiles ONE function with ``updates=`` (parameters, optimizer state and
layer state such as running statistics), exactly as ``theano.function`` did.
Every function takes fixed-shape minibatches: the last batch is padded and
carries per-example weights (0 for padding), so each function compiles once
and the loss is the exact mean over real examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt

from nncli import losses, optimizers
from nncli.layers import Context
from nncli.network import Network


@dataclass
class Compiled:
    fn: Callable
    batch_size: int
    outputs: list[str]   # names of the summed outputs, e.g. ["loss", "accuracy"]
    steps: int = 1       # minibatches per call of fn (stacked on a new first axis when > 1)
    single: Callable | None = None  # with steps > 1: the one-minibatch step, for an epoch's last few


def _inputs(net: Network, batch_size: int):
    floatx = pytensor.config.floatX
    x = pt.tensor("x", dtype=floatx, shape=(batch_size, *net.input_shape))
    t = pt.tensor("t", dtype=floatx, shape=(batch_size, *net.output_shape))
    w = pt.tensor("w", dtype=floatx, shape=(batch_size,))
    return x, t, w


def _sums(net: Network, ctx: Context, x, t, w, loss: str, metrics: Sequence[str]):
    """Weighted sums over the batch: the loss and each metric (divide by the weight total)."""
    out, logits, act = net.forward(x, ctx)
    per_example = losses.per_example_loss(loss, t, out, logits, act)
    sums = [pt.sum(w * per_example)]
    for m in metrics:
        sums.append(pt.sum(w * losses.per_example_metric(m, t, out, loss)))
    return sums


@dataclass
class TrainGraph:
    """The symbolic training step: inputs (x, t, w), the output vector [loss, *metrics] (weighted
    sums over the batch) and the updates of every shared variable it changes."""
    inputs: tuple
    out: Any
    updates: list
    outputs: list[str]


def train_graph(net: Network, loss: str, metrics: Sequence[str], opt: optimizers.Optimizer,
                learning_rate, batch_size: int, iterations, seed: int = 0,
                penalty: Callable[[Network], Any] | None = None) -> tuple[TrainGraph, optimizers.OptimizerState]:
    x, t, w = _inputs(net, batch_size)
    ctx = Context(training=True, sample_weight=w, state={"iterations": iterations}, seed=seed)
    sums = _sums(net, ctx, x, t, w, loss, metrics)
    objective = sums[0] / pt.maximum(pt.sum(w), 1.0)
    if penalty is not None:
        objective = objective + penalty(net)
    names = list(net.params)
    grads = pytensor.grad(objective, [net.params[k] for k in names])
    updates, state = optimizers.build_updates(opt, net.params, dict(zip(names, grads)), learning_rate, iterations)
    # one output vector [loss, *metrics]: one transfer per step (JAX: one asynchronous array)
    return TrainGraph((x, t, w), pt.stack(sums), list(updates) + list(ctx.updates), ["loss", *metrics]), state


def compile_train(net: Network, loss: str, metrics: Sequence[str], opt: optimizers.Optimizer,
                  learning_rate, batch_size: int, iterations, seed: int = 0,
                  penalty: Callable[[Network], Any] | None = None) -> tuple[Compiled, optimizers.OptimizerState]:
    """The training step: returns the weighted sums [loss, *metrics] as one vector and applies the updates."""
    graph, state = train_graph(net, loss, metrics, opt, learning_rate, batch_size, iterations, seed, penalty)
    return compile_step(graph), state


def compile_step(graph: TrainGraph) -> Compiled:
    fn = pytensor.function(list(graph.inputs), graph.out, updates=graph.updates, name="train_step")
    return Compiled(fn, int(graph.inputs[0].type.shape[0]), graph.outputs)


def compile_steps(graph: TrainGraph, steps: int) -> Compiled:
    """`steps` training steps in one call (Keras' ``steps_per_execution``), for any backend: a
    ``scan`` over stacked minibatches (steps, batch, ...) of a clone of the step graph, carrying
    every updated shared variable from one step to the next and writing the last values back.
    Returns (steps, outputs): row i is what the single step returns for minibatch i. The same
    updates as `steps` calls of the single step (which it also compiles, for the last minibatches
    of an epoch)."""
    from pytensor.graph.replace import clone_replace

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
    backend: the compiled step's own JAX function in ``jax.lax.scan`` (nncli/steps.py: no second
    compile of the graph), else compile_steps."""
    if steps == 1:
        return compile_step(graph)
    if backend == "jax":
        from nncli import steps as steps_mod

        single = compile_step(graph)
        fn = steps_mod.jax_steps(single.fn, len(graph.inputs))
        if fn is not None:
            return Compiled(fn, single.batch_size, single.outputs, steps, single.fn)
    return compile_steps(graph, steps)


def compile_eval(net: Network, loss: str, metrics: Sequence[str], batch_size: int) -> Compiled:
    x, t, w = _inputs(net, batch_size)
    ctx = Context(training=False, sample_weight=w)
    fn = pytensor.function([x, t, w], pt.stack(_sums(net, ctx, x, t, w, loss, metrics)), name="evaluate")
    return Compiled(fn, batch_size, ["loss", *metrics])


def compile_predict(net: Network, batch_size: int) -> Compiled:
    x, _, _ = _inputs(net, batch_size)
    out, _, _ = net.forward(x, Context(training=False))
    return Compiled(pytensor.function([x], out, name="predict"), batch_size, ["output"])


def run_sums(compiled: Compiled, batches) -> dict[str, float]:
    """Mean of each summed output over all real examples of `batches`."""
    totals = np.zeros(len(compiled.outputs))
    count = 0.0
    for xb, tb, wb in batches:
        totals += np.asarray(compiled.fn(xb, tb, wb), dtype=np.float64)
        count += float(wb.sum())
    return {name: float(v / max(count, 1.0)) for name, v in zip(compiled.outputs, totals)}


def run_predict(compiled: Compiled, batches) -> Any:
    """Yield network outputs (numpy, padding rows removed) batch by batch."""
    for xb, _, wb in batches:
        out = np.asarray(compiled.fn(xb))
        yield out[: int(wb.sum())]
