"""Learning-rate schedules (closed forms, reduce_on_plateau, --resume), early stopping, penalties."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from support import BLOBS_CONFIG, write_config
from nncli import checkpoint, schedules
from nncli.training import trainer
from nncli.errors import ConfigError

BASE = 0.1


def sched(cfg, epochs=12, has_validation=True, base=BASE):
    return schedules.Schedule(base, schedules.validate(cfg, "schedule"), epochs, has_validation)


CLOSED_FORMS = [
    ("constant", 8, lambda i: BASE),
    ({"type": "warmup", "warmup_epochs": 4}, 8, lambda i: BASE * min(i + 1, 4) / 4),
    ({"type": "step", "every": 3, "factor": 0.5}, 10, lambda i: BASE * 0.5 ** (i // 3)),
    ({"type": "step", "every": 2, "factor": 0.1, "warmup_epochs": 2}, 8,
     lambda i: BASE * (i + 1) / 2 if i < 2 else BASE * 0.1 ** ((i - 2) // 2)),
    ({"type": "exponential", "factor": 0.9}, 10, lambda i: BASE * 0.9 ** i),
    ({"type": "cosine", "min_lr": 0.01}, 10, lambda i: 0.01 + (BASE - 0.01) * (1 + math.cos(math.pi * i / 10)) / 2),
    ({"type": "cosine", "period": 4}, 8, lambda i: BASE * (1 + math.cos(math.pi * min(i, 4) / 4)) / 2),
    ({"type": "cosine", "warmup_epochs": 3}, 10,
     lambda i: BASE * (i + 1) / 3 if i < 3 else BASE * (1 + math.cos(math.pi * (i - 3) / 7)) / 2),
]


@pytest.mark.parametrize("cfg, epochs, form", CLOSED_FORMS,
                         ids=[str(c[0])[:40] for c in CLOSED_FORMS])
def test_schedule_follows_its_closed_form(cfg, epochs, form):
    got = sched(cfg, epochs).sequence(epochs)
    assert got == pytest.approx([form(i) for i in range(epochs)], rel=1e-12, abs=1e-15)


def test_cosine_warm_restarts():
    # SGDR with period 3 and period_mult 2: cycles of 3, 6, 12 epochs, each restarting at the base rate
    got = sched({"type": "cosine", "period": 3, "period_mult": 2, "restart": True, "min_lr": 0.001}, 21).sequence(21)
    want = []
    for length in (3, 6, 12):
        want += [0.001 + (BASE - 0.001) * (1 + math.cos(math.pi * c / length)) / 2 for c in range(length)]
    assert got == pytest.approx(want, rel=1e-12)
    assert got[3] == got[9] == BASE


def test_schedule_types_are_one_registry_with_their_keys_on_the_classes():
    names = ["constant", "step", "exponential", "cosine", "reduce_on_plateau", "warmup"]  # the docs' order
    assert schedules.SCHEDULES.names() == names
    for name in names:
        cfg = schedules.validate({"type": name, "warmup_epochs": 2}, "schedule")
        assert set(cfg) == {"type", "warmup_epochs", *schedules.SCHEDULES.get(name).keys}


def plateau_rates(values, **cfg):
    s = sched({"type": "reduce_on_plateau", "monitor": "val_loss", **cfg})
    return [s.lr(i, {"val_loss": values[:i]}) for i in range(len(values) + 1)]


def test_reduce_on_plateau_reacts_to_a_constructed_loss_sequence():
    values = [1.0, 0.9, 0.95, 0.92, 0.8, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9]
    # patience 2: two epochs in a row without a new best halve the rate, never below min_lr
    got = plateau_rates(values, patience=2, factor=0.5, min_lr=0.02)
    assert got == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02, 0.02])


def test_reduce_on_plateau_min_delta_cooldown_and_mode():
    # improvements smaller than min_delta do not count
    assert plateau_rates([1.0, 0.99, 0.98], patience=2, factor=0.5, min_delta=0.05)[-1] == pytest.approx(0.05)
    # cooldown 2: after a reduction, two epochs are not counted
    got = plateau_rates([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], patience=1, factor=0.5, cooldown=2)
    assert got == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025])
    # an accuracy is maximised (mode auto)
    s = sched({"type": "reduce_on_plateau", "monitor": "val_accuracy", "patience": 1, "factor": 0.5})
    assert s.lr(3, {"val_accuracy": [0.5, 0.6, 0.7]}) == BASE
    assert s.lr(3, {"val_accuracy": [0.7, 0.6, 0.5]}) == pytest.approx(0.025)
    # NaN never improves
    assert plateau_rates([1.0, float("nan")], patience=1, factor=0.5)[-1] == pytest.approx(0.05)


@pytest.mark.parametrize("extra, path, words", [
    ("schedule: cosin", "schedule.type", "did you mean 'cosine'"),
    ("schedule: {type: step, every: 0}", "schedule.every", "from 1"),
    ("schedule: {type: step, factor: 1.5}", "schedule.factor", "<= 1"),
    ("schedule: {type: cosine, restart: true}", "schedule.period", "period"),
    ("schedule: {type: warmup}", "schedule.warmup_epochs", "missing"),
    ("schedule: {type: exponential, patience: 3}", "schedule.patience", "unknown key"),
    ("schedule: {type: reduce_on_plateau, monitor: val_f1}", "schedule.monitor", "cannot monitor"),
    ("schedule: {type: cosine, min_lr: 0.5}", "schedule.min_lr", "above learning_rate"),
])
def test_bad_schedules_are_one_line_config_errors(tmp_path, extra, path, words):
    from nncli import spec

    data = tmp_path / "d.csv"
    data.write_text("a,y\n1,2\n2,3\n3,4\n")
    text = f"data: {{train: {data}, validation: 0.3}}\nlayers:\n  - {{type: dense, units: 1}}\n{extra}\n"
    config = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        spec.load(config)
    assert info.value.exit_code == 2 and "\n" not in info.value.message
    assert info.value.message.startswith(f"{config}: {path} (line 4)"), info.value.message
    assert words in info.value.message


# --- schedules in training: the history, and --resume ------------------------------------------

PLATEAU = """
optimizer: rmsprop
schedule: {type: reduce_on_plateau, monitor: loss, patience: 1, factor: 0.5, min_delta: 100}
"""


@pytest.fixture(scope="module")
def plateau_config(tmp_path_factory, blobs_csv):
    folder = tmp_path_factory.mktemp("plateau")
    text = BLOBS_CONFIG.format(train=blobs_csv).replace("optimizer: adam\n", "") + PLATEAU
    return write_config(folder, text)


def test_reduce_on_plateau_in_training_and_exact_resume(plateau_config, tmp_path):
    # min_delta 100: no epoch after the first counts as an improvement, so the rate halves every epoch
    straight = trainer.train(plateau_config, output=str(tmp_path / "straight"), epochs=5)
    lr = straight.history["learning_rate"]
    assert lr == pytest.approx([0.05, 0.05, 0.025, 0.0125, 0.00625], rel=1e-6)
    split = tmp_path / "split"
    trainer.train(plateau_config, output=str(split), epochs=3)
    resumed = trainer.train(plateau_config, output=str(split), epochs=5, resume=True)
    assert resumed.history["learning_rate"] == straight.history["learning_rate"]
    assert resumed.history["loss"] == straight.history["loss"]
    a, b = checkpoint.load(tmp_path / "straight" / "last.h5"), checkpoint.load(split / "last.h5")
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    assert set(a.optimizer) >= {"iterations", "ms/dense_1/W"}
    for k in a.optimizer:  # the optimizer's slots came back from the checkpoint
        np.testing.assert_array_equal(a.optimizer[k], b.optimizer[k], err_msg=k)


# --- early stopping on a constructed case -------------------------------------------------------

EARLY = """
data: {{train: {train}, validation: {val}, shuffle: false}}
layers:
  - {{type: dense, units: 1, activation: linear, initializer: zeros, use_bias: false}}
