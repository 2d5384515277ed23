"""nncli vs. a plain PyTorch loop vs. a hand-written PyTensor loop, same nets, same data, one process.

    python bench/run.py                         # everything; writes bench/results.md
    python bench/run.py --quick                 # fewer rows/epochs (a smoke run)
    python bench/run.py --workloads mlp128 --backends c,jax,numba --no-start

Workloads (synthetic data, seeded): MLP 784-256-128-10 (relu, softmax, Adam)
at batch 32, 128 and 1024; a small CNN (1x28x28 -> conv 16@3x3 relu -> max
pool 2 -> conv 32@3x3 relu -> max pool 2 -> dense 10); an LSTM (T=50, 32
inputs, 128 units, last state -> dense 10), when those layer types exist.

Per workload and backend: the median epoch time (a whole epoch, shuffling
included) of nncli's trainer, the hand-written PyTensor loop compiled in the
same mode, and PyTorch eager (torch optional: pip install 'nncli[bench]');
the ratios nncli/torch and nncli/pytensor; and how much of nncli's epoch is
spent outside the compiled function (data feed + trainer Python). Then cold
and warm `nncli train configs/xor.yaml --epochs 1` (fresh NNCLI_CACHE_DIR,
then the same again) per backend, and peak RSS of the processes.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nncli import backend  # noqa: E402  (sets up the compile cache before PyTensor is imported)

import numpy as np  # noqa: E402
from timing import cpu_model, median_epoch  # noqa: E402

WORKLOADS = {
    "mlp32": {"net": "mlp", "batch": 32},
    "mlp128": {"net": "mlp", "batch": 128},
    "mlp1024": {"net": "mlp", "batch": 1024},
    "cnn": {"net": "cnn", "batch": 64},
    "lstm": {"net": "lstm", "batch": 64},
}
LR = 0.001

LAYERS_YAML = {
    "mlp": """
  - {type: dense, units: 256, activation: relu}
  - {type: dense, units: 128, activation: relu}
  - {type: dense, units: 10, activation: softmax}""",
    "cnn": """
  - {type: conv2d, filters: 16, kernel_size: 3, activation: relu}
  - {type: max_pool2d, pool_size: 2}
  - {type: conv2d, filters: 32, kernel_size: 3, activation: relu}
  - {type: max_pool2d, pool_size: 2}
  - {type: flatten}
  - {type: dense, units: 10, activation: softmax}""",
    "lstm": """
  - {type: lstm, units: 128}
  - {type: dense, units: 10, activation: softmax}""",
}
NEEDS = {"mlp": ["dense"], "cnn": ["conv2d", "max_pool2d", "flatten"], "lstm": ["lstm"]}


def make_data(net: str, rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = {"mlp": (784,), "cnn": (1, 28, 28), "lstm": (50, 32)}[net]
    x = rng.standard_normal((rows, *shape)).astype(np.float32)
    proj = rng.standard_normal((int(np.prod(shape)), 10)).astype(np.float32)
    y = np.argmax(x.reshape(rows, -1) @ proj, axis=1).astype(np.int64)
    return x, y


def layer_types_known() -> set:
    from nncli.layers import LAYERS

    return set(LAYERS.names()) if hasattr(LAYERS, "names") else set(getattr(LAYERS, "_items", {}) or LAYERS)


# --- nncli ----------------------------------------------------------------------

def run_nncli(net: str, x, y, batch: int, backend_name: str, epochs: int, folder: Path,
              steps: str = "auto") -> dict:
    import h5py

    from nncli import progress
    from nncli.training import trainer
    from nncli.training.prepare import prepare
    from nncli import spec as spec_mod

    data_path = folder / f"{net}.h5"
    if not data_path.exists():
        with h5py.File(data_path, "w") as f:
            f["x"], f["y"] = x, y
    cfg = folder / f"{net}-{batch}-{backend_name}.yaml"
    cfg.write_text(f"""name: bench-{net}
