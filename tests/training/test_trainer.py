"""Training: determinism, exact resume, interrupts, NaN stop, checkpoint contents."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest

from support import BLOBS_CONFIG, InterruptAt, assert_same_arrays, checkpoint_arrays, write_config
from nncli import checkpoint
from nncli.training import trainer
from nncli.errors import Interrupted, TrainingError


def params_of(path):
    return checkpoint_arrays(path)


def assert_same_params(a, b):
    assert_same_arrays(a, b)


@pytest.fixture(scope="module")
def blobs_config(tmp_path_factory, blobs_csv):
    """72 training rows in batches of 16: 5 minibatches an epoch, trained 2 per call, the fifth
    through the single step (see nncli/steps.py)."""
    folder = tmp_path_factory.mktemp("cfg")
    return write_config(folder, BLOBS_CONFIG.format(train=blobs_csv) + "steps_per_execution: 2\n")


@pytest.fixture(scope="module")
def six_epochs(blobs_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("six") / "run"
    trainer.train(blobs_config, output=str(out), epochs=6)
    return out


def test_same_seed_same_weights(blobs_config, six_epochs, tmp_path):
    trainer.train(blobs_config, output=str(tmp_path / "again"), epochs=6)
    assert_same_params(six_epochs / "last.h5", tmp_path / "again" / "last.h5")


def test_other_seed_other_weights(blobs_config, six_epochs, tmp_path):
    trainer.train(blobs_config, output=str(tmp_path / "other"), epochs=6, seed=99)
    a, b = params_of(six_epochs / "last.h5"), params_of(tmp_path / "other" / "last.h5")
    assert not np.array_equal(a["params/dense_1/W"], b["params/dense_1/W"])


def test_resume_is_bit_exact(blobs_config, six_epochs, tmp_path):
    out = tmp_path / "split"
    trainer.train(blobs_config, output=str(out), epochs=3)
    assert checkpoint.load(out / "last.h5").epoch == 3
    result = trainer.train(blobs_config, output=str(out), epochs=6, resume=True)
    assert result.epochs_run == 6
    assert_same_params(six_epochs / "last.h5", out / "last.h5")
    full, split = checkpoint.load(six_epochs / "last.h5"), checkpoint.load(out / "last.h5")
    for key in full.optimizer:
        np.testing.assert_array_equal(full.optimizer[key], split.optimizer[key], err_msg=key)
    assert full.history["loss"] == split.history["loss"]


def test_interrupt_mid_epoch_saves_and_resumes_exactly(blobs_config, six_epochs, tmp_path):
    out = tmp_path / "interrupted"
    with pytest.raises(Interrupted) as info:
        trainer.train(blobs_config, output=str(out), epochs=6, reporter=InterruptAt(epoch=4, batch=2))
    assert info.value.exit_code == 130
    assert "--resume" in info.value.message
    ck = checkpoint.load(out / "last.h5")
    assert (ck.epoch, ck.rng["batch"]) == (3, 2)
    trainer.train(blobs_config, output=str(out), epochs=6, resume=True)
    assert_same_params(six_epochs / "last.h5", out / "last.h5")


def test_checkpoint_contents(six_epochs):
    with h5py.File(six_epochs / "model.h5", "r") as f:
        assert f.attrs["format"] == "nncli-checkpoint" and f.attrs["format_version"] == 2
        assert set(f["params"]) == {"dense_1", "dense_2"}
        assert f["params/dense_1/W"].shape == (2, 8)
        assert set(f["optimizer"]) >= {"iterations", "m", "v"}
        assert [c.decode() for c in f["labels/classes"][()]] == ["blue", "green", "red"]
        assert f["normalization"].attrs["kind"] == "standard" and f["normalization/shift"].shape == (2,)
        assert len(f["history/loss"]) >= 1 and "val_accuracy" in f["history"]
        assert "layers:" in f["config"].attrs["yaml"]


def test_metrics_csv_one_row_per_epoch(six_epochs):
    with open(six_epochs / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])
    ck = checkpoint.load(six_epochs / "last.h5")
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(ck.history["val_loss"])


def test_best_model_is_best_val_loss_epoch(six_epochs):
    ck = checkpoint.load(six_epochs / "model.h5")
    losses = checkpoint.load(six_epochs / "last.h5").history["val_loss"]
    assert ck.best_epoch == int(np.argmin(losses)) + 1
    assert ck.epoch == ck.best_epoch


REGRESSION = """
data: {{train: {train}}}
layers:
  - {{type: dense, units: 4, activation: linear}}
  - {{type: dense, units: 1}}
