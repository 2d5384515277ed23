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


def compile_train(net: Network, loss: str, metrics: Sequence[str], opt: optimizers.Optimizer,
                  learning_rate, batch_size: int, iterations, seed: int = 0,
                  penalty: Callable[[Network], Any] | None = None) -> tuple[Compiled, optimizers.OptimizerState]:
    """The training step: returns the weighted sums [loss, *metrics] as one vector and applies the updates."""
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
    fn = pytensor.function([x, t, w], pt.stack(sums), updates=updates + ctx.updates, name="train_step")
    return Compiled(fn, batch_size, ["loss", *metrics]), state


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