seed: 0
device: cpu
backend: {backend_name}
data: {{train: {data_path.name}}}
layers:{LAYERS_YAML[net]}
loss: categorical_crossentropy
optimizer: adam
learning_rate: {LR}
epochs: {epochs}
batch_size: {batch}
early_stopping: false
checkpoint_interval: 100000
steps_per_execution: {steps}
output: {folder / ('run-' + cfg.stem)}
""")
    spec = spec_mod.load(cfg)
    choice = backend.choose(spec["backend"], spec["device"], [l.kind for l in spec.layers], spec["batch_size"])
    backend.activate(choice)
    prep = prepare(spec)
    inside: list[float] = []  # seconds inside the compiled function, per epoch

    class Timed(trainer.Trainer):
        def compile(self):
            super().compile()

            def timed(fn):
                def call(*args):
                    t = time.perf_counter()
                    out = np.asarray(fn(*args))  # JAX returns before computing: wait here
                    inside[-1] += time.perf_counter() - t
                    return out
                return call

            self.train_fn.fn = timed(self.train_fn.fn)
            if self.train_fn.single is not None:
                self.train_fn.single = timed(self.train_fn.single)

    class EpochClock(progress.Silent):
        def epoch_start(self, *args, **kwargs):
            inside.append(0.0)

    # epoch times: nncli as it runs (JAX results read back in groups, so Python overlaps compute)
    t = trainer.Trainer(prep, choice, progress.Silent())
    result = t.fit()
    secs = result.history["seconds"]
    # the share outside the compiled step: a second run whose step waits for its result
    timed = Timed(prep, choice, EpochClock())
    timed.out = timed.out.with_name(timed.out.name + "-timed")
    timed_secs = timed.fit().history["seconds"]
    outside = [max(s - i, 0.0) / s for s, i in zip(timed_secs[1:], inside[1:])]
    return {"epoch": statistics.median(secs[1:]), "compile": t.compile_seconds,
            "outside": statistics.median(outside), "backend": choice.describe(), "steps": t.steps,
            "loss": result.history["loss"][-1]}


# --- hand-written PyTensor --------------------------------------------------------

def _adam(params, grads, lr=LR, b1=0.9, b2=0.999, eps=1e-7):
    import pytensor
    import pytensor.tensor as pt

    t = pytensor.shared(np.float32(0), name="t")
    t1 = t + 1
    a = lr * pt.sqrt(1 - b2 ** t1) / (1 - b1 ** t1)
    ups = [(t, t1)]
    for p, g in zip(params, grads):
        m = pytensor.shared(np.zeros_like(p.get_value()))
        v = pytensor.shared(np.zeros_like(p.get_value()))
        m1 = b1 * m + (1 - b1) * g
        v1 = b2 * v + (1 - b2) * g * g
        ups += [(m, m1), (v, v1), (p, (p - a * m1 / (pt.sqrt(v1) + eps)).astype(p.dtype))]
    return ups


def _glorot(rng, shape, fan_in, fan_out):
    lim = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-lim, lim, shape).astype(np.float32)


def build_pytensor(net: str, batch: int):
    import pytensor
    import pytensor.tensor as pt

    rng = np.random.default_rng(0)
    sh = lambda v, n: pytensor.shared(v, name=n)  # noqa: E731
    params = []
    if net == "mlp":
        x = pt.tensor("x", dtype="float32", shape=(batch, 784))
        h = x
        for i, (a, b) in enumerate([(784, 256), (256, 128), (128, 10)]):
            W, bb = sh(_glorot(rng, (a, b), a, b), f"W{i}"), sh(np.zeros(b, np.float32), f"b{i}")
            params += [W, bb]
            h = h @ W + bb
            if b != 10:
                h = pt.maximum(h, 0)
        logits = h
    elif net == "cnn":
        # PyTensor 3 has no convolution op: the usual hand-written way is im2col (shifted slices + one dot)
        x = pt.tensor("x", dtype="float32", shape=(batch, 1, 28, 28))
        h, side = x, 28
        for i, (cin, cout) in enumerate([(1, 16), (16, 32)]):
            W = sh(_glorot(rng, (cout, cin, 3, 3), cin * 9, cout * 9), f"K{i}")
            bb = sh(np.zeros(cout, np.float32), f"kb{i}")
            params += [W, bb]
            o = side - 2
            patches = pt.stack([h[:, :, a:a + o, b:b + o] for a in range(3) for b in range(3)], axis=2)
            patches = patches.reshape((batch, cin * 9, o, o))
            z = pt.tensordot(patches, W.reshape((cout, cin * 9)), axes=[[1], [1]]) + bb  # (B, o, o, F)
            h = pt.maximum(z, 0).dimshuffle(0, 3, 1, 2)
            side = o // 2
            h = h[:, :, :side * 2, :side * 2].reshape((batch, cout, side, 2, side, 2)).max(axis=(3, 5))
        h = h.reshape((batch, -1))
        n_in = 32 * 5 * 5
        W, bb = sh(_glorot(rng, (n_in, 10), n_in, 10), "W"), sh(np.zeros(10, np.float32), "b")
        params += [W, bb]
        logits = h @ W + bb
    else:  # lstm
        x = pt.tensor("x", dtype="float32", shape=(batch, 50, 32))
        n_h = 128
        Wx = sh(_glorot(rng, (32, 4 * n_h), 32, 4 * n_h), "Wx")
        Wh = sh(_glorot(rng, (n_h, 4 * n_h), n_h, 4 * n_h), "Wh")
        bl = sh(np.zeros(4 * n_h, np.float32), "bl")
        params += [Wx, Wh, bl]
        xs = (x.dimshuffle(1, 0, 2) @ Wx) + bl  # (T, B, 4H), input projection outside the loop

        def step(xt, h, c):
            z = xt + h @ Wh
            i, f, o = (pt.sigmoid(z[:, k * n_h:(k + 1) * n_h]) for k in range(3))
            g = pt.tanh(z[:, 3 * n_h:])
            c1 = f * c + i * g
            return o * pt.tanh(c1), c1

        zeros = pt.zeros((batch, n_h), dtype="float32")
        hs, _ = pytensor.scan(step, sequences=xs, outputs_info=[zeros, zeros], return_updates=False)
        W, bb = sh(_glorot(rng, (n_h, 10), n_h, 10), "W"), sh(np.zeros(10, np.float32), "b")
        params += [W, bb]
        logits = hs[-1] @ W + bb
    y = pt.tensor("y", dtype="int64", shape=(batch,))
    logp = logits - pt.logsumexp(logits, axis=1, keepdims=True)
    loss = -pt.mean(logp[pt.arange(batch), y])
    grads = pytensor.grad(loss, params)
    return pytensor.function([x, y], loss, updates=_adam(params, grads))


def run_pytensor(net: str, x, y, batch: int, epochs: int) -> dict:
    t0 = time.perf_counter()
    fn = build_pytensor(net, batch)
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    n = len(x) // batch * batch
    last = {}

    def run_epoch(_):
        order = rng.permutation(len(x))
        xs, ys = x[order], y[order]
        last["loss"] = sum(float(fn(xs[s:s + batch], ys[s:s + batch])) for s in range(0, n, batch)) / (n // batch)

    med, _ = median_epoch(run_epoch, epochs - 1)  # the first of `epochs` is the warm-up
    return {"epoch": med, "compile": compile_s, "loss": last["loss"]}


# --- PyTorch ----------------------------------------------------------------------

def run_torch(net: str, x, y, batch: int, epochs: int, threads: int = 0) -> dict | None:
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    default_threads = getattr(run_torch, "default_threads", None) or torch.get_num_threads()
    run_torch.default_threads = default_threads
    torch.set_num_threads(threads or default_threads)
    torch.manual_seed(0)
    if net == "mlp":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    elif net == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 5 * 5, 10))
    else:
        class LSTMNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm, self.out = nn.LSTM(32, 128, batch_first=True), nn.Linear(128, 10)

            def forward(self, v):
                return self.out(self.lstm(v)[0][:, -1])

        model = LSTMNet()
    opt = torch.optim.Adam(model.parameters(), lr=LR, eps=1e-7)
    lossf = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n = len(x) // batch * batch
    last = {}

    def run_epoch(_):
        order = torch.randperm(len(x))
        xs, ys = xt[order], yt[order]
        total = 0.0
        for s in range(0, n, batch):
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(xs[s:s + batch]), ys[s:s + batch])
            loss.backward()
            opt.step()
            total += loss.item()
        last["loss"] = total / (n // batch)

    med, _ = median_epoch(run_epoch, epochs - 1)  # the first of `epochs` is the warm-up
    return {"epoch": med, "loss": last["loss"],
            "version": f"{torch.__version__}, {torch.get_num_threads()} threads"}


# --- start-up -------------------------------------------------------------------------

def _timed_process(cmd, env) -> tuple[float, float, int, str]:
    """(wall seconds, seconds to the first batch, peak RSS MiB, exit code, stderr tail) of one child process."""
    # a small wrapper process starts the command: a child forked from this (big) process would
    # report this process's RSS as its peak (ru_maxrss survives exec)
    # "first" is when the trainer reports its compile done ("compiled in ..."): training starts then
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); first = float('nan'); "
               "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); lines = []\n"
               "for line in p.stderr:\n"
               "    lines.append(line)\n"
               "    if first != first and line.startswith(b'compiled in'): first = time.perf_counter() - t\n"
               "code = p.wait(); sys.stderr.buffer.write(b''.join(lines)[-400:]); "
               "print(time.perf_counter() - t, first, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")
    p = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, capture_output=True, cwd=ROOT)
    wall, first, rss_kib, code = p.stdout.split()
    return float(wall), float(first), int(rss_kib) / 1024, int(code), p.stderr.decode(errors="replace")


def start_times(backends, folder: Path) -> list[dict]:
    nncli = str(Path(sys.executable).with_name("nncli"))
    rows = []
    for b in backends:
        cache = folder / f"cache-{b}"
        env = {**os.environ, "NNCLI_CACHE_DIR": str(cache)}
        env.pop("NNCLI_BACKEND", None)
        cmd = [nncli, "train", "configs/xor.yaml", "--epochs", "1", "--backend", b,
               "--output", str(folder / f"xor-{b}")]
        cold = _timed_process(cmd, env)
        warm = [_timed_process(cmd, env) for _ in range(3)]
        rows.append({"backend": b, "cold": cold[0], "warm": statistics.median(w[0] for w in warm),
                     "cold_first": cold[1], "warm_first": statistics.median(w[1] for w in warm),
                     "rss": max(w[2] for w in [cold, *warm]), "ok": cold[3] == 0 and all(w[3] == 0 for w in warm),
                     "err": cold[4] if cold[3] else ""})
        print(f"  start {b}: cold {cold[0]:.1f}s, warm {rows[-1]['warm']:.2f}s "
              f"(first batch: {cold[1]:.1f}s, {rows[-1]['warm_first']:.2f}s)", flush=True)
    return rows


# --- main ---------------------------------------------------------------------------------

def _median_run(runs: list):
    """The run whose median epoch is the median of the runs' (None if there were none)."""
    runs = [r for r in runs if r is not None]
    if not runs:
        return None
    return sorted(runs, key=lambda r: r["epoch"])[(len(runs) - 1) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="mlp32,mlp128,mlp1024,cnn,lstm")
    ap.add_argument("--backends", default="auto", help="comma list of auto,c,jax,numba (auto: what nncli picks)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per run; the first is a warm-up")
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--steps", default="auto", help="nncli's steps_per_execution (default auto)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure each workload this many times, in turn, and report the median run")
    ap.add_argument("--quick", action="store_true", help="2048 rows, 3 epochs")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-start", action="store_true", help="skip the cold/warm start measurement")
    ap.add_argument("--start-backends", default="c,jax")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    ap.add_argument("--json", help="also write the raw figures here")
    a = ap.parse_args(argv)
    if a.quick:
        a.rows, a.epochs = 2048, 3
    from nncli.layers import LAYERS

    known = layer_types_known()
    rows = []
    with tempfile.TemporaryDirectory(prefix="nncli-bench-") as tmp:
        folder = Path(tmp)
        for w in [w for w in a.workloads.split(",") if w]:
            spec = WORKLOADS[w]
            net, batch = spec["net"], spec["batch"]
            if not all(t in known for t in NEEDS[net]):
                print(f"{w}: skipped (layer types {NEEDS[net]} not available yet)", flush=True)
                continue
            rows_n = a.rows if net == "mlp" else max(a.rows // 4, batch * 4)
            x, y = make_data(net, rows_n)
            seen = set()
            for b in a.backends.split(","):
                resolved = backend.choose(b, "cpu", [LAYERS.get(t).kind for t in NEEDS[net] + ["dense"]], batch).backend
                if resolved in seen:
                    continue
                seen.add(resolved)
                print(f"{w} ({rows_n} rows, batch {batch}), backend {b} ...", flush=True)
                runs: dict[str, list] = {"nncli": [], "pytensor": [], "torch": [], "torch1": []}
                for _ in range(a.repeat):  # whole runs in turn: a busy stretch of the machine hits all
                    try:
                        runs["nncli"].append(run_nncli(net, x, y, batch, b, a.epochs, folder, a.steps))
                    except Exception as exc:  # a backend that cannot run this net
                        print(f"  nncli failed: {type(exc).__name__}: {exc}", flush=True)
                        break
                    try:
                        runs["pytensor"].append(run_pytensor(net, x, y, batch, a.epochs))
                    except Exception as exc:
                        print(f"  pytensor loop failed: {type(exc).__name__}: {exc}", flush=True)
                        runs["pytensor"].append({"epoch": float("nan"), "compile": float("nan")})
                    if not a.no_torch:
                        runs["torch"].append(run_torch(net, x, y, batch, a.epochs))
                        runs["torch1"].append(run_torch(net, x, y, batch, a.epochs, threads=1))
                if not runs["nncli"]:
                    continue
                r_n, r_p, r_t, r_t1 = (_median_run(runs[k]) for k in ("nncli", "pytensor", "torch", "torch1"))
                row = {"workload": w, "rows": rows_n, "batch": batch, "backend": b, "nncli": r_n, "pytensor": r_p,
                       "torch": r_t, "torch1": r_t1}
                rows.append(row)
                print(f"  nncli {r_n['epoch']:.3f}s ({r_n['backend']}; outside fn {r_n['outside']:.1%}), "
                      f"pytensor {r_p['epoch']:.3f}s, torch {r_t['epoch'] if r_t else float('nan'):.3f}s, "
                      f"torch 1 thread {r_t1['epoch'] if r_t1 else float('nan'):.3f}s",
                      flush=True)
        starts = [] if a.no_start else start_times(a.start_backends.split(","), folder)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = report(rows, starts, peak, a)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "starts": starts, "peak_mib": peak}, indent=1))
    return 0


