"""Benchmark: the shipped recurrent examples trained by nncli (JAX backend) vs a
plain PyTorch CPU loop of the same network on the same data, in the same process.

    python bench/bench_rnn.py [--example adding-lstm|sequence-rnn] [--epochs 5] [--units 32]
                              [--batch-size N] [--threads N] [--steps auto|N] [--no-torch]

adding-lstm: lstm (units, last state) -> dense 1 linear, MSE, Adam, on
data/adding.h5 (10,000 sequences of 30 steps x 2 features), batch 64.
sequence-rnn: simple_rnn (units, last state) -> dense 3 softmax, cross-entropy,
Adam, on data/majority.h5 (4,000 sequences of 15 one-hot steps x 3), batch 32.
Prints the median seconds per epoch of each (after one warm-up epoch; the two
take turns epoch by epoch) and their ratio, then (adding-lstm) a
micro-benchmark of one LSTM layer under JAX, forward + backward: nncli's
recurrence (nncli/layers/recurrence.py) against pytensor.grad of a plain scan, at the
example's size and at 128 units x 50 steps x 32 features. Not part of the tests.

torch is optional (`pip install torch`); without it only the nncli figures
are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import nncli_epochs, steps_arg, timeit, versus_torch  # noqa: E402


EXAMPLES = {  # name: (data file, layer type, batch size, learning rate)
    "adding-lstm": ("adding.h5", "lstm", 64, 0.01),
    "sequence-rnn": ("majority.h5", "simple_rnn", 32, 0.001),
}


def load(example: str):
    import h5py

    with h5py.File(ROOT / "data" / EXAMPLES[example][0], "r") as f:
        x, y = np.asarray(f["x"], dtype=np.float32), np.asarray(f["y"])
    return x, (y.astype(np.float32) if example == "adding-lstm" else y.astype(np.int64))


def bench_nncli(x, y, units: int, batch_size: int, lr: float, steps="auto", example: str = "adding-lstm"):
    data_file, cell, _, _ = EXAMPLES[example]
    if example == "adding-lstm":
        head, target, extra = {"units": 1, "activation": "linear"}, y, {"loss": "mse", "metrics": ["mae"]}
    else:
        head, target, extra = {"units": 3, "activation": "softmax"}, np.eye(3, dtype=np.float32)[y], {}
    config = {"data": {"train": str(ROOT / "data" / data_file)}, "optimizer": "adam", "learning_rate": lr,
              "layers": [{"type": cell, "units": units}, {"type": "dense", **head}], **extra,
              "batch_size": batch_size, "steps_per_execution": steps}
    return nncli_epochs(config, f"{example} (bench)", x, target)


def bench_torch(x, y, units: int, batch_size: int, lr: float, example: str = "adding-lstm"):
    import torch
    from torch import nn

    torch.manual_seed(0)
    lstm = example == "adding-lstm"

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = (nn.LSTM if lstm else nn.RNN)(x.shape[2], units, batch_first=True)
            self.out = nn.Linear(units, 1 if lstm else 3)

        def forward(self, xb):
            _, h = self.rnn(xb)
            return self.out((h[0] if lstm else h)[-1])

    net = Net()
    if lstm:
        with torch.no_grad():  # the same start as nncli's: forget-gate bias 1 (torch's order: i, f, g, o)
            net.rnn.bias_ih_l0.zero_()
            net.rnn.bias_hh_l0.zero_()
            net.rnn.bias_ih_l0[units:2 * units] = 1.0
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=1e-7)
    loss_fn = nn.MSELoss() if lstm else nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    last = {}

    def run_epoch(_):
        net.train()
        total, abs_err = 0.0, 0.0
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), batch_size):
            idx = order[start:start + batch_size]
            xb, yb = xt[idx], yt[idx]
            opt.zero_grad()
            out = net(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            if lstm:
                abs_err += (out.detach() - yb).abs().sum().item()
            else:
                abs_err += (out.detach().argmax(1) == yb).sum().item()
        last["loss"], last["mae" if lstm else "accuracy"] = total / len(xt), abs_err / len(xt)

    return run_epoch, last


def lstm_layer(units: int, batch_size: int, steps: int, features: int):
    """nncli's LSTM layer with seeded parameters (shared variables), a symbolic input of the given
    shape and a random value for it: (layer, params, x, x value)."""
    import pytensor
    import pytensor.tensor as pt

    from nncli.layers import LAYERS
    from nncli.schema import mapping

    cls = LAYERS.get("lstm")
    layer = cls("lstm", mapping({"units": units}, "lstm", cls.keys))
    rng = np.random.default_rng(0)
    shape = (batch_size, steps, features)
    p = {k: pytensor.shared(v) for k, v in layer.init_params(shape[1:], rng).items()}
    return layer, p, pt.tensor("x", dtype="float32", shape=shape), rng.normal(size=shape).astype("float32")


def layer_function(layer, p: dict, x):
    """The layer's forward + backward (the gradients of sum(y^2) for every parameter), compiled."""
    import pytensor
    import pytensor.tensor as pt

    from nncli.layers import Context

    y = layer.linear(x, p, Context(training=True))
    return pytensor.function([x], [y, *pytensor.grad(pt.sum(y * y), list(p.values()))])


