"""One LSTM layer's forward + backward under JAX (nncli's recurrence, batch split as nncli runs it),
built other ways that were tried for the speed issue and not kept; the values and times of each
against nncli's own, interleaved.

    python bench/lstm_variants.py [--units 128 --steps 50 --batch 64 --features 32] [--rounds 6]

- unroll N: PyTensor's JAX scan calls ``jax.lax.scan(..., unroll=N)`` (N = 2, 5, 10);
- fast math: ``XLA_FLAGS=--xla_cpu_enable_fast_math=true`` (NaNs and infinities still honoured),
  which needs its own process: child processes with and without it, taking turns (--pairs).

Prints min and median milliseconds per call (20 calls a round). Not part of the tests;
bench/results.md ("fifth session") has the figures.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nncli import backend  # noqa: E402  (the compile cache, before PyTensor is imported)
from timing import interleaved  # noqa: E402

FAST_MATH = ("--xla_cpu_enable_fast_math=true --xla_cpu_fast_math_honor_nans=true "
             "--xla_cpu_fast_math_honor_infs=true")


def layer_functions(a, unrolls):
    """{unroll: compiled forward + backward of one LSTM layer} (unroll 1: nncli's own), and an input."""
    backend.activate(backend.choose("jax", "cpu", ["lstm"]))
    from jax.lax import scan

    import pytensor.link.jax.dispatch.scan as jax_scan_dispatch
    from bench_rnn import layer_function, lstm_layer

    layer, params, x, xv = lstm_layer(a.units, a.batch, a.steps, a.features)
    fns = {}
    original = jax_scan_dispatch.jax_scan
    try:
        for n in unrolls:
            jax_scan_dispatch.jax_scan = functools.partial(scan, unroll=n) if n > 1 else original
            fns[n] = layer_function(layer, params, x)
            fns[n](xv)                       # JAX traces (and so reads jax_scan) at the first call
    finally:
        jax_scan_dispatch.jax_scan = original
    return fns, xv


def timed(fns: dict, xv, rounds: int) -> dict:
    """Milliseconds a call of each function, 20 calls a round, the functions taking turns."""
    def runner(fn):
        return lambda _: [[np.asarray(v) for v in fn(xv)] for _ in range(20)]

    result = interleaved({k: runner(fn) for k, fn in fns.items()}, rounds)
    return {k: [t / 20 * 1e3 for t in times] for k, (_, times) in result.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=3, help="fast math: alternating child-process pairs")
    ap.add_argument("--only", choices=["unroll", "plain"], help=argparse.SUPPRESS)  # a child's part
    a = ap.parse_args(argv)
    size = f"{a.units} units, T={a.steps}, batch {a.batch}, {a.features} features"
    if a.only == "plain":
        fns, xv = layer_functions(a, [1])
        print(f"{min(timed(fns, xv, a.rounds)[1]):.2f}")
        return
    fns, xv = layer_functions(a, [1, 2, 5, 10])
    ref = [np.asarray(v) for v in fns[1](xv)]
    for n in (2, 5, 10):
        same = all(np.array_equal(r, np.asarray(v)) for r, v in zip(ref, fns[n](xv)))
        print(f"unroll {n}: the same values as unroll 1: {same}")
    times = timed(fns, xv, a.rounds)
    print(f"LSTM layer forward + backward ({size}), ms a call:")
    for n, v in times.items():
        print(f"  unroll {n}{' (nncli)' if n == 1 else ''}: min {min(v):.2f}, median {np.median(v):.2f}")
    if a.only == "unroll":
        return
    child = [sys.executable, __file__, "--only", "plain", "--units", str(a.units), "--steps", str(a.steps),
             "--batch", str(a.batch), "--features", str(a.features), "--rounds", str(a.rounds)]
    for i in range(a.pairs):
        out = {}
        for name, flags in (("default", ""), ("fast math", FAST_MATH)):
            env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()}
            r = subprocess.run(child, env=env, capture_output=True, text=True, timeout=600)
            out[name] = r.stdout.strip().splitlines()[-1] if r.returncode == 0 else f"failed: {r.stderr[-200:]}"
        print(f"  pair {i + 1}: min ms default {out['default']}, fast math {out['fast math']}")


if __name__ == "__main__":
    main()
