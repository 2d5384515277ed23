"""Benchmark: the sequence examples (configs/majority-tcn.yaml, configs/majority-transformer.yaml,
configs/mnist1d-cnn.yaml, configs/mnist1d-transformer.yaml) trained by nncli (JAX backend) vs
plain PyTorch CPU loops of the same networks on the same data, in the same process, epochs
interleaved.

    python bench/bench_seq.py [--epochs 8] [--threads 1] [--which tcn transformer mnist1d-cnn
                              mnist1d-transformer] [--large]

--large: the majority networks at a larger size (sequences of 128 steps, 64 channels / features,
random data of the same count) instead of the shipped 15 steps. Prints the median seconds per
epoch of each and their ratio. Not part of the tests; torch is optional.
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

from timing import nncli_epochs, versus_torch  # noqa: E402


MNIST1D = ("mnist1d-cnn", "mnist1d-transformer")


def data_file(which: str) -> Path:
    return ROOT / "data" / ("mnist1d.h5" if which in MNIST1D else "majority.h5")


def load(which: str, large: bool):
    import h5py

    with h5py.File(data_file(which), "r") as f:
        x = np.asarray(f["x"], dtype=np.float32)
        y = np.asarray(f["y"], dtype=np.int64)
    if large and which not in MNIST1D:   # same count, longer and wider sequences: a TCN/transformer of a more usual size
        rng = np.random.default_rng(0)
        x = rng.normal(size=(len(x), 128, 8)).astype(np.float32)
        y = (x[:, :, :3].sum(axis=1).argmax(axis=1)).astype(np.int64)
    return x, y


def layers(which: str, large: bool) -> list:
    import yaml

    name = which if which in MNIST1D else f"majority-{which}"
    spec = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    out = spec["layers"]
    if large and which not in MNIST1D:
        for layer in out:
            if layer["type"] in ("conv1d",):
                layer["filters"] = 64
            if layer["type"] == "dense" and layer is not out[-1]:
                layer["units"] = 64 if layer["units"] == 16 else 128
            if layer["type"] == "multi_head_attention":
                layer.update(num_heads=4, key_dim=16)
    return out, spec["learning_rate"], spec["batch_size"]


def torch_net(which: str, large: bool, channels: int):
    import torch
    from torch import nn

    class TCN(nn.Module):
        """Two causal conv1d (the second dilated 2), relu, mean over time, linear (softmax in the loss)."""

        def __init__(self, f):
            super().__init__()
            self.c1, self.c2, self.out = nn.Conv1d(channels, f, 3), nn.Conv1d(f, f, 3, dilation=2), nn.Linear(f, 3)

        def forward(self, x):                       # (N, T, C)
            h = x.transpose(1, 2)
            h = torch.relu(self.c1(nn.functional.pad(h, (2, 0))))
            h = torch.relu(self.c2(nn.functional.pad(h, (4, 0))))
            return self.out(h.mean(dim=2))

    class Encoder(nn.Module):
        """dense, + positions, self-attention + residual, layer_norm, dense relu, dense + residual,
        layer_norm, mean, linear (configs/majority-transformer.yaml)."""

        def __init__(self, d, heads, ff, t):
            super().__init__()
            self.embed = nn.Linear(channels, d)
            self.pos = nn.Parameter(torch.randn(t, d) * 0.1)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.n1, self.n2 = nn.LayerNorm(d, eps=1e-3), nn.LayerNorm(d, eps=1e-3)
            self.ff1, self.ff2, self.out = nn.Linear(d, ff), nn.Linear(ff, d), nn.Linear(d, 3)

        def forward(self, x):
            h = self.embed(x) + self.pos
            h = self.n1(h + self.attn(h, h, h, need_weights=False)[0])
            h = self.n2(h + self.ff2(torch.relu(self.ff1(h))))
            return self.out(h.mean(dim=1))

    class MNIST1DCNN(nn.Module):
        """Three conv1d of 25 channels (kernel 5, 3, 3; stride 2; padding 1), relu, linear
        (configs/mnist1d-cnn.yaml)."""

        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv1d(1, 25, 5, 2, 1), nn.Conv1d(25, 25, 3, 2, 1)
            self.c3, self.out = nn.Conv1d(25, 25, 3, 2, 1), nn.Linear(125, 10)

        def forward(self, x):                       # (N, 40)
            h = x[:, None, :]
            for conv in (self.c1, self.c2, self.c3):
                h = torch.relu(conv(h))
            return self.out(h.flatten(1))

    class MNIST1DTransformer(nn.Module):
        """conv1d stem (32, kernel 5, stride 2, padding 2, relu), + positions, self-attention (4
        heads) + residual, layer_norm, dense relu 64, dense 32 + residual, layer_norm, mean, linear
        (configs/mnist1d-transformer.yaml)."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv1d(1, 32, 5, 2, 2)
            self.pos = nn.Parameter(torch.randn(20, 32) * 0.1)
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
            self.n1, self.n2 = nn.LayerNorm(32, eps=1e-3), nn.LayerNorm(32, eps=1e-3)
            self.ff1, self.ff2, self.out = nn.Linear(32, 64), nn.Linear(64, 32), nn.Linear(32, 10)

        def forward(self, x):                       # (N, 40)
            h = torch.relu(self.stem(x[:, None, :])).transpose(1, 2) + self.pos
            h = self.n1(h + self.attn(h, h, h, need_weights=False)[0])
            h = self.n2(h + self.ff2(torch.relu(self.ff1(h))))
            return self.out(h.mean(dim=1))

    if which == "mnist1d-cnn":
        return MNIST1DCNN()
    if which == "mnist1d-transformer":
        return MNIST1DTransformer()
    if which == "tcn":
        return TCN(64 if large else 16)
    return Encoder(64 if large else 16, 4 if large else 2, 128 if large else 32, 128 if large else 15)


def bench_torch(which, large, x, y, batch_size, lr):
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = torch_net(which, large, x.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    last = {}

    def run_epoch(_):
        total, correct = 0.0, 0
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            out = net(xt[idx])
            loss = loss_fn(out, yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
        last["loss"], last["accuracy"] = total / len(xt), correct / len(xt)

    return run_epoch, last


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--which", nargs="+", default=["tcn", "transformer", *MNIST1D],
                    choices=["tcn", "transformer", *MNIST1D])
    ap.add_argument("--large", action="store_true", help="128 steps, 64 channels/features")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("NNCLI_BACKEND", "jax")
    for which in args.which:
        x, y = load(which, args.large)
        classes = int(y.max()) + 1
        net_layers, lr, batch = layers(which, args.large)
        name = which if which in MNIST1D else f"majority-{which}"
        print(f"\n{name}{' (large)' if args.large and which not in MNIST1D else ''}: x {x.shape}, batch {batch}, "
              f"{args.epochs} timed epochs, {os.cpu_count()} CPUs")
        config = {"data": {"train": str(data_file(which))}, "layers": net_layers, "optimizer": "adam",
                  "learning_rate": lr, "batch_size": batch, "loss": "categorical_crossentropy",
                  "metrics": ["accuracy"]}
        nncli = nncli_epochs(config, f"{name} (bench)", x, np.eye(classes, dtype=np.float32)[y])
        make_torch = None if args.no_torch else (lambda: bench_torch(which, args.large, x, y, batch, lr))
        versus_torch(nncli, make_torch, args.threads, args.epochs, "accuracy")


if __name__ == "__main__":
    main()