def bench_backward(units: int, batch_size: int, steps: int = 30, features: int = 2):
    """One LSTM layer, forward + backward under JAX, in microseconds: nncli's recurrence (scan with
    the hand-arranged backward of nncli/layers/recurrence.py) against pytensor.grad of a plain scan
    and PyTorch's nn.LSTM."""
    import pytensor
    import pytensor.tensor as pt

    layer, p, x, xv = lstm_layer(units, batch_size, steps, features)
    rows = []
    from nncli.layers import batch_shards, recurrence

    slices = batch_shards.shard_count(batch_size, recurrence.loop_work(steps, batch_size, units, 4))
    for fused, shards, name in ((True, "auto", f"nncli (one h U for all gates; the batch in {slices} slices)"),
                                (True, 1, "nncli (one h U for all gates; one slice)"),
                                (False, "auto", "nncli (h U per gate block)")):
        if shards == 1 and slices == 1:
            continue
        old = recurrence.FUSED_GATES, batch_shards.SHARDS
        recurrence.FUSED_GATES, batch_shards.SHARDS = fused, shards
        try:
            fn = layer_function(layer, p, x)
        finally:
            recurrence.FUSED_GATES, batch_shards.SHARDS = old
        rows.append((name, timeit(fn, xv, repeat=30) * 1e6))

    n = units

    def step(xw_t, h, c, U):
        z = xw_t + pt.dot(h, U)
        i, f, o = pt.sigmoid(z[:, :n]), pt.sigmoid(z[:, n:2 * n]), pt.sigmoid(z[:, 3 * n:])
        c = f * c + i * pt.tanh(z[:, 2 * n:3 * n])
        return [o * pt.tanh(c), c]

    h0 = pt.zeros((batch_size, units), dtype="float32")
    xw = (pt.tensordot(x, p["W"], axes=[[2], [0]]) + p["b"]).dimshuffle(1, 0, 2)
    hs, _ = pytensor.scan(step, sequences=[xw], outputs_info=[h0, h0], non_sequences=[p["U"]], strict=True,
                          return_updates=False)
    y = hs[-1]
    fn = pytensor.function([x], [y, *pytensor.grad(pt.sum(y * y), list(p.values()))])
    rows.append(("pytensor.grad of the scan", timeit(fn, xv, repeat=30) * 1e6))
    rows.extend(torch_backward(units, xv))
    return rows


def torch_backward(units: int, xv: np.ndarray) -> list:
    """The same layer in PyTorch (nn.LSTM, the last hidden state, sum of squares, backward), with
    1 and 2 threads; none when torch is not installed."""
    try:
        import torch
    except ImportError:
        return []
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(xv.shape[2], units, batch_first=True)
    x = torch.from_numpy(xv)

    def step(_):
        lstm.zero_grad()
        y = lstm(x)[0][:, -1]
        (y * y).sum().backward()
        return [y.detach().numpy()]
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rows.append((f"PyTorch nn.LSTM, {threads} thread{'s' if threads > 1 else ''}", timeit(step, None, repeat=30) * 1e6))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", choices=sorted(EXAMPLES), default="adding-lstm")
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--units", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the example's")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--steps", default="auto", help="nncli's steps_per_execution (default auto)")
    ap.add_argument("--per-gate", action="store_true",
                    help="nncli's forward loop with one h U product per gate block (the former default)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-ops", action="store_true", help="skip the scan micro-benchmark")
    args = ap.parse_args(argv)
    os.environ.setdefault("NNCLI_BACKEND", "jax")
    from nncli.layers import recurrence

    recurrence.FUSED_GATES = not args.per_gate
    ex = args.example
    _, cell, batch, lr = EXAMPLES[ex]
    batch = args.batch_size or batch
    x, y = load(ex)
    print(f"{ex}: {len(x)} sequences of {x.shape[1]} steps x {x.shape[2]}, {cell} {args.units} units, "
          f"batch {batch}, {args.epochs} timed epochs, {os.cpu_count()} CPUs")
    nncli = bench_nncli(x, y, args.units, batch, lr, steps_arg(args.steps), ex)
    torch_loop = None if args.no_torch else (lambda: bench_torch(x, y, args.units, batch, lr, ex))
    versus_torch(nncli, torch_loop, args.threads, args.epochs, "mae" if ex == "adding-lstm" else "accuracy")
    args.batch_size = batch
    args.no_ops = args.no_ops or ex != "adding-lstm"
    if not args.no_ops:
        for units, steps, features in ((args.units, 30, 2), (128, 50, 32)):
            print(f"\nLSTM layer forward + backward under JAX, batch ({args.batch_size}, {steps}, {features}), "
                  f"{units} units:")
            for name, us in bench_backward(units, args.batch_size, steps, features):
                print(f"  {name:32s} {us:9.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
