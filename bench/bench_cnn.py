"""Benchmark: the digits-cnn network trained by nncli (JAX backend) vs a plain
PyTorch CPU loop of the same network on the same data, in the same process.

    python bench/bench_cnn.py [--epochs 8] [--threads N] [--conv auto|native|im2col] [--no-torch] [--no-ops]

Prints the median seconds per epoch of each and their ratio, then the
pooling implementations (reshape + max vs stacked offset slices) and the
conv2d im2col step, forward + backward under JAX. Not part of the tests.

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


def load_digits():
    import h5py

    with h5py.File(ROOT / "data" / "digits.h5", "r") as f:
        x = np.asarray(f["x"], dtype=np.float32) / 16.0     # minmax of 0..16 pixels
        y = np.asarray(f["y"], dtype=np.int64)
    return x, y


def cnn_layers():
    import yaml

    return yaml.safe_load((ROOT / "configs" / "digits-cnn.yaml").read_text())["layers"]


def bench_nncli(x, y, batch_size: int, lr: float, steps="auto"):
    config = {"data": {"train": str(ROOT / "data" / "digits.h5")}, "layers": cnn_layers(), "optimizer": "adam",
              "learning_rate": lr, "batch_size": batch_size, "steps_per_execution": steps}
    return nncli_epochs(config, "digits-cnn (bench)", x, np.eye(10, dtype=np.float32)[y])


def bench_torch(x, y, batch_size: int, lr: float):
    import torch
    from torch import nn

    torch.manual_seed(0)
    # configs/digits-cnn.yaml: conv + relu + batch_norm + pool, twice; dense + dropout; softmax
    # (Keras' batch-norm momentum 0.99 is PyTorch's 0.01, epsilon 1e-3)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(32, eps=1e-3, momentum=0.01), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(64, eps=1e-3, momentum=0.01), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.4), nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    xt = torch.from_numpy(x.reshape(-1, 1, 8, 8))
    yt = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    last = {}

    def run_epoch(_):
        net.train()
        total, correct = 0.0, 0
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), batch_size):
            idx = order[start:start + batch_size]
            xb, yb = xt[idx], yt[idx]
            opt.zero_grad()
            out = net(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
        last["loss"], last["accuracy"] = total / len(xt), correct / len(xt)

    return run_epoch, last


def bench_ops():
    """Forward + backward of the pooling variants and of conv2d, under JAX (microseconds)."""
    from functools import reduce

    import pytensor
    import pytensor.tensor as pt

    from nncli.layers import LAYERS, Context, convolution
    from nncli.schema import mapping

    def _window_slices(x, kh, kw, sh, sw, ho, wo):
        """The kh*kw strided slices x[:, :, i::sh, j::sw] of output size (ho, wo), offset (i, j) row-major."""
        return [x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                for i in range(kh) for j in range(kw)]

    def layer(kind, **cfg):
        cls = LAYERS.get(kind)
        obj = cls(kind, mapping(cfg, kind, cls.keys))
        return obj

    rows = []
    rng = np.random.default_rng(0)
    for shape in [(32, 16, 8, 8), (64, 32, 32, 32)]:
        xv = rng.normal(size=shape).astype("float32")
        x = pt.tensor("x", dtype="float32", shape=shape)
        pool = layer("max_pool2d", pool_size=2)
        pool.output_shape(shape[1:])
        ho, wo = shape[2] // 2, shape[3] // 2
        variants = {
            "reshape+max (used)": pool.linear(x, {}, Context(training=False)),
            "stacked slices+max": pt.max(pt.stack(_window_slices(x, 2, 2, 2, 2, ho, wo), axis=2), axis=2),
        }
        for name, y in variants.items():
            fn = pytensor.function([x], [y, pytensor.grad(pt.sum(y * y), x)])
            rows.append((f"max_pool2d 2x2 {shape}", name, timeit(fn, xv) * 1e6))
        overlapping = layer("max_pool2d", pool_size=3, stride=1)
        overlapping.output_shape(shape[1:])
        ho, wo = shape[2] - 2, shape[3] - 2
        variants = {
            "separable maximum (used)": overlapping.linear(x, {}, Context(training=False)),
            "maximum of 9 slices": reduce(pt.maximum, _window_slices(x, 3, 3, 1, 1, ho, wo)),
            "stacked 9 slices+max": pt.max(pt.stack(_window_slices(x, 3, 3, 1, 1, ho, wo), axis=2), axis=2),
        }
        for name, y in variants.items():
            fn = pytensor.function([x], [y, pytensor.grad(pt.sum(y * y), x)])
            rows.append((f"max_pool2d 3x3/1 {shape}", name, timeit(fn, xv) * 1e6))
        conv = layer("conv2d", filters=shape[1], kernel_size=3, padding="same")
        conv.output_shape(shape[1:])
        W = pytensor.shared(rng.normal(size=(shape[1], shape[1], 3, 3)).astype("float32") * 0.1)
        b = pytensor.shared(np.zeros(shape[1], dtype="float32"))
        for impl, how in (("im2col", "im2col + tensordot"), ("native", "XLA conv_general_dilated")):
            convolution.IMPLEMENTATION = impl
            y = conv.linear(x, {"W": W, "b": b}, Context(training=False))
            convolution.IMPLEMENTATION = "auto"
            used = " (used)" if impl == ("native" if convolution.use_native() else "im2col") else ""
            fwd = pytensor.function([x], y)
            fn = pytensor.function([x], [y, *pytensor.grad(pt.sum(y * y), [x, W, b])])
            rows.append((f"conv2d 3x3 same {shape}", f"{how}{used}, fwd", timeit(lambda v: [fwd(v)], xv, repeat=5) * 1e6))
            rows.append((f"conv2d 3x3 same {shape}", f"{how}{used}, fwd+bwd", timeit(fn, xv, repeat=5) * 1e6))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on a busy or 2-core machine more threads "
                         "make torch's OpenMP spin and run slower; 0 = torch's default)")
    ap.add_argument("--steps", default="auto", help="nncli's steps_per_execution (default auto)")
    ap.add_argument("--conv", choices=["auto", "native", "im2col"], default="auto",
                    help="nncli's convolution (nncli/layers/convolution.py; auto: im2col on the CPU)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-ops", action="store_true", help="skip the per-op micro-benchmark")
    args = ap.parse_args(argv)
    os.environ.setdefault("NNCLI_BACKEND", "jax")
    from nncli.layers import convolution

    convolution.IMPLEMENTATION = args.conv
    x, y = load_digits()
    lr = 0.002
    print(f"digits-cnn: {len(x)} examples, batch {args.batch_size}, {args.epochs} timed epochs, "
          f"{os.cpu_count()} CPUs")
    nncli = bench_nncli(x, y, args.batch_size, lr, steps_arg(args.steps))
    torch_loop = None if args.no_torch else (lambda: bench_torch(x, y, args.batch_size, lr))
    versus_torch(nncli, torch_loop, args.threads, args.epochs, "accuracy")
    convolution.IMPLEMENTATION = "auto"
    if args.no_ops:
        return
    print("\nforward + backward under JAX, best of 5:")
    for what, how, us in bench_ops():
        print(f"  {what:34s} {how:44s} {us:9.1f} us")


if __name__ == "__main__":
    main()
