"""The recurrent layers' batch split across CPU devices (nncli/layers/batch_shards.py).

The split graph is checked in a child process that asks JAX for 2 CPU devices
(NNCLI_CPU_DEVICES=2; a test process may have started JAX with another count),
in float64 against the numpy step loops and central finite differences of
tests/layers/test_recurrent.py, which share no code with nncli. The training
checks run `nncli train` as a child process with 2 devices and with 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from support import assert_same_arrays, checkpoint_arrays, nncli_executable, write_config

HERE = Path(__file__).resolve().parent


# --- the choice --------------------------------------------------------------------

@pytest.fixture
def devices(monkeypatch):
    """shard_count with a given number of CPU devices under the JAX mode."""
    import pytensor

    from nncli.layers import batch_shards

    monkeypatch.setattr(pytensor.config, "mode", "JAX")

    def set_count(n):
        monkeypatch.setattr(batch_shards, "_cpu_devices", lambda: [object()] * n)
        return batch_shards.shard_count

    return set_count


def test_two_devices_split_a_batch_that_halves_into_slices_of_min_rows(devices):
    count = devices(2)
    assert count(64) == 2 and count(16) == 2
    assert count(63) == 1            # odd: no equal slices
    assert count(15) == 1 and count(8) == 1   # slices of fewer than MIN_ROWS (8) rows
    assert count(None) == 1          # no static batch size


def test_a_piece_with_little_work_is_not_split(devices):
    from nncli.layers import batch_shards

    count = devices(2)
    assert count(64, work=batch_shards.MIN_WORK) == 2
    assert count(64, work=batch_shards.MIN_WORK - 1) == 1
    # the shipped examples: adding-lstm (batch 64, 30 steps, 32 units, 4 gates) splits,
    # sequence-rnn (batch 32, 15 steps, 32 units, 1 gate) does not; the count written out here
    assert count(64, work=30 * 64 * 32 * 4 * 32) == 2
    assert count(32, work=15 * 32 * 32 * 1 * 32) == 1
    from nncli.layers.recurrence import loop_work

    assert loop_work(30, 64, 32, 4) == 30 * 64 * 32 * 4 * 32 == 7_864_320


def test_more_devices_take_the_largest_count_that_divides_the_batch(devices):
    count = devices(8)
    assert count(64) == 8
    assert count(48) == 6            # 8 and 7 do not divide 48; slices of 8 rows
    assert count(40) == 5
    assert count(24) == 3            # 24 / 3 = 8 rows each; 4 would leave 6


def test_one_device_and_shards_1_build_the_plain_graph(devices, monkeypatch):
    from nncli.layers import batch_shards

    assert devices(1)(64) == 1
    count = devices(2)
    monkeypatch.setattr(batch_shards, "SHARDS", 1)
    assert count(64) == 1
    monkeypatch.setattr(batch_shards, "SHARDS", 4)     # at most 4 slices, where 8 devices could
    assert devices(8)(64) == 4


def test_cpu_devices_is_empty_outside_the_jax_mode(monkeypatch):
    import pytensor

    from nncli.layers import batch_shards

    monkeypatch.setattr(pytensor.config, "mode", "FAST_RUN")
    assert batch_shards._cpu_devices() == []
    assert batch_shards.shard_count(64) == 1


def test_cpu_device_count_from_the_environment(monkeypatch):
    from nncli import backend
    from nncli.errors import ConfigError

    monkeypatch.setenv("NNCLI_CPU_DEVICES", "3")
    assert backend.cpu_device_count() == 3
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("NNCLI_CPU_DEVICES", bad)
        with pytest.raises(ConfigError, match="NNCLI_CPU_DEVICES"):
            backend.cpu_device_count()
    monkeypatch.delenv("NNCLI_CPU_DEVICES")
    assert backend.cpu_device_count() == max(1, min(len(os.sched_getaffinity(0)), backend.MAX_CPU_DEVICES))


# --- the split graph against numpy and finite differences (a child process) -----------------

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path[:0] = [{layers!r}, {tests!r}]
    from nncli import backend
    backend.activate(backend.choose("jax", "cpu"))
    import jax
    assert len(jax.devices("cpu")) == 2, jax.devices()
    import pytensor
    import pytensor.tensor as pt
    from nncli.layers import Context
    from nncli.layers import batch_shards
    from nncli.layers.batch_shards import BatchShards
    import test_recurrent as tr

    batch_shards.MIN_WORK = 0        # layers this small are not worth a split: split them all the same

    B, T, F, H = 16, tr.T, tr.F, tr.H
    rng = np.random.default_rng(5)
    checked = 0
    with tr.float64_jax():
        for kind in tr.KINDS:
            for seq in (False, True):
                params = tr.random_params(kind, rng, dtype="float64")
                x_val = rng.normal(size=(B, T, F))
                r_val = rng.normal(size=(B, T, 2 * H) if seq else (B, 2 * H))
                x = pt.tensor("x", dtype="float64", shape=(B, T, F))
                sym = {{k: pt.tensor(k, dtype="float64", shape=v.shape) for k, v in params.items()}}
                layer = tr.make_layer(kind, units=H, bidirectional=True, return_sequences=seq)
                loss = pt.sum(layer.linear(x, sym, Context(training=True)) * r_val)
                fn = pytensor.function([x, *sym.values()], [loss, *pytensor.grad(loss, [x, *sym.values()])])
                split = [n.op for n in fn.maker.fgraph.apply_nodes if isinstance(n.op, BatchShards)]
                # forward and backward loops of both directions, each on 2 slices of 8 rows
                assert len(split) == 4 and all(op.n == 2 for op in split), split
                got = fn(x_val, *params.values())

                def reference():
                    return float(np.sum(tr.np_layer(kind, x_val, params, True, seq) * r_val))

                np.testing.assert_allclose(got[0], reference(), rtol=1e-10)
                for g, (name, value) in zip(got[1:], {{"x": x_val, **params}}.items()):
                    np.testing.assert_allclose(g, tr.central_differences(reference, value), rtol=1e-6,
                                               atol=1e-8, err_msg=f"{{kind}} seq={{seq}} d/d{{name}}")
                    checked += 1
    print("checked", checked)
""")


