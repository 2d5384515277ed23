"""Metrics against hand-computed values; epoch-level metrics in training and evaluate --confusion."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from support import write_config
from nncli import metrics
from nncli.cli import main
from nncli.errors import ConfigError


def one_hot(labels, c):
    return np.eye(c)[labels]


# true:      0 0 0 1 1 2 2 2 2 2
# predicted: 0 0 1 1 2 2 2 2 0 1
TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
PRED = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 1])


def test_confusion_matrix_and_per_class_scores_by_hand():
    cm = metrics.confusion_matrix(TRUE, PRED, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [1, 1, 3]]
    rep = metrics.report(one_hot(TRUE, 3), one_hot(PRED, 3) * 0.9 + 0.03, "categorical_crossentropy",
                         ["a", "b", "c"])
    assert rep["confusion"] == cm.tolist()
    # class a: precision 2/3, recall 2/3; b: 1/3, 1/2; c: 3/4, 3/5
    want = {"a": (2 / 3, 2 / 3), "b": (1 / 3, 1 / 2), "c": (3 / 4, 3 / 5)}
    for name, (p, r) in want.items():
        s = rep["per_class"][name]
        assert s["precision"] == pytest.approx(p) and s["recall"] == pytest.approx(r)
        assert s["f1"] == pytest.approx(2 * p * r / (p + r))
    assert [rep["per_class"][n]["support"] for n in "abc"] == [3, 2, 5]


def test_macro_precision_recall_f1_by_hand():
    got = metrics.compute(["precision", "recall", "f1"], one_hot(TRUE, 3), one_hot(PRED, 3),
                          "categorical_crossentropy")
    f1s = [2 * p * r / (p + r) for p, r in ((2 / 3, 2 / 3), (1 / 3, 1 / 2), (3 / 4, 3 / 5))]
    assert got["precision"] == pytest.approx((2 / 3 + 1 / 3 + 3 / 4) / 3)
    assert got["recall"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 5) / 3)
    assert got["f1"] == pytest.approx(sum(f1s) / 3)
    assert list(got) == ["precision", "recall", "f1"]


def test_binary_and_multilabel_scores_by_hand():
    t = np.array([[1], [1], [0], [0], [1]], float)
    p = np.array([[0.9], [0.2], [0.6], [0.1], [0.7]])   # predicted 1 0 1 0 1
    got = metrics.compute(["precision", "recall", "f1"], t, p, "binary_crossentropy")
    # class 1: precision 2/3, recall 2/3; class 0: precision 1/2, recall 1/2
    assert got["precision"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert got["recall"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # two independent labels: macro over each label's positive class
    t2 = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], float)
    p2 = np.array([[1, 1], [0, 1], [0, 1], [1, 0]], float)
    got2 = metrics.compute(["precision", "recall"], t2, p2, "binary_crossentropy")
    assert got2["precision"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert got2["recall"] == pytest.approx((1 / 2 + 1) / 2)


def test_rmse_and_r2_by_hand():
    t = np.array([[3.0], [-0.5], [2.0], [7.0]])
    o = np.array([[2.5], [0.0], [2.0], [8.0]])
    got = metrics.compute(["rmse", "r2"], t, o, "mse")
    assert got["rmse"] == pytest.approx(np.sqrt((0.25 + 0.25 + 0 + 1) / 4))
    # scikit-learn's documented example: r2_score([3, -0.5, 2, 7], [2.5, 0.0, 2, 8]) == 0.948...
    assert got["r2"] == pytest.approx(0.9486081370449679)
    # two outputs: the mean of the per-column r2; a constant column predicted exactly counts 1
    t2 = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    o2 = np.array([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    assert metrics.compute(["r2"], t2, o2, "mse")["r2"] == pytest.approx((1 - 1 / 2 + 1.0) / 2)


def test_per_example_metrics_in_the_graph_by_hand():
    from nncli import backend

    backend.activate(backend.choose("jax", "cpu"))
    import pytensor
    import pytensor.tensor as pt

    t = pt.matrix("t", dtype="float32")
    o = pt.matrix("o", dtype="float32")
    fn = pytensor.function([t, o], [metrics.per_example(m, t, o, "categorical_crossentropy")
                                    for m in ("accuracy", "top_2_accuracy", "mse", "mae")])
    target = one_hot(np.array([0, 1, 2, 2]), 3).astype("float32")
    output = np.array([[0.6, 0.3, 0.1],    # true 0: rank 1
                       [0.5, 0.2, 0.3],    # true 1: rank 3
                       [0.4, 0.5, 0.1],    # true 2: rank 3
                       [0.35, 0.4, 0.25]], "float32")  # true 2: rank 3
    acc, top2, mse, mae = fn(target, output)
    assert acc.tolist() == [1, 0, 0, 0]
    assert top2.tolist() == [1, 0, 0, 0]
    output[1] = [0.5, 0.3, 0.2]   # true 1 now second
    _, top2, mse, mae = fn(target, output)
    assert top2.tolist() == [1, 1, 0, 0]
    np.testing.assert_allclose(mse, ((output - target) ** 2).mean(1), rtol=1e-6)
    np.testing.assert_allclose(mae, np.abs(output - target).mean(1), rtol=1e-6)
    assert mae[0] == pytest.approx((0.4 + 0.3 + 0.1) / 3)


@pytest.mark.parametrize("item, name", [
    ("accuracy", "accuracy"), ("f1", "f1"), ("top_3_accuracy", "top_3_accuracy"),
    ({"type": "top_k_accuracy", "k": 2}, "top_2_accuracy"), ("top_k_accuracy", "top_5_accuracy"),
    ({"type": "r2"}, "r2"),
])
def test_metric_entries_are_normalised(item, name):
    assert metrics.validate_item(item, "metrics[0]") == name


@pytest.mark.parametrize("loss_line, metric, words", [
    ("", "f1x", "did you mean 'f1'"),
    ("", "{type: top_k_accuracy, k: 0}", "metrics[0].k"),
    ("", "{type: f1, k: 2}", "only top_k_accuracy takes k"),
    ("loss: mse\n", "f1", "needs a classification loss"),
    ("loss: binary_crossentropy\n", "top_2_accuracy", "needs categorical_crossentropy"),
])
def test_bad_metrics_are_one_line_config_errors(tmp_path, loss_line, metric, words):
    from nncli import spec

    data = tmp_path / "d.csv"
    data.write_text("a,y\n1,0\n2,1\n")
    config = write_config(tmp_path, f"data: {{train: {data}}}\nlayers:\n  - {{type: dense, units: 2, "
                                    f"activation: softmax}}\nmetrics: [{metric}]\n{loss_line}")
    with pytest.raises(ConfigError) as info:
        spec.load(config)
    assert info.value.message.startswith(f"{config}: metrics[0]") and "(line 4)" in info.value.message
    assert words in info.value.message and "\n" not in info.value.message


# --- in training and evaluate ----------------------------------------------------------------

CLASSIFIER = """
data: {{train: {train}, validation: {val}, normalize: standard}}
layers:
  - {{type: dense, units: 8, activation: tanh}}
  - {{type: dense, units: 3, activation: softmax}}
