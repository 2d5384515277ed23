#!/usr/bin/env python
"""The float32 GEMM peak this machine reaches: 4096 x 4096 products, best of 5, in GFLOP/s, with
numpy (its BLAS), PyTorch (2 threads; optional: pip install -e ".[bench]") and JAX (XLA:CPU).
Then what bench/run.py's MLP (784-256-128-10) costs: XLA's own count of the floating-point
operations of one training step's gradient (``jax.grad`` of the loss; neither nncli nor PyTorch
computes the input's gradient), and the rate XLA reaches on the step's largest products at each
benchmark batch size, alone (one call each, best of 5 x 50 calls).

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
    mlp(jax, jnp)


def mlp(jax, jnp, rows: int = 16384) -> None:
    """bench/run.py's MLP: XLA's count of a gradient's operations, and its rate on the layer-1 products."""
    sizes = [(784, 256), (256, 128), (128, 10)]
    params = [p for a, b in sizes for p in (jnp.zeros((a, b), jnp.float32), jnp.zeros((b,), jnp.float32))]

    def loss(ps, xb, yb):
        h = xb
        for i in range(0, len(ps), 2):
            h = h @ ps[i] + ps[i + 1]
            if i < len(ps) - 2:
                h = jnp.maximum(h, 0)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), yb[:, None], axis=1))

    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.random((784, 256), dtype=np.float32))
    for batch in (32, 128, 1024):
        cost = jax.jit(jax.grad(loss)).lower(params, jnp.zeros((batch, 784), jnp.float32),
                                             jnp.zeros((batch,), jnp.int32)).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        per_row = cost["flops"] / batch
        x = jnp.asarray(rng.random((batch, 784), dtype=np.float32))
        d = jnp.asarray(rng.random((batch, 256), dtype=np.float32))
        rates = []
        for f, a, b in ((jax.jit(lambda u, v: u @ v), x, w), (jax.jit(lambda u, v: u.T @ v), x, d)):
            f(a, b).block_until_ready()
            best = float("inf")
            for _ in range(5):
                t = time.perf_counter()
                for _ in range(50):
                    out = f(a, b)
                out.block_until_ready()
                best = min(best, (time.perf_counter() - t) / 50)
            rates.append(2 * batch * 784 * 256 / best / 1e9)
        print(f"MLP batch {batch}: {per_row / 1e6:.3f} MFLOP per row forward + backward (XLA's count; "
              f"{per_row * rows / 1e9:.1f} GFLOP an epoch of {rows} rows); layer 1 in JAX: x W {rates[0]:.0f} "
              f"GFLOP/s, x^T dY (its weight gradient) {rates[1]:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