def test_split_layers_match_numpy_and_finite_differences():
    """simple_rnn, lstm and gru, bidirectional, last state and every step: loss and every gradient."""
    code = CHILD.format(layers=str(HERE), tests=str(HERE.parent))
    env = {**os.environ, "NNCLI_CPU_DEVICES": "2"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # 3 kinds x 2 outputs x (x, W, U, b, W_reverse, U_reverse, b_reverse (+ 2 recurrent biases for gru))
    assert r.stdout.split() == ["checked", str(2 * (7 + 7 + 9))], r.stdout


# --- training: `nncli train` with 2 devices and with 1 ------------------------------------

CONFIG = """
name: split
seed: 3
device: cpu
backend: jax
data: {{train: {data}, validation: 0.25}}
layers:
  - {{type: lstm, units: 64}}
  - {{type: dense, units: 1}}
loss: mse
optimizer: adam
learning_rate: 0.01
epochs: 4
batch_size: 32
checkpoint_interval: 0
"""


@pytest.fixture(scope="module")
def lstm_config(tmp_path_factory):
    import h5py

    folder = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(0)
    # 20 steps x batch 32 x 64 units x 4 gates x 64: 10.5M multiply-adds a loop, above MIN_WORK (2M)
    x = rng.normal(size=(256, 20, 2)).astype("float32")
    y = x[:, :, 0].sum(axis=1, keepdims=True).astype("float32")
    with h5py.File(folder / "seq.h5", "w") as f:
        f["x"], f["y"] = x, y
    return write_config(folder, CONFIG.format(data=folder / "seq.h5"))


def train(config, out, devices, *extra, notes=None):
    env = {**os.environ, "NNCLI_CPU_DEVICES": str(devices)}
    r = subprocess.run([nncli_executable(), "train", str(config), "-o", str(out), *extra],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    if notes is not None:
        notes.extend(line for line in r.stderr.splitlines() if line.startswith("note:"))
    return out / "last.h5"


def batch_slices(path):
    import h5py

    with h5py.File(path, "r") as f:
        return json.loads(f["rng"].attrs["state"])["batch_slices"]


def test_split_training_resumes_bit_exactly_and_agrees_with_one_device(lstm_config, tmp_path):
    notes: list = []
    full = train(lstm_config, tmp_path / "full", 2)
    part = train(lstm_config, tmp_path / "part", 2, "--epochs", "2")
    resumed = train(lstm_config, tmp_path / "part", 2, "--resume", "--epochs", "4", notes=notes)
    assert_same_arrays(full, resumed, groups=("params", "optimizer"))
    assert notes == []                               # the same slices: nothing to say
    one = train(lstm_config, tmp_path / "one", 1)
    # the checkpoint records the slices: the layer's forward and backward pieces, 2 each, or none
    assert batch_slices(full) == [2, 2] and batch_slices(one) == []
    a, b = checkpoint_arrays(full, ("history",)), checkpoint_arrays(one, ("history",))
    # the same training to float32 rounding: the slices' weight gradients are added in another order
    np.testing.assert_allclose(a["history/loss"], b["history/loss"], rtol=1e-4)
    pa, pb = checkpoint_arrays(full), checkpoint_arrays(one)
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-3, atol=1e-4, err_msg=k)
    # ... and not to the bit: the 2-device run did take the split graph
    assert any(not np.array_equal(pa[k], pb[k]) for k in pa)
    assert part == resumed           # the same run folder, continued
    # resumed with another device count: said on stderr, and the run goes on with this process's slices
    train(lstm_config, tmp_path / "one", 2, "--resume", "--epochs", "5", notes=notes)
    assert notes == [f"note: {tmp_path / 'one' / 'last.h5'} was trained with its recurrent layers' batches in "
                     "one piece; this process runs them in 2 slices (one slice per CPU device; NNCLI_CPU_DEVICES "
                     "sets the count): the continued run matches an uninterrupted one to float32 rounding, not bit "
                     "for bit"]
    assert batch_slices(one) == [2, 2]
