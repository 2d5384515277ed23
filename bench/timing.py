"""Timing helpers shared by the benchmark scripts in bench/."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    """The CPU's model name (every published figure names the machine it ran on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def interleaved(runners: dict, epochs: int) -> dict:
    """Median seconds of `epochs` epochs per runner (name -> run_epoch(i)), after one warm-up epoch
    each, taking turns epoch by epoch so that a slower or busier stretch of a shared machine hits
    every runner alike. Returns name -> (median, epoch times)."""
    for run_epoch in runners.values():
        run_epoch(0)
    times: dict = {name: [] for name in runners}
    for e in range(epochs):
        for name, run_epoch in runners.items():
            t0 = time.perf_counter()
            run_epoch(e + 1)
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(ts), ts) for name, ts in times.items()}


def nncli_epochs(config: dict, name: str, x, t):
    """nncli's compiled training step (JAX, CPU) over (x, t) in shuffled fixed-size batches, as in
    `nncli train` (steps_per_execution as the config says, default auto); `config` is a config
    dict (layers, loss, metrics, optimizer, learning_rate, batch_size). Returns (run_epoch(i),
    compile s, {loss/metric: last epoch}, steps per call)."""
    from nncli import backend, data, functions, network, optimizers, spec, steps

    backend.activate(backend.choose("jax", "cpu"))
    import pytensor

    s = spec.from_dict(config, name)
    net = network.build(s, x.shape[1:])
    params, state = net.initial_values(np.random.default_rng(0))
    net.create_shared(params, state)
    iterations = optimizers.iterations_variable()
    opt = optimizers.create(s["optimizer"]["type"], {k: v for k, v in s["optimizer"].items() if k != "type"})
    lr = pytensor.shared(np.asarray(s["learning_rate"], dtype="float32"))
    batch = s["batch_size"]
    k = steps.for_data(s["steps_per_execution"], "jax", batch, len(x), x.shape[1:], t.shape[1:])
    t0 = time.perf_counter()
    graph, _ = functions.train_graph(net, s["loss"], s["metrics"], opt, lr, batch, iterations, seed=0)
    step = steps.compile_several(graph, k, "jax")
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    last = {}

    def run_epoch(_):
        totals = np.zeros(len(step.outputs))
        for _, _, out in steps.calls(step, data.batches(x, t, batch, rng.permutation(len(x)))):
            totals += np.asarray(out, dtype=np.float64).reshape(-1, len(totals)).sum(axis=0)
        last.update(zip(step.outputs, totals / len(x)))

    return run_epoch, compile_s, last, k


def steps_arg(text: str):
    """A --steps option: 'auto' or an integer (nncli's steps_per_execution)."""
    return text if text == "auto" else int(text)


def versus_torch(nncli: tuple, make_torch, threads: int | None, epochs: int, metric: str) -> None:
    """Time nncli's and PyTorch's epochs in turn (interleaved) and print both medians and their
    ratio. `nncli` is what nncli_epochs returns; make_torch() -> (run_epoch, last) builds the
    PyTorch loop (None, or torch not installed: nncli alone); `threads`: torch's intra-op threads."""
    run_nncli, compile_s, last, k = nncli
    runners = {"nncli": run_nncli}
    torch = None
    if make_torch is not None:
        try:
            import torch
        except ImportError:
            print("pytorch: not installed (pip install torch); skipped")
    if torch is not None:
        if threads:
            torch.set_num_threads(threads)
        runners["torch"], tlast = make_torch()
    result = interleaved(runners, epochs)  # epoch by epoch in turn: machine noise hits both
    med = result["nncli"][0]
    print(f"nncli (jax, {k} steps per call): median {med * 1e3:7.1f} ms/epoch  (compile {compile_s:.1f} s; "
          f"last epoch loss {last['loss']:.4f} {metric} {last[metric]:.4f})")
    if torch is not None:
        torch_med = result["torch"][0]
        print(f"pytorch {torch.__version__} ({torch.get_num_threads()} threads): median "
              f"{torch_med * 1e3:7.1f} ms/epoch  (last epoch loss {tlast['loss']:.4f} {metric} {tlast[metric]:.4f})")
        print(f"ratio nncli / pytorch: {med / torch_med:.2f}")

