"""Helpers shared by the tests (fixtures live in conftest.py): paths of the shipped configs and
data, the installed `nncli` executable, checkpoint comparisons, error-line checks and configs."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import zlib
from pathlib import Path

import numpy as np

from nncli import progress

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DATA = ROOT / "data"


def nncli_executable() -> str:
    """The installed `nncli` entry point next to this Python."""
    exe = Path(sys.executable).with_name("nncli")
    return str(exe) if exe.exists() else shutil.which("nncli")


def checkpoint_arrays(path, groups=("params",)) -> dict:
    """Every dataset under the given groups of a checkpoint, read with h5py alone."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for group in groups:
            f[group].visititems(lambda k, v: out.__setitem__(f"{group}/{k}", v[()])
                                if isinstance(v, h5py.Dataset) else None)
    return out


def assert_same_arrays(a, b, groups=("params",)) -> None:
    """Two checkpoints hold bit-identical arrays under `groups`."""
    pa, pb = checkpoint_arrays(a, groups), checkpoint_arrays(b, groups)
    assert pa.keys() == pb.keys() and pa
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


class InterruptAt(progress.Silent):
    """A reporter that sends this process SIGINT once a given epoch has done at least `batch`
    minibatches; `fired_at` is how many it had done (a call may train several, nncli/steps.py)."""

    def __init__(self, epoch, batch):
        self.epoch, self.at, self.current, self.fired_at = epoch, batch, 0, None

    def epoch_start(self, epoch, epochs, batches, start_batch=0):
        self.current = epoch

    def batch(self, done, logs, samples):
        if self.current == self.epoch and done >= self.at and self.fired_at is None:
            self.fired_at = done
            os.kill(os.getpid(), signal.SIGINT)


def write_config(folder: Path, text: str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def error_line(stderr: str) -> str:
    """The one `Error:` line, last on stderr (progress lines may precede it); no traceback."""
    lines = stderr.splitlines()
    errors = [l for l in lines if l.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    return errors[0]


BLOBS_CONFIG = """
name: blobs
seed: 1
data:
  train: {train}
  validation: 0.2
  normalize: standard
layers:
  - {{type: dense, units: 8, activation: tanh}}
  - {{type: dense, units: 3, activation: softmax}}
optimizer: adam
learning_rate: 0.05
epochs: 6
batch_size: 16
checkpoint_interval: 0
"""


def invoke(*args):
    """`nncli ARGS` in this process (click's CliRunner): the result has exit_code, stdout, stderr."""
    from click.testing import CliRunner

    from nncli.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


# --- layer checks shared by tests/layers (forward on a backend, gradients vs finite differences) ---

def compile_layer(layer, in_shape, param_shapes, mode=None, dtype="float32", ctx=None):
    """fn(x, *params) -> layer.linear(x) for a static input shape (batch axis first), compiled in
    PyTensor `mode` ("JAX", "NUMBA", "FAST_COMPILE", ...) at `dtype`."""
    import pytensor
    import pytensor.tensor as pt

    from nncli.layers import Context

    with pytensor.config.change_flags(floatX=dtype):
        x = pt.tensor("x", dtype=dtype, shape=tuple(in_shape))
        sym = {k: pt.tensor(k, dtype=dtype, shape=tuple(s)) for k, s in param_shapes.items()}
        y = layer.linear(x, sym, ctx or Context(training=False))
        return pytensor.function([x, *sym.values()], y, mode=mode)


def compile_layers(items, mode=None, dtype="float32"):
    """One compiled function for several layers: items are (layer, in_shape, param_shapes); it takes
    [x, *params] of every item in order and returns every layer's output (one compile for many cases,
    which is what a test pays for under JAX)."""
    import pytensor
    import pytensor.tensor as pt

    from nncli.layers import Context

    inputs, outputs = [], []
    with pytensor.config.change_flags(floatX=dtype):
        for i, (layer, in_shape, param_shapes) in enumerate(items):
            x = pt.tensor(f"x{i}", dtype=dtype, shape=tuple(in_shape))
            sym = {k: pt.tensor(f"{k}{i}", dtype=dtype, shape=tuple(v)) for k, v in param_shapes.items()}
            inputs += [x, *sym.values()]
            outputs.append(layer.linear(x, sym, Context(training=False)))
        return pytensor.function(inputs, outputs, mode=mode)


def central_fd(f, arrays, which, eps=1e-6, count=12, rng=None):
    """Central differences of scalar f(*arrays) w.r.t. `count` random entries of arrays[which]."""
    rng = rng or np.random.default_rng(0)
    a = arrays[which]
    idx = [tuple(int(rng.integers(0, d)) for d in a.shape) for _ in range(count)]
    out = []
    for ix in idx:
        plus = [v.copy() for v in arrays]
        minus = [v.copy() for v in arrays]
        plus[which][ix] += eps
        minus[which][ix] -= eps
        out.append((f(*plus) - f(*minus)) / (2 * eps))
    return idx, np.array(out)


def check_layer_gradients(layer, in_shape, param_arrays, rng, x=None, count=12, rtol=1e-6, atol=1e-7):
    """d/d(input, params) of sum(R * layer(x)) against central differences, in float64 under
    PyTensor's FAST_COMPILE (Python/C thunks; JAX without x64 would compute in float32)."""
    import pytensor
    import pytensor.tensor as pt

    from nncli.layers import Context

    with pytensor.config.change_flags(floatX="float64"):
        xs = pt.tensor("x", dtype="float64", shape=tuple(in_shape))
        sym = {k: pt.tensor(k, dtype="float64", shape=v.shape) for k, v in param_arrays.items()}
        y = layer.linear(xs, sym, Context(training=False))
        R = rng.normal(size=[int(d) for d in y.type.shape])
        cost = pt.sum(pt.constant(R) * y)
        wrt = [xs, *sym.values()]
        fn = pytensor.function(wrt, [cost, *pytensor.grad(cost, wrt)], mode="FAST_COMPILE")
    arrays = [rng.normal(size=in_shape) if x is None else np.asarray(x, dtype=np.float64),
              *[np.asarray(v, dtype=np.float64) for v in param_arrays.values()]]
    _, *grads = fn(*arrays)

    def f(*a):
        return float(fn(*a)[0])

    for which, g in enumerate(grads):
        idx, fd = central_fd(f, arrays, which, count=count, rng=rng)
        np.testing.assert_allclose([g[i] for i in idx], fd, rtol=rtol, atol=atol,
                                   err_msg=f"{layer.name}: gradient wrt {['x', *param_arrays][which]}")


# --- the numpy reference of dropout's counter-based mask (nncli/layers/dropout.py's docstring) ---

M32 = np.uint64(0xFFFFFFFF)


def np_lowbias32(x):
    x = np.asarray(x, dtype=np.uint64) & M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & M32
    x ^= x >> np.uint64(16)
    return x


def np_keep_mask(shape, step, seed, name, rate):
    """The keep-mask of `shape` (batch axis first) at training step `step` for layer `name`."""
    key = np_lowbias32(np_lowbias32(seed) ^ np.uint64(zlib.crc32(name.encode())))
    s = np_lowbias32((np.uint64(step) + key) & M32)
    idx = np.arange(int(np.prod(shape)), dtype=np.uint64)
    h = np_lowbias32((np_lowbias32(idx ^ s) + key) & M32)
    return ((h >> np.uint64(8)).astype(np.float64) * 2.0**-24 < 1.0 - rate).reshape(shape)
