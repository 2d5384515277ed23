"""Timing helpers shared by the benchmark scripts in bench/."""

from __future__ import annotations

import statistics
import time

import numpy as np


def median_epoch(run_epoch, epochs: int) -> tuple[float, list[float]]:
    """Median seconds of `epochs` calls of run_epoch(i), after one warm-up call (compilation, allocator)."""
    run_epoch(0)
    times = []
    for e in range(epochs):
        t0 = time.perf_counter()
        run_epoch(e + 1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def timeit(fn, *args, repeat: int = 20) -> float:
    """Best of 5 mean call times; outputs are converted to numpy, which waits for JAX's asynchronous dispatch."""
    def call():
        return [np.asarray(v) for v in fn(*args)]

    call()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeat):
            call()
        times.append((time.perf_counter() - t0) / repeat)
    return min(times)


def nncli_step_epochs(config: dict, name: str, x, t, epochs: int):
    """Median epoch of nncli's compiled training step (JAX, CPU) over (x, t) in shuffled fixed-size
    batches, as in `nncli train`; `config` is a config dict (layers, loss, metrics, optimizer,
    learning_rate, batch_size). Returns (median s, epoch times, compile s, {loss/metric: last epoch})."""
    from nncli import backend, data, model, network, optimizers, spec

    backend.activate(backend.choose("jax", "cpu"))
    import pytensor

    s = spec.from_dict(config, name)
    net = network.build(s, x.shape[1:])
    params, state = net.initial_values(np.random.default_rng(0))
    net.create_shared(params, state)
    iterations = optimizers.iterations_variable()
    opt = optimizers.create(s["optimizer"]["type"], {k: v for k, v in s["optimizer"].items() if k != "type"})
    lr = pytensor.shared(np.asarray(s["learning_rate"], dtype="float32"))
    t0 = time.perf_counter()
    step, _ = model.compile_train(net, s["loss"], s["metrics"], opt, lr, s["batch_size"], iterations, seed=0)
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    last = {}

    def run_epoch(_):
        totals, seen = np.zeros(len(step.outputs)), 0.0
        for xb, tb, wb in data.batches(x, t, s["batch_size"], rng.permutation(len(x))):
            totals += np.asarray(step.fn(xb, tb, wb), dtype=np.float64)
            seen += float(wb.sum())
        last.update(zip(step.outputs, totals / seen))

    med, times = median_epoch(run_epoch, epochs)
    return med, times, compile_s, last
