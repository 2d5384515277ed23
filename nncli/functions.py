"""A network's compiled functions: train, evaluate, predict.

``compile_train`` builds the training graph, lets PyTensor differentiate it
and compiles ONE function with ``updates=`` (parameters, optimizer state and
layer state such as running statistics), exactly as ``theano.function`` did.
Every function takes fixed-shape minibatches: the last batch is padded and
carries per-example weights (0 for padding), so each function compiles once
and the loss is the exact mean over real examples.

Several training steps per call (``steps_per_execution``) build on these in
nncli/steps.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt

from nncli import data, losses, optimizers
from nncli import metrics as metrics_mod
from nncli.layers import Context
from nncli.network import Network


@dataclass
class Compiled:
    fn: Callable
    batch_size: int
    outputs: list[str]   # names of the summed outputs, e.g. ["loss", "accuracy"]
    steps: int = 1       # minibatches per call of fn (stacked on a new first axis when > 1)
    single: Callable | None = None  # with steps > 1: the one-minibatch step, for an epoch's last few
    output_shape: tuple = ()        # compile_predict: the shape of one example's output


def _inputs(net: Network, batch_size: int):
    floatx = pytensor.config.floatX
    x = pt.tensor("x", dtype=floatx, shape=(batch_size, *net.input_shape))
    t = pt.tensor("t", dtype=floatx, shape=(batch_size, *net.output_shape))
    w = pt.tensor("w", dtype=floatx, shape=(batch_size,))
    return x, t, w


def _sums(net: Network, ctx: Context, x, t, w, loss: str, metrics: Sequence[str],
          target_scaler: data.Normalizer | None = None, class_weights: np.ndarray | None = None):
    """Weighted sums over the batch: the loss and each metric (divide by the weight total).

    target_scaler (data.normalize_target): the targets t and outputs are standardised; the loss
    is on them as trained, the metrics in the target's own units (t / scale + shift).
    class_weights (data.class_weight, training only): one weight per class; each row's loss is
    multiplied by its class's weight (the row's one-hot target . class_weights; binary: w1 for
    1, w0 for 0), a per-row sample weight next to w (0 for padding rows); the metrics are not."""
    out, logits, act = net.forward(x, ctx)
    per_example = losses.per_example_loss(loss, t, out, logits, act)
    row_w = w
    if class_weights is not None:
        cw = np.asarray(class_weights, dtype=pytensor.config.floatX)
        tf = t if t.ndim == 2 else t.reshape((t.shape[0], -1))
        row_w = w * (pt.dot(tf, cw) if len(cw) > 2 or loss == "categorical_crossentropy"
                     else tf[:, 0] * cw[1] + (1.0 - tf[:, 0]) * cw[0])
    sums = [pt.sum(row_w * per_example)]
    if target_scaler is not None and target_scaler.kind != "none":
        floatx = pytensor.config.floatX
        shift = pt.constant(np.asarray(target_scaler.shift, dtype=floatx))
        scale = pt.constant(np.asarray(target_scaler.scale, dtype=floatx))
        t, out = t / scale + shift, out / scale + shift
    for m in metrics:
        sums.append(pt.sum(w * metrics_mod.per_example(m, t, out, loss)))
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
                penalty: Callable[[Network], Any] | None = None, target_scaler: data.Normalizer | None = None,
                class_weights: np.ndarray | None = None) -> tuple[TrainGraph, optimizers.OptimizerState]:
    """The objective is the sum of the (class-weighted) per-row losses over the real rows of the
    batch, divided by their count (Keras' class_weight rule), plus the penalty; see _sums."""
    x, t, w = _inputs(net, batch_size)
    ctx = Context(training=True, sample_weight=w, state={"iterations": iterations}, seed=seed)
    sums = _sums(net, ctx, x, t, w, loss, metrics, target_scaler, class_weights)
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


def compile_eval(net: Network, loss: str, metrics: Sequence[str], batch_size: int,
                 target_scaler: data.Normalizer | None = None) -> Compiled:
    """Loss (on standardised targets with a target_scaler, unweighted) and metrics (in the target's units)."""
    x, t, w = _inputs(net, batch_size)
    ctx = Context(training=False, sample_weight=w)
    fn = pytensor.function([x, t, w], pt.stack(_sums(net, ctx, x, t, w, loss, metrics, target_scaler)),
                           name="evaluate")
    return Compiled(fn, batch_size, ["loss", *metrics])


def compile_predict(net: Network, batch_size: int) -> Compiled:
    x, _, _ = _inputs(net, batch_size)
    out, _, _ = net.forward(x, Context(training=False))
    return Compiled(pytensor.function([x], out, name="predict"), batch_size, ["output"],
                    output_shape=tuple(net.output_shape))


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


def predict_array(compiled: Compiled, x) -> np.ndarray:
    """The outputs of a compiled predict function (compile_predict) for every row of `x` (an
    array, or a data stream that data.batches reads), in its fixed-size batches, as one array."""
    parts = list(run_predict(compiled, data.batches(x, None, compiled.batch_size)))
    return np.concatenate(parts) if parts else np.zeros((0, *compiled.output_shape), np.float32)
