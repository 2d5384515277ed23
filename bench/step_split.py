"""Experiment (not used by nncli): the WHOLE training step on slices of the batch, one per CPU device.

    python bench/step_split.py [tf|tcn|mlp32|mlp128|mlp1024|cnn|lstm|CONFIG.yaml ...] [--rounds 8]

nncli splits only its recurrent layers' loops over the CPU devices (nncli/layers/batch_shards.py).
This script builds the other way, data parallelism for the whole step: the network's forward pass,
the loss and the metric sums, and the gradients of the loss sum, all computed on equal slices of
the batch inside one BatchShards op (``jax.shard_map``, one slice per device); the slices' sums are
added (one all-reduce), then Adam's updates follow on the totals. It times that step against
nncli's own step (functions.train_graph), interleaved, both one minibatch per call and 16 per call
(nncli's default on JAX, steps.compile_several), and prints the first step's sums of both (the same
to float32 rounding). Networks: tf and tcn, bench_seq.py's --large transformer block (128 steps x
8 features -> 64 wide, 4 heads) and TCN (two causal conv1d of 64 channels), batch 32; bench/run.py's
workloads (mlp32, mlp128, mlp1024, cnn, lstm); or a shipped config. Their benchmarks' synthetic
data, 16 batches of it. Batch-coupled or random layers (batch_norm, dropout) are not handled.
Results: bench/results.md, "fifth session".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nncli import backend  # noqa: E402  (the compile cache, before PyTensor is imported)

# the networks of the other benchmarks: bench/run.py's workloads, and bench_seq.py's --large ones
SEQ_LARGE = {"tf": "transformer", "tcn": "tcn"}


def config_for(which: str, folder: Path) -> Path:
    """A config file for a named network on its benchmark's synthetic data (16 batches of it), or
    the shipped config itself."""
    if which.endswith(".yaml"):
        return Path(which).resolve()
    import h5py

    import bench_seq
    import run

    if which in SEQ_LARGE:
        stack, _, batch = bench_seq.layers(SEQ_LARGE[which], large=True)
        x, y = bench_seq.load(SEQ_LARGE[which], large=True)
        layers = "\n".join(f"  - {json.dumps(layer)}" for layer in stack)     # JSON is YAML
    else:
        net, batch = run.WORKLOADS[which]["net"], run.WORKLOADS[which]["batch"]
        x, y = run.make_data(net, 16 * batch)
        layers = run.LAYERS_YAML[net].strip("\n")
    with h5py.File(folder / f"{which}.h5", "w") as f:
        f["x"], f["y"] = x[:16 * batch], y[:16 * batch]
    path = folder / f"{which}.yaml"
    path.write_text(f"seed: 0\nbackend: jax\ndevice: cpu\ndata: {{train: {which}.h5}}\nlayers:\n{layers}\n"
                    f"loss: categorical_crossentropy\nmetrics: [accuracy]\noptimizer: adam\n"
                    f"learning_rate: 0.001\nbatch_size: {batch}\noutput: {folder / 'run'}\n")
    return path


def split_graph(net, batch: int, lr, iterations, metrics):
    """The training step with the whole forward and backward pass on slices of the batch."""
    import pytensor
    import pytensor.tensor as pt
    from pytensor.graph.replace import clone_replace

    from nncli import functions, optimizers
    from nncli.layers import Context, batch_shards

    x, t, w = functions._inputs(net, batch)
    names = list(net.params)
    shared = [net.params[k] for k in names]
    static = [pt.specify_shape(v, v.get_value(borrow=True).shape) for v in shared]

    def build(xs, ts, ws, *params):
        old = batch_shards.SHARDS
        batch_shards.SHARDS = 1                          # no recurrent layer splits again inside
        try:
            ctx = Context(training=True, sample_weight=ws, state={"iterations": iterations}, seed=0)
            sums = functions._sums(net, ctx, xs, ts, ws, "categorical_crossentropy", metrics)
            grads = pytensor.grad(sums[0], shared)
        finally:
            batch_shards.SHARDS = old
        return clone_replace([*sums, *grads], replace=dict(zip(shared, params)))

    out = batch_shards.split(build, [x, t, w, *static], [0, 0, 0, *[None] * len(static)],
                             [None] * (1 + len(metrics) + len(static)), batch)
    sums, grads = out[:1 + len(metrics)], out[1 + len(metrics):]
    count = pt.maximum(pt.sum(w), 1.0)
    updates, _ = optimizers.build_updates(optimizers.create("adam", {}, clip=None), net.params,
                                          {k: g / count for k, g in zip(names, grads)}, lr, iterations)
    return functions.TrainGraph((x, t, w), pt.stack(sums), list(updates), ["loss", *metrics])


def run(which: str, rounds: int, folder: Path) -> None:
    import pytensor

    from nncli import functions, optimizers, spec as spec_mod, steps as steps_mod
    from nncli.layers import batch_shards
    from nncli.training.prepare import prepare

    spec = spec_mod.load(config_for(which, folder))
    batch, metrics = spec["batch_size"], ["accuracy"]
    backend.activate(backend.choose("jax", "cpu", [l.kind for l in spec.layers], batch))
    prep = prepare(spec)
    net = prep.net
    values, state = net.initial_values(np.random.default_rng([0, 0]))
    fns = {}
    for kind in ("nncli", "whole step split"):
        for steps in (1, 16):
            net.create_shared(values, state)
            lr = pytensor.shared(np.float32(0.001))
            iterations = optimizers.iterations_variable()
            if kind == "nncli":
                graph, _ = functions.train_graph(net, spec["loss"], metrics, optimizers.create("adam", {}, clip=None),
                                                 lr, batch, iterations)
            else:
                graph = split_graph(net, batch, lr, iterations, metrics)
            compiled = steps_mod.compile_several(graph, steps, "jax")
            single = compiled.single or compiled.fn
            fns[(kind, steps)] = (compiled.fn, batch_shards.slices(single.maker.fgraph))
    xb, tb = np.asarray(prep.x_train[:16 * batch]), np.asarray(prep.t_train[:16 * batch])
    one = (xb[:batch], tb[:batch], np.ones(batch, np.float32))
    many = (xb.reshape(16, batch, *xb.shape[1:]), tb.reshape(16, batch, *tb.shape[1:]), np.ones((16, batch), np.float32))
    first = {k: np.asarray(f(*one)) for (k, s), (f, _) in fns.items() if s == 1}
    print(f"{which} (batch {batch}): first step's sums [loss, accuracy]: " +
          "; ".join(f"{k} {v}" for k, v in first.items()))
    times: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for (kind, steps), (f, _) in fns.items():
            args = one if steps == 1 else many
            t0 = time.perf_counter()
            for _ in range(10 if steps == 1 else 1):
                np.asarray(f(*args))
            times[(kind, steps)].append((time.perf_counter() - t0) / (10 if steps == 1 else 16) * 1e3)
    for (kind, steps), (_, slices) in fns.items():
        v = times[(kind, steps)]
        print(f"  {kind} ({batch_shards.describe(slices)}), {steps} step{'s' if steps > 1 else ''} a call: "
              f"ms a step min {min(v):.2f}, median {np.median(v):.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nets", nargs="*", default=["tf", "lstm", "cnn", "tcn", "mlp128"],
                    help="tf, tcn, a workload of bench/run.py, or a config file")
    ap.add_argument("--rounds", type=int, default=8)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nncli-step-split-") as tmp:
        for which in a.nets:
            run(which, a.rounds, Path(tmp))


if __name__ == "__main__":
    main()