optimizer: sgd
learning_rate: {lr}
batch_size: 8
checkpoint_interval: 0
"""


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2))
    data = tmp_path / "reg.csv"
    data.write_text("a,b,y\n" + "".join(f"{a:.4f},{b:.4f},{3 * a - b:.4f}\n" for a, b in x))
    config = write_config(tmp_path, REGRESSION.format(train=data, lr=0.01))
    out = tmp_path / "run"
    trainer.train(config, output=str(out), epochs=2)
    before = {n: (out / n).read_bytes() for n in ("last.h5", "model.h5", "metrics.csv")}
    write_config(tmp_path, REGRESSION.format(train=data, lr=1000))
    with pytest.raises(TrainingError) as info:
        trainer.train(config, output=str(out), epochs=4, resume=True)
    assert info.value.exit_code == 1
    assert "at epoch 3, batch" in info.value.message
    assert "nan" in info.value.message.lower() or "inf" in info.value.message.lower()
    assert {n: (out / n).read_bytes() for n in before} == before


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, blobs_csv):
    config = write_config(tmp_path, BLOBS_CONFIG.format(train=blobs_csv))
    with pytest.raises(Exception) as info:
        trainer.train(config, output=str(tmp_path / "none"), resume=True)
    assert "nothing to resume" in str(info.value)


def test_pending_step_outputs_report_the_first_non_finite_batch():
    """Step outputs are read back in groups (JAX computes asynchronously); the first bad batch is named
    and the totals hold exactly the batches before it."""
    pending = trainer._Pending()
    for b, out in enumerate([[1.0, 2.0], [3.0, 1.0], [np.nan, 0.0], [np.inf, 5.0]]):
        pending.add(b, np.asarray(out, dtype=np.float32))
    totals, bad = pending.collect(np.zeros(2))
    assert bad[0] == 2 and np.isnan(bad[1])
    np.testing.assert_array_equal(totals, [4.0, 3.0])
    assert not pending.items
    pending.add(4, np.asarray([0.5, 0.5], dtype=np.float32))
    totals, bad = pending.collect(totals)
    assert bad is None and totals.tolist() == [4.5, 3.5]
    assert len(pending.items) == 0 and not pending.due()
    for b in range(pending.EVERY):
        pending.add(b, np.zeros(2))
    assert pending.due()


def test_pending_multi_step_outputs_are_summed_row_by_row():
    """A call of several steps returns one row per minibatch; every row counts, and a bad row is
    named by its own batch index, with the rows before it in the totals."""
    pending = trainer._Pending()
    pending.add(0, np.asarray([[1.0, 1.0], [2.0, 0.0], [3.0, 1.0]], dtype=np.float32))
    pending.add(3, np.asarray([[4.0, 1.0], [5.0, 1.0]], dtype=np.float32))
    totals, bad = pending.collect(np.zeros(2))
    assert bad is None and totals.tolist() == [15.0, 4.0]
    pending.add(5, np.asarray([[1.0, 0.0], [np.nan, 0.0], [np.nan, 0.0]], dtype=np.float32))
    totals, bad = pending.collect(totals)
    assert bad[0] == 6 and np.isnan(bad[1])
    assert totals.tolist() == [16.0, 4.0]


@pytest.mark.parametrize("steps", [1, 3, 5], ids=["1-per-call", "3-per-call", "whole-epoch"])
def test_steps_per_execution_trains_the_same(blobs_config, six_epochs, tmp_path, steps):
    """Several steps per call apply the same updates as one call per minibatch (up to float32
    rounding of the differently fused programs): 5 minibatches in calls of 3 leave 2 for the
    single step every epoch. The reference trains 2 per call, the fifth alone."""
    config = write_config(tmp_path, blobs_config.read_text().replace("steps_per_execution: 2",
                                                                    f"steps_per_execution: {steps}"))
    trainer.train(config, output=str(tmp_path / "run"), epochs=6)
    ref, got = checkpoint.load(six_epochs / "last.h5"), checkpoint.load(tmp_path / "run" / "last.h5")
    assert got.optimizer["iterations"] == ref.optimizer["iterations"] == 6 * 5
    for key in ref.params:
        np.testing.assert_allclose(got.params[key], ref.params[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in ref.optimizer:
        np.testing.assert_allclose(got.optimizer[key], ref.optimizer[key], rtol=1e-3, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(got.history["loss"], ref.history["loss"], rtol=1e-4)


def test_steps_per_execution_auto_rule():
    from nncli import steps

    def auto(backend="jax", batch=32, batch_bytes=4096, n_batches=1000):
        return steps.choose("auto", backend, batch, batch_bytes, n_batches)

    assert auto() == steps.AUTO_STEPS
    assert auto(n_batches=5) == 5                                    # never more than an epoch
    assert auto(batch=steps.AUTO_MAX_BATCH) == steps.AUTO_ROWS // steps.AUTO_MAX_BATCH  # fewer per call
    assert auto(batch=steps.AUTO_MAX_BATCH + 1) == 1                 # big batches: one per call
    assert auto(batch_bytes=steps.CHUNK_BYTES // 3) == 3             # big examples: fewer per call
    assert auto(batch_bytes=steps.CHUNK_BYTES * 2) == 1
    assert auto("c") == auto("numba") == 1
    assert steps.choose(8, "c", 32, 4096, 1000) == 8                 # as asked, on any backend
    assert steps.choose(8, "jax", 32, 4096, 3) == 3