def report(rows, starts, peak, a) -> str:
    torch_v = next((r["torch"]["version"] for r in rows if r["torch"]), "not installed")
    lines = [
        "# bench/run.py results", "",
        f"`python bench/run.py {' '.join(sys.argv[1:])}`".replace("` ", "`").rstrip() + " on "
        + f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, Python {platform.python_version()}, "
        + f"torch {torch_v}; {time.strftime('%Y-%m-%d %H:%M')}.", "",
        f"Median epoch time over {a.epochs - 1} epochs (after one warm-up epoch)"
        + (f", the median of {a.repeat} runs taken in turn" if a.repeat > 1 else "")
        + "; ratio < 1: nncli is faster. "
        "`outside` is the share of nncli's epoch spent outside the compiled training function "
        "(data feed and trainer Python).", "",
        "| workload | rows | backend (nncli's choice) | nncli s/epoch | PyTensor loop | PyTorch | PyTorch 1 thread "
        "| nncli/torch | nncli/torch 1t | nncli/pytensor | outside | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n, p, t, t1 = r["nncli"], r["pytensor"], r["torch"], r.get("torch1")
        nan = float("nan")
        lines.append(f"| {r['workload']} (batch {r['batch']}) | {r['rows']} | {n['backend']}, {n.get('steps', 1)} "
                     f"step{'s' if n.get('steps', 1) != 1 else ''}/call | {n['epoch']:.3f} | "
                     f"{p['epoch']:.3f} | {t['epoch'] if t else nan:.3f} | {t1['epoch'] if t1 else nan:.3f} | "
                     f"{(n['epoch'] / t['epoch']) if t else nan:.2f} | {(n['epoch'] / t1['epoch']) if t1 else nan:.2f} | "
                     f"{n['epoch'] / p['epoch']:.2f} | "
                     f"{n['outside']:.1%} | {n['compile']:.1f} |")
    if starts:
        lines += ["", "Start-up: `nncli train configs/xor.yaml --epochs 1` as a whole process (interpreter start, "
                  "imports, compile, one epoch, checkpoint, curves.png when matplotlib is installed): cold = empty "
                  "NNCLI_CACHE_DIR, warm = median of 3 more runs; first batch = from launch to the trainer's "
                  "\"compiled in\" line, when training starts.",
                  "", "| backend | cold s | warm s | cold to first batch s | warm to first batch s | peak RSS MiB | ok |",
                  "|---|---|---|---|---|---|---|"]
        for s in starts:
            lines.append(f"| {s['backend']} | {s['cold']:.1f} | {s['warm']:.2f} | {s['cold_first']:.1f} | "
                         f"{s['warm_first']:.2f} | {s['rss']:.0f} | {s['ok']} |")
    lines += ["", f"Peak RSS of the benchmark process (all workloads, all frameworks): {peak:.0f} MiB.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
