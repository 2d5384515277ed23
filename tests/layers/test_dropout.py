"""dropout: training vs inference graphs, the mask against an independent
numpy implementation of the documented hash (under JAX and NUMBA), and an
exact resume of a run that uses dropout and batch_norm (the mask's step
counter and the running statistics both come back from the checkpoint).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from nncli.layers import LAYERS, Context
from nncli.schema import mapping
from support import np_keep_mask, np_lowbias32

# JAX without x64 warns when PyTensor's float64 accumulators are truncated to float32
pytestmark = [pytest.mark.filterwarnings("ignore:Explicitly requested dtype"), pytest.mark.usefixtures("jax_backend")]
RNG = np.random.default_rng(99)


def make_layer(kind: str, name: str | None = None, **config):
    cls = LAYERS.get(kind)
    return cls(name or f"{kind}_1", mapping(config, "layer", cls.keys))


# --- dropout: the numpy reference of the documented counter-based hash (tests/support.py) ---

def test_lowbias32_reference_values():
    """Pin the mixer itself: lowbias32(0) = 0, and a value computed by hand-checked Python ints."""
    def py(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)
    for v in (0, 1, 12345, 0xFFFFFFFF, 0x80000000):
        assert int(np_lowbias32(v)) == py(v)
    assert py(0) == 0 and py(1) != 1


def _dropout_fn(layer, shape, mode):
    x = pt.tensor("x", dtype="float32", shape=shape)
    it = pt.scalar("iterations", dtype="float32")
    y = layer.linear(x, {}, Context(training=True, state={"iterations": it}, seed=SEED))
    return pytensor.function([x, it], y, mode=mode)


SEED = 20240


@pytest.mark.parametrize("mode", ["JAX", "NUMBA"])
def test_dropout_mask_equals_numpy_reference(mode):
    shape, rate = (7, 3, 5), 0.37
    layer = make_layer("dropout", name="drop_a", rate=rate)
    fn = _dropout_fn(layer, shape, mode)
    x = np.ones(shape, dtype=np.float32)
    for step in (0, 1, 2, 1000, 123_456, 2**24 - 1):
        got = np.asarray(fn(x, np.float32(step)))
        keep = np_keep_mask(shape, step, SEED, "drop_a", rate)
        np.testing.assert_array_equal(got != 0, keep, err_msg=f"{mode}, step {step}")
        np.testing.assert_allclose(got[keep], np.float32(1 / (1 - rate)), rtol=1e-6)


def test_dropout_is_identity_in_inference():
    layer = make_layer("dropout", rate=0.5)
    x = pt.matrix("x", dtype="float32")
    xv = RNG.normal(size=(16, 9)).astype("float32")
    assert layer.linear(x, {}, Context(training=False)) is x
    np.testing.assert_array_equal(pytensor.function([x], layer.linear(x, {}, Context(training=False)))(xv), xv)


def test_dropout_training_scales_and_drops_the_rate():
    rate, shape = 0.3, (64, 50)
    layer = make_layer("dropout", rate=rate)
    fn = _dropout_fn(layer, shape, None)
    xv = RNG.uniform(0.5, 1.5, size=shape).astype("float32")
    outs = np.stack([np.asarray(fn(xv, np.float32(t))) for t in range(6)])
    dropped = (outs == 0).mean()
    assert abs(dropped - rate) < 0.015, dropped
    assert abs(outs.mean() / xv.mean() - 1.0) < 0.03
    kept = outs != 0
    np.testing.assert_allclose(outs[kept], np.broadcast_to(xv / (1 - rate), outs.shape)[kept], rtol=1e-6)
    # a fresh mask every step; the same mask for the same step
    assert all((outs[i] != 0).tolist() != (outs[i + 1] != 0).tolist() for i in range(5))
    np.testing.assert_array_equal(np.asarray(fn(xv, np.float32(3))), outs[3])
    # per-row drop rates are all near the rate (no structure along the batch axis)
    assert np.abs((outs == 0).mean(axis=(0, 2)) - rate).max() < 0.1


def test_dropout_masks_depend_on_layer_name_and_seed():
    shape = (32, 40)
    a = np_keep_mask(shape, 5, SEED, "drop_a", 0.5)
    assert (a != np_keep_mask(shape, 5, SEED, "drop_b", 0.5)).mean() > 0.4
    assert (a != np_keep_mask(shape, 5, SEED + 1, "drop_a", 0.5)).mean() > 0.4
    layer = make_layer("dropout", name="drop_b", rate=0.5)
    got = np.asarray(_dropout_fn(layer, shape, None)(np.ones(shape, "float32"), np.float32(5)))
    np.testing.assert_array_equal(got != 0, np_keep_mask(shape, 5, SEED, "drop_b", 0.5))


def test_dropout_rate_zero_is_identity_and_rate_one_is_rejected():
    from nncli.schema import Invalid

    layer = make_layer("dropout", rate=0.0)
    x = pt.matrix("x", dtype="float32")
    assert layer.linear(x, {}, Context(training=True, state={})) is x
    with pytest.raises(Invalid, match="rate"):
        make_layer("dropout", rate=1.0)


# --- through the trainer: checkpointed state and an exact resume -------------------

CONFIG = """
name: reg
seed: 3
data:
  train: {train}
  normalize: standard
layers:
  - {{type: dense, units: 8, activation: relu}}
  - {{type: batch_norm, momentum: 0.8}}
  - {{type: dropout, rate: 0.4}}
  - {{type: dense, units: 3, activation: softmax}}
optimizer: adam
learning_rate: 0.01
epochs: {epochs}
batch_size: 16
early_stopping: false
checkpoint_interval: 0
"""


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=100)
    x = rng.normal(size=(100, 16)).astype("float32") + y[:, None].astype("float32")
    path = tmp_path_factory.mktemp("reg") / "small.h5"
    with h5py.File(path, "w") as f:
        f["x"] = x
        f["y"] = y
    return path


def test_resume_with_dropout_and_batch_norm_is_exact(small_h5, tmp_path):
    from nncli import checkpoint
    from nncli.training import trainer

    straight = tmp_path / "straight.yaml"
    straight.write_text(CONFIG.format(train=small_h5, epochs=4))
    trainer.train(straight, output=str(tmp_path / "a"))
    trainer.train(straight, output=str(tmp_path / "b"), epochs=2)
    trainer.train(straight, output=str(tmp_path / "b"), resume=True, epochs=4)  # the run was of 2 epochs: raise it
    a = checkpoint.load(tmp_path / "a" / "last.h5")
    b = checkpoint.load(tmp_path / "b" / "last.h5")
    assert {"batch_norm_2/running_mean", "batch_norm_2/running_var"} <= set(a.params)
    assert "batch_norm_2/running_mean" not in a.trainable
    assert not np.allclose(a.params["batch_norm_2/running_var"], 1.0)  # the running stats moved
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
    assert a.history["loss"] == b.history["loss"]
