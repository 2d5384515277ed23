"""data.class_weight: the weights (balanced = n / (classes * count), as scikit-learn; or given),
and one training step's weighted loss and gradient against numpy (softmax and sigmoid
outputs, with a padding row in the batch)."""

from __future__ import annotations

import numpy as np
import pytensor
import pytest

from support import error_line, invoke, write_config
from nncli import functions, optimizers, spec as spec_mod
from nncli.training.prepare import prepare

LABELS = ["a"] * 10 + ["b"] * 4 + ["c"] * 2   # 16 rows: balanced weights 16/30, 16/12, 16/6


def table(folder, labels):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(len(labels), 2)).round(4)
    (folder / "d.csv").write_text("u,v,y\n" + "".join(f"{a},{b},{c}\n" for (a, b), c in zip(x, labels)))
    return x


def load(folder, layer, class_weight, loss=None):
    cfg = {"data": {"train": "d.csv", "class_weight": class_weight, "shuffle": False},
           "layers": [layer], "optimizer": {"type": "sgd"}, "learning_rate": 0.5}
    if loss:
        cfg["loss"] = loss
    return spec_mod.from_dict(cfg, str(folder / "c.yaml"), base=folder)


SOFTMAX = {"type": "dense", "units": 3, "activation": "softmax"}
SIGMOID = {"type": "dense", "units": 1, "activation": "sigmoid"}


def test_balanced_and_given_weights(tmp_path, jax_backend):
    table(tmp_path, LABELS)
    np.testing.assert_allclose(prepare(load(tmp_path, SOFTMAX, "balanced")).class_weights,
                               [16 / 30, 16 / 12, 16 / 6], rtol=1e-6)
    np.testing.assert_allclose(prepare(load(tmp_path, SOFTMAX, {"b": 3.0})).class_weights, [1, 3, 1])
    assert prepare(load(tmp_path, SOFTMAX, "none")).class_weights is None
    table(tmp_path, ["no"] * 12 + ["yes"] * 4)   # binary: classes no, yes
    np.testing.assert_allclose(prepare(load(tmp_path, SIGMOID, "balanced")).class_weights, [16 / 24, 16 / 8],
                               rtol=1e-6)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_one_step_weighted_loss_and_gradient_match_numpy(tmp_path, jax_backend, kind):
    labels = LABELS if kind == "softmax" else ["no"] * 12 + ["yes"] * 4
    x = table(tmp_path, labels)
    prep = prepare(load(tmp_path, SOFTMAX if kind == "softmax" else SIGMOID, "balanced"))
    net, cw = prep.net, prep.class_weights
    params, state = net.initial_values(np.random.default_rng(0))
    net.create_shared(params, state)
    W0, b0 = (np.asarray(params[k], np.float64) for k in ("dense_1/W", "dense_1/b"))
    lr = pytensor.shared(np.asarray(0.5, dtype=pytensor.config.floatX))
    graph, _ = functions.train_graph(net, prep.spec["loss"], [], optimizers.create("sgd", {}), lr, 16,
                                     optimizers.iterations_variable(), class_weights=cw)
    step = functions.compile_step(graph)
    xb, tb = prep.x_train.astype(np.float32), prep.t_train.astype(np.float32)
    np.testing.assert_array_equal(xb, x.astype(np.float32))   # no normalisation, no shuffle: the file's rows
    w = np.ones(16, np.float32)
    w[-1] = 0.0                                                # a padding row: no loss, no gradient
    loss_sum = float(np.asarray(step.fn(xb, tb, w))[0])

    # numpy: per-row loss times its class's weight, summed over real rows; gradient of that sum / real rows
    X, T = xb.astype(np.float64), tb.astype(np.float64)
    z = X @ W0 + b0
    if kind == "softmax":
        y_idx = np.array([{"a": 0, "b": 1, "c": 2}[l] for l in labels])
        np.testing.assert_array_equal(T, np.eye(3)[y_idx])
        p = softmax(z)
        per_row = -np.log(p[np.arange(16), y_idx])
        row_w = w * cw[y_idx]
        dz = row_w[:, None] * (p - T)
    else:
        y01 = np.array([l == "yes" for l in labels], float)
        p = 1 / (1 + np.exp(-z[:, 0]))
        per_row = -(y01 * np.log(p) + (1 - y01) * np.log(1 - p))
        row_w = w * np.where(y01 == 1, cw[1], cw[0])
        dz = (row_w * (p - y01))[:, None]
    want_sum = float((row_w * per_row).sum())
    np.testing.assert_allclose(loss_sum, want_sum, rtol=1e-5)
    assert not np.isclose(want_sum, (w * per_row).sum(), rtol=1e-3)   # the weights matter here
    n_real = w.sum()
    gW, gb = X.T @ dz / n_real, dz.sum(axis=0) / n_real
    np.testing.assert_allclose(net.params["dense_1/W"].get_value(), W0 - 0.5 * gW, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.params["dense_1/b"].get_value(), b0 - 0.5 * gb, rtol=1e-5, atol=1e-6)