metrics: [accuracy, {{type: top_k_accuracy, k: 2}}, precision, recall, f1]
optimizer: adam
learning_rate: 0.05
epochs: 3
batch_size: 16
checkpoint_interval: 0
"""


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, blobs_csv):
    from nncli.training import trainer

    folder = tmp_path_factory.mktemp("f1run")
    rows = blobs_csv.read_text().splitlines()
    train, val = folder / "train.csv", folder / "val.csv"
    train.write_text("\n".join(rows[:61]) + "\n")
    val.write_text("\n".join([rows[0]] + rows[61:]) + "\n")
    config = write_config(folder, CLASSIFIER.format(train=train, val=val))
    return trainer.train(config, output=str(folder / "run")), val


def test_epoch_level_metrics_come_from_all_validation_predictions(classifier_run):
    from nncli import inference

    result, val = classifier_run
    h = result.history
    names = ["loss", "accuracy", "top_2_accuracy", "precision", "recall", "f1"]
    assert list(h) == names + [f"val_{n}" for n in names] + ["learning_rate", "seconds"]
    with open(result.output / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and list(rows[0]) == ["epoch", *h]
    ev = inference.evaluate(result.output / "last.h5", str(val))
    for n in names:
        assert ev.metrics[n] == pytest.approx(h[f"val_{n}"][-1], rel=1e-5, abs=1e-6), n


def test_evaluate_confusion_cli(classifier_run):
    result, val = classifier_run
    model = str(result.output / "model.h5")
    r = CliRunner().invoke(main, ["evaluate", model, str(val), "--confusion"])
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("30 examples: loss ") and " f1 " in lines[0]
    assert "confusion matrix (rows: true class, columns: predicted):" in lines
    header = lines[lines.index("confusion matrix (rows: true class, columns: predicted):") + 1].split()
    assert header == ["blue", "green", "red"]
    r = CliRunner().invoke(main, ["evaluate", model, str(val), "--confusion", "--json"])
    out = json.loads(r.stdout)
    cm = np.array(out["confusion"]["confusion"])
    assert cm.shape == (3, 3) and cm.sum() == out["examples"] == 30
    assert np.trace(cm) / cm.sum() == pytest.approx(out["accuracy"])


def test_evaluate_confusion_on_a_regression_model_is_an_error(tmp_path):
    from nncli.training import trainer

    data = tmp_path / "r.csv"
    data.write_text("a,y\n" + "".join(f"{i / 10},{i / 5}\n" for i in range(20)))
    config = write_config(tmp_path, f"data: {{train: {data}}}\nlayers:\n  - {{type: dense, units: 1}}\n"
                                    f"metrics: [mae, rmse, r2]\nepochs: 2\ncheckpoint_interval: 0\n")
    result = trainer.train(config, output=str(tmp_path / "run"))
    assert set(result.history) >= {"mae", "rmse", "r2"}
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run" / "model.h5"), str(data), "--confusion"])
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: --confusion needs a classifier") and r.stderr.count("\n") == 1


# --- Monitor: Keras' improvement rule, shared by early stopping and reduce_on_plateau -------------

NAN = float("nan")


@pytest.mark.parametrize("name, mode, min_delta, best, value, improved", [
    ("val_loss", "auto", 0.0, 1.0, 0.9, True),         # auto: a loss is minimised
    ("val_loss", "auto", 0.0, 1.0, 1.0, False),        # equal is no improvement
    ("val_loss", "auto", 0.0, 1.0, 1.1, False),
    ("val_loss", "min", 0.05, 1.0, 0.96, False),       # 0.96 is not below 1.0 - 0.05
    ("val_loss", "min", 0.05, 1.0, 0.94, True),
    ("val_accuracy", "auto", 0.0, 0.5, 0.6, True),     # auto: accuracy-like names are maximised
    ("val_accuracy", "auto", 0.0, 0.5, 0.5, False),
    ("val_accuracy", "auto", 0.0, 0.5, 0.4, False),
    ("top_3_accuracy", "auto", 0.0, 0.5, 0.6, True),
    ("val_f1", "auto", 0.0, 0.5, 0.4, False),
    ("val_r2", "auto", 0.1, 0.5, 0.55, False),         # 0.55 is not above 0.5 + 0.1
    ("val_r2", "auto", 0.1, 0.5, 0.65, True),
    ("val_rmse", "auto", 0.0, 0.5, 0.4, True),         # an error is minimised
    ("loss", "max", 0.0, 1.0, 1.1, True),              # an explicit mode wins over the name
    ("val_accuracy", "min", 0.0, 0.5, 0.4, True),
    ("val_loss", "auto", 0.0, NAN, 5.0, True),         # the first number improves on the NaN start
    ("val_accuracy", "auto", 0.0, NAN, 0.0, True),
    ("val_loss", "auto", 0.0, NAN, NAN, False),        # NaN never improves
    ("val_loss", "auto", 0.0, 1.0, NAN, False),
    ("val_accuracy", "auto", 0.0, 0.5, NAN, False),
])
def test_monitor_improvement_rule(name, mode, min_delta, best, value, improved):
    assert metrics.Monitor(name, mode, min_delta, best=best).improved(value) is improved


def test_monitor_keeps_the_best_value_and_its_epoch():
    watch = metrics.Monitor("val_loss")
    values = [NAN, 1.0, 0.8, 0.9, 0.8, 0.5, NAN, 0.6]
    assert [watch.update(v, epoch) for epoch, v in enumerate(values, 1)] == \
        [False, True, True, False, False, True, False, False]
    assert (watch.mode, watch.best, watch.best_epoch) == ("min", 0.5, 6)
    up = metrics.Monitor("val_accuracy", min_delta=0.1)
    assert [up.update(v, epoch) for epoch, v in enumerate([0.5, 0.55, 0.7, 0.75], 1)] == [True, False, True, False]
    assert (up.mode, up.best, up.best_epoch) == ("max", 0.7, 3)
