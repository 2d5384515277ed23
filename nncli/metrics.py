"""Metric names, and the metrics computed from a whole set of predictions with numpy.

Two kinds of metric:

* per-example metrics (``accuracy``, ``top_<k>_accuracy``, ``mse``, ``mae``):
  a mean over examples, so they stay in the compiled graph
  (:data:`nncli.losses.METRICS`) and are exact when summed over batches;
* epoch-level metrics (``precision``, ``recall``, ``f1``, ``rmse``, ``r2``):
  not a mean of per-example values, so averaging them over batches would be
  wrong; they are computed here from every prediction of the set
  (validation, evaluate, and the training set after each epoch).

In the config a metric is a name or a mapping: ``accuracy``,
``{type: top_k_accuracy, k: 3}`` (same as the name ``top_3_accuracy``,
which is also the name it has in the history and metrics.csv).
Precision, recall and F1 are macro averages over the classes that occur in
the targets or the predictions (scikit-learn's default for multi-class);
a binary classifier with one output has the two classes 0 and 1; with
several sigmoid outputs (multi-label) each output is a binary problem and
the macro average is over the outputs' positive class. ``r2`` is the mean
over output columns of ``1 - SSE/SST`` (1.0 for a constant column predicted
exactly, else 0.0 for a constant column).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from nncli.registry import did_you_mean
from nncli.schema import Invalid, described, integer, show

PER_EXAMPLE = ("accuracy", "mse", "mae")
EPOCH_LEVEL = ("precision", "recall", "f1", "rmse", "r2")
CLASSIFICATION_ONLY = ("accuracy", "precision", "recall", "f1")
HIGHER_IS_BETTER = ("accuracy", "precision", "recall", "f1", "r2")
_TOP_K = re.compile(r"^top_(\d+)_accuracy$")
MAX_TOP_K = 1_000_000


def _registered() -> list[str]:
    """Per-example metrics in the compiled graph (nncli.losses.METRICS)."""
    from nncli.losses import METRICS

    return METRICS.names()


def known_names() -> list[str]:
    return sorted({*_registered(), *EPOCH_LEVEL, "top_k_accuracy"})


def top_k(name: str) -> int | None:
    """k for a name top_<k>_accuracy, else None."""
    m = _TOP_K.match(str(name))
    if not m:
        return None
    digits = m.group(1)
    return int(digits) if len(digits) <= 20 else 10**20  # (longer: too big in any case; int() has a limit)


def validate_item(value: Any, path: str) -> str:
    """A metric entry of the config -> its name (top_k_accuracy mappings -> top_<k>_accuracy)."""
    if isinstance(value, dict):
        if "type" not in value:
            raise Invalid(f"{path}.type", f"missing required key (one of {', '.join(known_names())})")
        kind = value["type"]
        extra = sorted(set(value) - {"type", "k"})
        if extra:
            allowed = "k" if kind == "top_k_accuracy" else "(none)"
            raise Invalid(f"{path}.{extra[0]}", f"unknown key; allowed: {allowed}")
        if kind == "top_k_accuracy":
            k = integer(min=1, max=MAX_TOP_K)(value.get("k", 5), f"{path}.k")
            return f"top_{k}_accuracy"
        if "k" in value:
            raise Invalid(f"{path}.k", f"only top_k_accuracy takes k, not {show(kind)}")
        value = kind
        path = f"{path}.type"
    if not isinstance(value, str):
        raise Invalid(path, f"expected a metric name (one of {', '.join(known_names())}) or "
                            f"{{type: top_k_accuracy, k: N}}, got {show(value)}")
    if value == "top_k_accuracy":
        return "top_5_accuracy"
    k = top_k(value)
    if k is not None:
        if not 1 <= k <= MAX_TOP_K:
            raise Invalid(path, f"top_<k>_accuracy needs k from 1 to {MAX_TOP_K:,}, got {show(value)}")
        return f"top_{k}_accuracy"
    if value not in _registered() and value not in EPOCH_LEVEL:
        raise Invalid(path, f"unknown metric '{value}'{did_you_mean(value, known_names())}; "
                            f"known: {', '.join(known_names())} (or top_<k>_accuracy)")
    return value


described(validate_item, lambda: {"anyOf": [
    {"enum": known_names()}, {"type": "string", "pattern": r"^top_[0-9]+_accuracy$"},
    {"type": "object", "required": ["type"], "additionalProperties": False,
     "properties": {"type": {"enum": known_names()}, "k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K}}}]})


def check(metrics: Sequence[str], loss: str, classification: bool, output_units: int | None = None) -> None:
    """Metric/loss compatibility; raises Invalid on `metrics[i]`."""
    for i, m in enumerate(metrics):
        if (m in CLASSIFICATION_ONLY or top_k(m)) and not classification:
            raise Invalid(f"metrics[{i}]", f"{m} needs a classification loss (categorical_crossentropy, "
                                           f"binary_crossentropy), the loss is {loss}")
        if top_k(m) and loss != "categorical_crossentropy":
            raise Invalid(f"metrics[{i}]", f"{m} needs categorical_crossentropy (one class per example out of "
                                           f"several), the loss is {loss}")
        if metrics.index(m) != i:
            raise Invalid(f"metrics[{i}]", f"{m} is listed twice")


def higher_is_better(name: str) -> bool:
    base = name[4:] if name.startswith("val_") else name
    return base in HIGHER_IS_BETTER or top_k(base) is not None


def in_graph(names: Sequence[str]) -> list[str]:
    registered = _registered()
    return [m for m in names if m in registered or top_k(m) is not None]


def epoch_level(names: Sequence[str]) -> list[str]:
    return [m for m in names if m in EPOCH_LEVEL]


# --- numpy computations -------------------------------------------------------

def _labels(target: np.ndarray, output: np.ndarray, loss: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(true, predicted, number of classes) as integer arrays, for single-label problems."""
    if loss == "binary_crossentropy":
        t = target.reshape(len(target), -1)
        o = output.reshape(len(output), -1)
        if t.shape[1] != 1:
            raise ValueError("single-label")
        return (t[:, 0] > 0.5).astype(np.int64), (o[:, 0] > 0.5).astype(np.int64), 2
    c = target.shape[-1]
    t = target.reshape(-1, c)
    o = output.reshape(-1, c)
    return np.argmax(t, axis=1), np.argmax(o, axis=1), c


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j]: examples of true class i predicted as class j."""
    return np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1, support per class (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, support


def _binary_columns(target, output):
    t = target.reshape(len(target), -1) > 0.5
    o = output.reshape(len(output), -1) > 0.5
    return [confusion_matrix(t[:, j].astype(np.int64), o[:, j].astype(np.int64), 2) for j in range(t.shape[1])]


def classification_scores(target: np.ndarray, output: np.ndarray, loss: str) -> dict[str, float]:
    """Macro precision, recall and F1."""
    if loss == "binary_crossentropy" and target.reshape(len(target), -1).shape[1] > 1:
        stats = np.array([[v[1] for v in _per_class(cm)[:3]] for cm in _binary_columns(target, output)])
        p, r, f = stats.mean(axis=0) if len(stats) else (0.0, 0.0, 0.0)
        return {"precision": float(p), "recall": float(r), "f1": float(f)}
    true, pred, c = _labels(target, output, loss)
    cm = confusion_matrix(true, pred, c)
    precision, recall, f1, support = _per_class(cm)
    present = (support > 0) | (cm.sum(axis=0) > 0)
    if not present.any():
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    return {"precision": float(precision[present].mean()), "recall": float(recall[present].mean()),
            "f1": float(f1[present].mean())}


def regression_scores(target: np.ndarray, output: np.ndarray) -> dict[str, float]:
    t = target.reshape(len(target), -1).astype(np.float64)
    o = output.reshape(len(output), -1).astype(np.float64)
    if len(t) == 0:
        return {"rmse": float("nan"), "r2": float("nan")}
    sse = ((o - t) ** 2).sum(axis=0)
    sst = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.where(sse == 0, 1.0, 0.0))
    return {"rmse": float(np.sqrt(sse.sum() / t.size)), "r2": float(r2.mean())}


def compute(names: Sequence[str], target: np.ndarray, output: np.ndarray, loss: str) -> dict[str, float]:
    """The epoch-level metrics among `names`, from all targets and outputs of a set."""
    wanted = epoch_level(names)
    if not wanted:
        return {}
    scores: dict[str, float] = {}
    if any(m in ("precision", "recall", "f1") for m in wanted):
        scores.update(classification_scores(target, output, loss))
    if any(m in ("rmse", "r2") for m in wanted):
        scores.update(regression_scores(target, output))
    return {m: scores[m] for m in wanted}


def report(target: np.ndarray, output: np.ndarray, loss: str, classes: Sequence[str] | None) -> dict[str, Any]:
    """The confusion matrix and per-class precision/recall/F1/support (classification)."""
    if loss == "binary_crossentropy" and target.reshape(len(target), -1).shape[1] > 1:
        cms = _binary_columns(target, output)
        names = [f"output_{j}" for j in range(len(cms))]
        per = {}
        for name, cm in zip(names, cms):
            p, r, f, s = _per_class(cm)
            per[name] = {"precision": float(p[1]), "recall": float(r[1]), "f1": float(f[1]), "support": int(s[1])}
        return {"classes": names, "confusion": [cm.tolist() for cm in cms], "per_class": per, "multilabel": True}
    true, pred, c = _labels(target, output, loss)
    cm = confusion_matrix(true, pred, c)
    names = [str(x) for x in classes] if classes is not None and len(classes) == c else [str(i) for i in range(c)]
    p, r, f, s = _per_class(cm)
    per = {n: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
           for i, n in enumerate(names)}
    return {"classes": names, "confusion": cm.tolist(), "per_class": per, "multilabel": False}


def format_report(rep: Mapping[str, Any]) -> list[str]:
    """Text lines: the confusion matrix (rows: true class, columns: predicted) and a per-class table."""
    lines: list[str] = []
    names = list(rep["classes"])
    if not rep.get("multilabel"):
        cm = rep["confusion"]
        w = max(6, *(len(n) for n in names), *(len(str(v)) for row in cm for v in row))
        lines.append("confusion matrix (rows: true class, columns: predicted):")
        lines.append(" " * w + "  " + "  ".join(f"{n:>{w}}" for n in names))
        for n, row in zip(names, cm):
            lines.append(f"{n:>{w}}  " + "  ".join(f"{v:>{w}}" for v in row))
        lines.append("")
    else:
        for n, cm in zip(names, rep["confusion"]):
            lines.append(f"{n}: tn {cm[0][0]}  fp {cm[0][1]}  fn {cm[1][0]}  tp {cm[1][1]}")
        lines.append("")
    w = max(5, *(len(n) for n in names))
    lines.append(f"{'class':<{w}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>8}")
    for n in names:
        s = rep["per_class"][n]
        lines.append(f"{n:<{w}}  {s['precision']:>9.4f}  {s['recall']:>9.4f}  {s['f1']:>9.4f}  {s['support']:>8}")
    return lines


def predictions(predict_fn, x: np.ndarray) -> np.ndarray:
    """Outputs of a compiled predict function (model.compile_predict) for every row of `x`."""
    from nncli import data, model

    parts = list(model.run_predict(predict_fn, data.batches(x, None, predict_fn.batch_size)))
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def with_epoch_metrics(logs: Mapping[str, float], predict_fn, names: Sequence[str], loss: str,
                       train: tuple, val: tuple) -> dict[str, float]:
    """`logs` plus the epoch-level metrics of the training set (with the end-of-epoch weights)
    and the validation set, in the order loss, metrics..., val_loss, val_metrics..."""
    extra: dict[str, float] = {}
    for prefix, (x, t) in (("", train), ("val_", val)):
        if x is None or t is None:
            continue
        for k, v in compute(names, t, predictions(predict_fn, x), loss).items():
            extra[prefix + k] = v
    merged = {**logs, **extra}
    order = ["loss", *names]
    keys = [k for k in order if k in merged] + [f"val_{k}" for k in order if f"val_{k}" in merged]
    return {**{k: merged[k] for k in keys}, **{k: v for k, v in merged.items() if k not in keys}}
