"""nncli vs. a plain PyTorch loop vs. a hand-written PyTensor loop, same nets, same data, one process.

    python bench/run.py --backends auto --epochs 5 --repeat 2   # the published figures (bench/results.md)
    python bench/run.py --quick                 # the headline ratios in a few minutes
    python bench/run.py --workloads cnn --variants 'conv=native;conv=native,steps=1'  # + XLA's conv
    python bench/run.py --workloads mlp128 --backends c,jax,numba --no-start

Workloads (synthetic data, seeded): MLP 784-256-128-10 (relu, softmax, Adam)
at batch 32, 128 and 1024; a small CNN (1x28x28 -> conv 16@3x3 relu -> max
pool 2 -> conv 32@3x3 relu -> max pool 2 -> dense 10); an LSTM (T=50, 32
inputs, 128 units, last state -> dense 10).

Per workload and backend, the frameworks take turns EPOCH BY EPOCH (the order
rotating every round), so a busy stretch of a shared machine hits them all
alike: nncli's own trainer (`nncli train`'s Trainer, run in a thread that waits
for its turn before each epoch; its epoch time is the trainer's own clock), the
hand-written PyTensor loop compiled in the same mode, and PyTorch eager with 1
thread and with its default thread count (torch optional), and for the MLP a
hand-written JAX loop (jax.grad, the same Adam, as many steps per compiled call
as nncli). After one warm-up
epoch each, `--repeat` rounds of `--epochs - 1` epochs are timed: the table
gives min / median / max seconds per epoch of each, and nncli's ratio to
PyTorch's BEST thread setting, of the medians and of the mins (< 1: nncli is
faster). Then cold and warm `nncli train configs/xor.yaml --epochs 1` (fresh
NNCLI_CACHE_DIR, then the same again) per backend, and peak RSS.
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
from timing import cpu_model  # noqa: E402

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

# --variants: nncli built another way, as an extra runner (module, attribute, value)
VARIANTS = {
    "conv=native": ("nncli.layers.convolution", "IMPLEMENTATION", "native"),
    "conv=im2col": ("nncli.layers.convolution", "IMPLEMENTATION", "im2col"),
    "lstm=per-gate": ("nncli.layers.recurrence", "FUSED_GATES", False),
    "lstm=one-core": ("nncli.layers.batch_shards", "SHARDS", 1),
    "conv=native,steps=1": ("nncli.layers.convolution", "IMPLEMENTATION", "native"),
}
VARIANT_STEPS = {"conv=native,steps=1": "1"}   # variants that also set steps_per_execution
VARIANT_NETS = {"conv": ("cnn",), "lstm": ("lstm",)}   # the nets a variant changes (others skip it)


class _Variant:
    """Set a module attribute for the duration of a with-block (a --variants entry)."""

    def __init__(self, name: str | None):
        self.target = VARIANTS[name] if name else None

    def __enter__(self):
        if self.target:
            import importlib

            mod, attr, value = self.target
            self.mod = importlib.import_module(mod)
            self.old = getattr(self.mod, attr)
            setattr(self.mod, attr, value)

    def __exit__(self, *exc):
        if self.target:
            setattr(self.mod, self.target[1], self.old)


def nncli_runner(net: str, x, y, batch: int, backend_name: str, epochs: int, folder: Path,
                 steps: str = "auto", variant: str | None = None):
    """nncli's own Trainer (as `nncli train` runs it) in a thread that waits for its turn before
    each epoch. Returns (run_epoch(i) -> seconds by the trainer's clock, info, close)."""
    import threading

    import h5py

    from nncli import progress
    from nncli import spec as spec_mod
    from nncli.training import trainer
    from nncli.training.prepare import prepare

    data_path = folder / f"{net}.h5"
    if not data_path.exists():
        with h5py.File(data_path, "w") as f:
            f["x"], f["y"] = x, y
    tag = f"{net}-{batch}-{backend_name}" + (f"-{variant.replace('=', '-')}" if variant else "")
    cfg = folder / f"{tag}.yaml"
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
output: {folder / ('run-' + tag)}
""")
    spec = spec_mod.load(cfg)
    choice = backend.choose(spec["backend"], spec["device"], [l.kind for l in spec.layers], spec["batch_size"])
    backend.activate(choice)
    prep = prepare(spec)
    go, done = threading.Semaphore(0), threading.Semaphore(0)
    state: dict = {"seconds": None, "error": None, "loss": float("nan")}

    class Turns(progress.Silent):
        def epoch_start(self, *args, **kwargs):
            go.acquire()                       # wait for this runner's turn

        def epoch_end(self, epoch, epochs, logs, seconds):
            state["seconds"], state["loss"] = seconds, logs.get("loss", float("nan"))
            done.release()

    t = trainer.Trainer(prep, choice, Turns(), flag={})

    def work():
        try:
            with _Variant(variant):
                t.fit()
        except BaseException as exc:          # noqa: BLE001  (reported by the main thread)
            state["error"] = exc
            done.release()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def run_epoch(_):
        go.release()
        done.acquire()
        if state["error"] is not None:
            raise RuntimeError(f"nncli trainer failed: {type(state['error']).__name__}: {state['error']}")
        return state["seconds"]

    def info():
        return {"compile": t.compile_seconds, "backend": choice.describe(), "steps": t.steps, "loss": state["loss"]}

    return run_epoch, info, lambda: thread.join()


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


def pytensor_runner(net: str, x, y, batch: int):
    t0 = time.perf_counter()
    fn = build_pytensor(net, batch)
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    n = len(x) // batch * batch
    last = {"compile": compile_s}

    def run_epoch(_):
        order = rng.permutation(len(x))
        xs, ys = x[order], y[order]
        last["loss"] = sum(float(fn(xs[s:s + batch], ys[s:s + batch])) for s in range(0, n, batch)) / (n // batch)

    return run_epoch, last


# --- hand-written JAX (MLP only) --------------------------------------------------------

def jax_runner(net: str, x, y, batch: int, steps: int):
    """The MLP as a hand-written JAX loop: jax.grad of the same loss, the same Adam, `steps` batches
    per compiled call (a lax.scan, as nncli runs them), JAX's defaults. What XLA makes of the
    plainest program of this training step: nncli's graph against it shows what nncli's own graph
    costs. None for other nets."""
    if net != "mlp":
        return None
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    params = []
    for a, b in [(784, 256), (256, 128), (128, 10)]:
        params += [jnp.asarray(_glorot(rng, (a, b), a, b)), jnp.zeros((b,), jnp.float32)]

    def loss(ps, xb, yb):
        h = xb
        for i in range(0, 6, 2):
            h = h @ ps[i] + ps[i + 1]
            if i < 4:
                h = jnp.maximum(h, 0)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    def step(carry, data):
        ps, m, v, t = carry
        value, g = jax.value_and_grad(loss)(ps, *data)
        t = t + 1
        a = LR * jnp.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        m = [0.9 * mi + 0.1 * gi for mi, gi in zip(m, g)]
        v = [0.999 * vi + 0.001 * gi * gi for vi, gi in zip(v, g)]
        ps = [p - a * mi / (jnp.sqrt(vi) + 1e-7) for p, mi, vi in zip(ps, m, v)]
        return (ps, m, v, t), value

    @jax.jit
    def run(carry, xs, ys):
        return jax.lax.scan(step, carry, (xs, ys))

    zeros = [jnp.zeros_like(p) for p in params]
    state = {"carry": (params, zeros, list(zeros), jnp.float32(0))}
    order_rng = np.random.default_rng(1)
    calls = len(x) // (batch * steps)
    last: dict = {}

    def run_epoch(_):
        order = order_rng.permutation(len(x))[:calls * steps * batch]
        xs = x[order].reshape(calls, steps, batch, 784)
        ys = y[order].astype(np.int32).reshape(calls, steps, batch)
        losses = []
        for c in range(calls):
            state["carry"], values = run(state["carry"], xs[c], ys[c])
            losses.append(values)
        last["loss"] = float(np.mean(np.asarray(jnp.stack(losses))))

    t0 = time.perf_counter()
    run_epoch(0)
    last["compile"] = time.perf_counter() - t0
    return _warmed(run_epoch), last


# --- PyTorch ----------------------------------------------------------------------

def torch_runner(net: str, x, y, batch: int, threads: int):
    """A PyTorch eager training loop whose epochs run with `threads` intra-op threads
    (set before each epoch: the runners of one workload share the process). None without torch."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
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
    last = {"version": torch.__version__}

    def run_epoch(_):
        torch.set_num_threads(threads)
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

    return run_epoch, last


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

def spread(times: list[float]) -> dict:
    return {"min": min(times), "median": statistics.median(times), "max": max(times), "epochs": times}


MARKER = "<!-- other scripts' figures: bench/run.py keeps what follows -->"
DROPPED: dict[str, float] = {}   # runners not timed after their warm-up (name -> warm-up seconds)


def interleave(runners: dict, rounds: int) -> dict[str, list[float]]:
    """Epoch times of each runner (name -> run_epoch(i), which may return its own timing), after one
    warm-up epoch each (run in turn), taking turns epoch by epoch; the order rotates every round."""
    warm = {}
    for k, run_epoch in runners.items():
        t0 = time.perf_counter()
        run_epoch(0)
        warm[k] = time.perf_counter() - t0
    # PyTorch's thread settings: one whose warm-up epoch took over 3x the best setting's is not
    # timed further (on a busy machine its OpenMP threads spin: minutes per epoch, never the best)
    torch_warm = {k: v for k, v in warm.items() if k.startswith("torch")}
    for k, v in torch_warm.items():
        if v > 3 * min(torch_warm.values()):
            print(f"  {k}: warm-up epoch {v:.2f} s, over 3x {min(torch_warm, key=torch_warm.get)}'s "
                  f"{min(torch_warm.values()):.2f} s: not timed further", flush=True)
            runners = {n: r for n, r in runners.items() if n != k}
            DROPPED[k] = v
    names = list(runners)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            own = runners[k](r + 1)
            times[k].append(own if isinstance(own, float) else time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="mlp32,mlp128,mlp1024,cnn,lstm")
    ap.add_argument("--backends", default="auto", help="comma list of auto,c,jax,numba (auto: what nncli picks)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per round; the first is a warm-up (once)")
    ap.add_argument("--rows", type=int, default=16384, help="rows of the MLP data (cnn and lstm: a quarter)")
    ap.add_argument("--steps", default="auto", help="nncli's steps_per_execution (default auto)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds: each times epochs - 1 epochs per framework, interleaved")
    ap.add_argument("--variants", default="", help=f"extra nncli runners, a ;-separated list of {'; '.join(VARIANTS)}")
    ap.add_argument("--quick", action="store_true",
                    help="the headline ratios in a few minutes: 4096 MLP rows, 4 epochs, one round, jax start-up")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-pytensor", action="store_true", help="skip the hand-written PyTensor loop")
    ap.add_argument("--no-jax-loop", action="store_true", help="skip the hand-written JAX loop (MLP workloads)")
    ap.add_argument("--no-start", action="store_true", help="skip the cold/warm start measurement")
    ap.add_argument("--start-backends", default="c,jax")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    ap.add_argument("--json", help="also write the raw figures here (default: --out with .json)")
    a = ap.parse_args(argv)
    if a.quick:
        a.rows, a.epochs, a.repeat, a.start_backends = 4096, 4, 1, "jax"
    if a.json is None and a.out:
        a.json = str(Path(a.out).with_suffix(".json"))
    from nncli.layers import LAYERS

    known = layer_types_known()
    try:
        import torch
        threads_default = torch.get_num_threads()
    except ImportError:
        torch, threads_default = None, 0
    thread_settings = sorted({1, threads_default}) if torch is not None and not a.no_torch else []
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
                timed = (a.epochs - 1) * a.repeat
                runners, infos, closers = {}, {}, []
                try:
                    variants = [v for v in a.variants.split(";") if v and net in VARIANT_NETS[v.split("=")[0]]]
                    for v in [None, *variants]:
                        name = "nncli" if v is None else f"nncli[{v}]"
                        run_epoch, info, close = nncli_runner(net, x, y, batch, b, timed + 1, folder,
                                                              VARIANT_STEPS.get(v, a.steps), v)
                        runners[name], infos[name] = run_epoch, info
                        closers.append(close)
                        run_epoch(0)              # compile and warm up before the next one builds its graph
                        runners[name] = _warmed(run_epoch)
                except Exception as exc:  # a backend that cannot run this net
                    print(f"  nncli failed: {type(exc).__name__}: {exc}", flush=True)
                    continue
                if not a.no_jax_loop:
                    made = jax_runner(net, x, y, batch, infos["nncli"]()["steps"])
                    if made is not None:
                        runners["jax"], infos["jax"] = made
                if not a.no_pytensor:
                    try:
                        runners["pytensor"], infos["pytensor"] = pytensor_runner(net, x, y, batch)
                    except Exception as exc:
                        print(f"  pytensor loop failed: {type(exc).__name__}: {exc}", flush=True)
                for n_threads in thread_settings:
                    made = torch_runner(net, x, y, batch, n_threads)
                    if made is not None:
                        runners[f"torch{n_threads}"], infos[f"torch{n_threads}"] = made
                DROPPED.clear()
                times = interleave(runners, timed)
                for close in closers:
                    close()
                stats = {k: spread(v) for k, v in times.items()}
                for k, warm in DROPPED.items():
                    stats[k] = {"min": warm, "median": float("nan"), "max": warm, "epochs": [], "dropped": True}
                for k, info in [(k, i) for k, i in infos.items() if k in stats]:
                    stats[k].update(info() if callable(info) else {kk: vv for kk, vv in info.items()})
                row = {"workload": w, "rows": rows_n, "batch": batch, "backend": b, "stats": stats}
                torch_keys = [k for k in stats if k.startswith("torch") and not stats[k].get("dropped")]
                if torch_keys:
                    best = min(torch_keys, key=lambda k: stats[k]["median"])
                    row["torch_best"] = best
                    for k in [k for k in stats if k.startswith("nncli")]:
                        stats[k]["ratio_median"] = stats[k]["median"] / stats[best]["median"]
                        stats[k]["ratio_min"] = stats[k]["min"] / min(stats[t]["min"] for t in torch_keys)
                rows.append(row)
                print("  " + "; ".join(f"{k} not timed" if v.get("dropped") else
                                       f"{k} {v['median']:.3f}s [{v['min']:.3f}-{v['max']:.3f}]"
                                       + (f" = {v['ratio_median']:.2f}x torch" if "ratio_median" in v else "")
                                       for k, v in stats.items()), flush=True)
        starts = [] if a.no_start else start_times(a.start_backends.split(","), folder)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = report(rows, starts, peak, a, argv)
    print(text)
    if a.out:
        # the figures of the other scripts (bench_cnn, bench_rnn, bench_predict) below MARKER stay
        old = Path(a.out).read_text() if Path(a.out).exists() else ""
        Path(a.out).write_text(text + (old[old.index(MARKER):] if MARKER in old else ""))
    if a.json:
        Path(a.json).write_text(json.dumps({"command": command_line(argv), "cpu": cpu_model(),
                                            "cores": os.cpu_count(), "machine": platform.machine(),
                                            "load_before_after": load(), "rows": rows, "starts": starts,
                                            "peak_mib": peak}, indent=1))
    return 0


def _warmed(run_epoch):
    """A runner whose warm-up epoch has been run: interleave's own warm-up call is skipped."""
    first = [True]

    def call(i):
        if first[0]:
            first[0] = False
            return None
        return run_epoch(i)
    return call


def load() -> list[float]:
    try:
        return list(os.getloadavg())
    except OSError:
        return []


def command_line(argv) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python bench/run.py", *args])


def report(rows, starts, peak, a, argv=None) -> str:
    torch_v = next((v["version"] for r in rows for k, v in r["stats"].items() if k.startswith("torch")),
                   "not installed")
    lines = [
        "# bench/run.py results", "",
        f"`{command_line(argv)}` on {cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch_v}; {time.strftime('%Y-%m-%d %H:%M')}; "
        f"load average {', '.join(f'{v:.1f}' for v in load())} at the end.", "",
        f"Seconds per epoch over {(a.epochs - 1) * a.repeat} epochs per framework, taken in turn epoch by epoch "
        "(after one warm-up epoch each): min / median / max. PyTorch runs with 1 thread and with its default; "
        "the ratios compare nncli with PyTorch's best setting (the lower median; for mins, the lower min). "
        "Ratio < 1: nncli is faster.", "",
        "| workload | rows | backend (nncli's choice) | nncli s/epoch | PyTensor loop | JAX loop | PyTorch 1 thread "
        "| PyTorch default threads | nncli/torch best (medians) | (mins) | nncli/pytensor (medians) "
        "| nncli/JAX loop (medians) | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(v):
        if v and v.get("dropped"):
            return f"warm-up {v['min']:.2f} (> 3x: not timed)"
        return f"{v['median']:.3f} [{v['min']:.3f}-{v['max']:.3f}]" if v else "-"

    for r in rows:
        st = r["stats"]
        torch_default = [k for k in st if k.startswith("torch") and k != "torch1"]
        p, j = st.get("pytensor"), st.get("jax")
        for k in [k for k in st if k.startswith("nncli")]:
            n = st[k]
            label = r["workload"] + (k[5:] if k != "nncli" else "")
            lines.append(
                f"| {label} (batch {r['batch']}) | {r['rows']} | {n['backend']}, {n.get('steps', 1)} "
                f"step{'s' if n.get('steps', 1) != 1 else ''}/call | {cell(n)} | {cell(p)} | {cell(j)} | "
                f"{cell(st.get('torch1'))} | "
                f"{cell(st[torch_default[0]]) + f' ({torch_default[0][5:]} threads)' if torch_default else '-'} | "
                f"{n.get('ratio_median', float('nan')):.2f} | {n.get('ratio_min', float('nan')):.2f} | "
                f"{(n['median'] / p['median']) if p else float('nan'):.2f} | "
                f"{format(n['median'] / j['median'], '.2f') if j else '-'} | {n['compile']:.1f} |")
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