loss: mse
optimizer: sgd
learning_rate: 0.1
batch_size: 4
epochs: 20
early_stopping: {{monitor: val_loss, patience: 2}}
checkpoint_interval: 0
"""


def test_early_stopping_stops_at_the_right_epoch_and_keeps_the_best_weights(tmp_path):
    # Full-batch gradient descent on y = x with x = +-1: w_k = 1 - 0.8**k (from w_0 = 0).
    # The validation targets are y = 0.5 x, so val_loss = (w_k - 0.5)^2: best at k = 3
    # (w = 0.488), worse at 4 and 5; with patience 2 training stops after epoch 5.
    train = tmp_path / "train.csv"
    train.write_text("x,y\n1,1\n-1,-1\n1,1\n-1,-1\n")
    val = tmp_path / "val.csv"
    val.write_text("x,y\n1,0.5\n-1,-0.5\n")
    config = write_config(tmp_path, EARLY.format(train=train, val=val))
    result = trainer.train(config, output=str(tmp_path / "run"))
    w = [1 - 0.8 ** k for k in range(1, 6)]
    assert result.history["val_loss"] == pytest.approx([(v - 0.5) ** 2 for v in w], rel=1e-4)
    assert result.stopped_early and result.epochs_run == 5 and result.best_epoch == 3
    with h5py.File(tmp_path / "run" / "model.h5", "r") as f:
        assert f.attrs["epoch"] == 3 and f.attrs["best_epoch"] == 3
        assert f["params/dense_1/W"][()].item() == pytest.approx(1 - 0.8 ** 3, rel=1e-5)
    with h5py.File(tmp_path / "run" / "last.h5", "r") as f:
        assert f["params/dense_1/W"][()].item() == pytest.approx(1 - 0.8 ** 5, rel=1e-5)


# --- L1/L2 penalties ------------------------------------------------------------------------

@pytest.mark.parametrize("reg, l1, l2", [
    ({"l1": 0.01, "l2": 0.05}, 0.01, 0.05),
    ({"l2": 0.05, "layers": {"dense_1": {"l1": 0.2}}}, 0.2, 0.05),
])
def test_weight_penalty_enters_the_gradient_of_weights_not_biases(tmp_path, reg, l1, l2):
    from nncli import backend, functions, network, optimizers, regularization, spec

    backend.activate(backend.choose("jax", "cpu"))
    data = tmp_path / "d.csv"
    data.write_text("a,b,c,y\n1,2,3,4\n")
    s = spec.from_dict({"data": {"train": str(data)}, "layers": [{"type": "dense", "units": 2}],
                        "loss": "mse", "regularization": reg}, "inline")
    net = network.build(s, (3,))
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    net.create_shared({"dense_1/W": W, "dense_1/b": b}, {})
    iterations = optimizers.iterations_variable()
    step, _ = functions.compile_train(net, "mse", [], optimizers.create("sgd", {}), np.float32(0.1), 4, iterations,
                                  penalty=regularization.penalty(s["regularization"]))
    x = rng.normal(size=(4, 3)).astype("float32")
    t = rng.normal(size=(4, 2)).astype("float32")
    step.fn(x, t, np.ones(4, "float32"))
    d_out = 2 * (x @ W + b - t) / (4 * 2)    # mse: mean over the 2 outputs, then over the 4 examples
    want_W = W - 0.1 * (x.T @ d_out + l1 * np.sign(W) + 2 * l2 * W)
    want_b = b - 0.1 * d_out.sum(0)
    np.testing.assert_allclose(net.params["dense_1/W"].get_value(), want_W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.params["dense_1/b"].get_value(), want_b, rtol=1e-5, atol=1e-6)


def test_regularization_names_unknown_layers(tmp_path):
    from nncli import spec

    data = tmp_path / "d.csv"
    data.write_text("a,y\n1,2\n")
    config = write_config(tmp_path, f"data: {{train: {data}}}\nlayers:\n  - {{type: dense, units: 1}}\n"
                                    f"regularization: {{l2: 0.1, layers: {{dense_2: {{l1: 1}}}}}}\n")
    with pytest.raises(ConfigError) as info:
        spec.load(config)
    assert "regularization.layers.dense_2" in info.value.message and "dense_1" in info.value.message
