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