def test_the_trainer_reports_the_weighted_loss_it_trains(tmp_path, jax_backend):
    """One full-batch epoch: the reported loss is the class-weighted mean at the initial weights
    (numpy), as trained; the accuracy is not weighted."""
    from nncli.training import trainer

    x = table(tmp_path, LABELS)
    config = write_config(tmp_path, "data: {train: d.csv, class_weight: balanced, shuffle: false}\n"
                                    f"layers: [{SOFTMAX}]\n".replace("'", "") +
                                    "optimizer: sgd\nbatch_size: 16\nepochs: 1\nseed: 5\n")
    result = trainer.train(config, output=str(tmp_path / "run"))
    prep = prepare(load(tmp_path, SOFTMAX, "balanced"))
    params, _ = prep.net.initial_values(np.random.default_rng([5, 0]))   # the trainer's seeded initial weights
    p = softmax(x @ params["dense_1/W"].astype(np.float64) + params["dense_1/b"])
    y_idx = np.array([{"a": 0, "b": 1, "c": 2}[l] for l in LABELS])
    cw = np.array([16 / 30, 16 / 12, 16 / 6])
    np.testing.assert_allclose(result.history["loss"][0], np.mean(cw[y_idx] * -np.log(p[np.arange(16), y_idx])),
                               rtol=1e-5)
    np.testing.assert_allclose(result.history["accuracy"][0], np.mean(p.argmax(1) == y_idx))


def test_class_weight_config_errors(tmp_path):
    table(tmp_path, LABELS)
    cases = [
        ("class_weight: {d: 2}", "data.class_weight.d (line 1): no class 'd' in the targets; the classes: a, b, c"),
        ("class_weight: {bb: 2}", "no class 'bb' in the targets (did you mean 'b'?)"),
        ("class_weight: sometimes", "data.class_weight (line 1): expected none, balanced or a mapping"),
    ]
    for setting, words in cases:
        config = write_config(tmp_path, f"data: {{train: d.csv, {setting}}}\nlayers: [{SOFTMAX}]\n".replace("'", ""))
        r = invoke("train", config, "-o", tmp_path / "run", "-q")
        assert r.exit_code == 2 and words in error_line(r.stderr), r.stderr
    (tmp_path / "r.csv").write_text("u,y\n1,2.5\n2,3.5\n")
    config = write_config(tmp_path, "data: {train: r.csv, class_weight: balanced}\nlayers: [{type: dense, units: 1}]\n")
    r = invoke("train", config, "-q")
    assert r.exit_code == 2 and error_line(r.stderr).endswith(
        "data.class_weight (line 1): class weights need a classification loss; the loss is mse")
    assert not (tmp_path / "run").exists()
