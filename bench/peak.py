#!/usr/bin/env python
"""The float32 GEMM peak this machine reaches: 4096 x 4096 products, best of 5, in GFLOP/s, with
numpy (its BLAS), PyTorch (2 threads; optional: pip install -e ".[bench]") and JAX (XLA:CPU).

    python bench/peak.py [--repeat 3]

The ceiling for bench/run.py's dense workloads (bench/results.md): no training step, made of
smaller products and elementwise work, runs faster than this.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

N = 4096


def best_gflops(f, tries: int = 5) -> float:
    f()
    times = []
    for _ in range(tries):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 2 * N ** 3 / min(times) / 1e9


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    a = np.random.default_rng(0).random((N, N), dtype=np.float32)
    runs = {"numpy": lambda: a @ a}
    try:
        import torch

        torch.set_num_threads(2)
        ta = torch.from_numpy(a)
        runs["torch (2 threads)"] = lambda: ta @ ta
    except ImportError:
        pass
    import jax
    import jax.numpy as jnp

    ja = jnp.asarray(a)
    square = jax.jit(lambda x: x @ x)
    runs["jax"] = lambda: square(ja).block_until_ready()
    print(f"{N} x {N} float32 products, {os.cpu_count()} CPUs; GFLOP/s, best of 5 per round")
    for name, run in runs.items():
        print(f"{name}: " + ", ".join(f"{best_gflops(run):.1f}" for _ in range(args.repeat)))


if __name__ == "__main__":
    main()
