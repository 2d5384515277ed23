"""Every metric name: the in-graph per-example scores, the numpy epoch-level scores, the name
rules, and the improvement rule of a monitored value (Monitor).

Two kinds of metric, one registry (METRICS, with the kind on each entry):

* per-example metrics (``accuracy``, ``top_<k>_accuracy``, ``mse``, ``mae``):
  a mean over examples, so they stay in the compiled graph (a symbolic
  score per example, :func:`per_example`) and are exact when summed over
  batches;
* epoch-level metrics (``precision``, ``recall``, ``f1``, ``rmse``, ``r2``):
  not a mean of per-example values, so averaging them over batches would be
  wrong; they are computed here with numpy from every output of the set
  (validation, evaluate, and the training set after each epoch). This module
  never runs the network: the caller hands over the outputs.

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

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pytensor.tensor as pt

from nncli import losses
from nncli.registry import Registry, did_you_mean
from nncli.schema import Invalid, described, integer, show

_TOP_K = re.compile(r"^top_(\d+)_accuracy$")
MAX_TOP_K = 1_000_000


@dataclass(frozen=True)
class Metric:
    """A metric name's entry: its kind, how it is computed and what it needs."""

    kind: str                    # "per_example" (in the compiled graph) or "epoch" (numpy, from all outputs)
    score: Callable              # per_example: (target, output, loss) -> one symbolic value per example;
                                 # epoch: (target, output, loss) -> {name: value} (scores computed together)
    higher_is_better: bool = False
    classification: bool = False  # needs a classification loss


METRICS: Registry[Metric] = Registry("metric")


# --- per-example metrics: symbolic, averaged over all examples of an epoch -----

def accuracy(target, output, loss: str):
    if loss == "binary_crossentropy":
        return pt.mean(losses.rows(pt.eq(output > 0.5, target > 0.5)), axis=1)
    return pt.eq(pt.argmax(output, axis=-1), pt.argmax(target, axis=-1)).reshape((output.shape[0], -1)).mean(axis=1)


def mse(target, output, loss: str):
    return losses.mse(target, output)


def mae(target, output, loss: str):
    return losses.mae(target, output)


def top_k_accuracy(target, output, k: int):
    """1 when the true class is among the k highest outputs (ties count in its favour)."""
    c = output.shape[-1]
    o, t = output.reshape((-1, c)), target.reshape((-1, c))
    true_score = pt.sum(o * t, axis=1, keepdims=True)
    hit = pt.lt(pt.sum(pt.gt(o, true_score), axis=1), k)
    return hit.reshape((output.shape[0], -1)).mean(axis=1)


def per_example(name: str, target, output, loss: str):
    """The symbolic per-example score of metric `name` (top_<k>_accuracy: any k)."""
    k = top_k(name)
    if k is not None:
        return top_k_accuracy(target, output, k)
    return METRICS.get(name).score(target, output, loss)


# --- names --------------------------------------------------------------------

def known_names() -> list[str]:
    return sorted({*METRICS.names(), "top_k_accuracy"})


def top_k(name: str) -> int | None:
    """k for a name top_<k>_accuracy, else None."""
    m = _TOP_K.match(str(name))
    if not m:
        return None
    digits = m.group(1)
    return int(digits) if len(digits) <= 20 else 10**20  # (longer: too big in any case; int() has a limit)


def _kind(name: str) -> str:
    if top_k(name) is not None:
        return "per_example"
    return METRICS.get(name).kind if name in METRICS else ""


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
    if value not in METRICS:
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
        if (top_k(m) or (m in METRICS and METRICS.get(m).classification)) and not classification:
            raise Invalid(f"metrics[{i}]", f"{m} needs a classification loss (categorical_crossentropy, "
                                           f"binary_crossentropy), the loss is {loss}")
        if top_k(m) and loss != "categorical_crossentropy":
            raise Invalid(f"metrics[{i}]", f"{m} needs categorical_crossentropy (one class per example out of "
                                           f"several), the loss is {loss}")
        if metrics.index(m) != i:
            raise Invalid(f"metrics[{i}]", f"{m} is listed twice")


def higher_is_better(name: str) -> bool:
    base = name[4:] if name.startswith("val_") else name
    return top_k(base) is not None or (base in METRICS and METRICS.get(base).higher_is_better)


def in_graph(names: Sequence[str]) -> list[str]:
    return [m for m in names if _kind(m) == "per_example"]


def epoch_level(names: Sequence[str]) -> list[str]:
    return [m for m in names if _kind(m) == "epoch"]


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


def _regression(target: np.ndarray, output: np.ndarray, loss: str) -> dict[str, float]:
    return regression_scores(target, output)


# --- every metric name ------------------------------------------------------------

METRICS.add("accuracy", Metric("per_example", accuracy, higher_is_better=True, classification=True))
METRICS.add("mse", Metric("per_example", mse))
METRICS.add("mae", Metric("per_example", mae))
METRICS.add("precision", Metric("epoch", classification_scores, higher_is_better=True, classification=True))
METRICS.add("recall", Metric("epoch", classification_scores, higher_is_better=True, classification=True))
METRICS.add("f1", Metric("epoch", classification_scores, higher_is_better=True, classification=True))
METRICS.add("rmse", Metric("epoch", _regression))
METRICS.add("r2", Metric("epoch", _regression, higher_is_better=True))


def compute(names: Sequence[str], target: np.ndarray, output: np.ndarray, loss: str) -> dict[str, float]:
    """The epoch-level metrics among `names`, from all targets and outputs of a set."""
    wanted = epoch_level(names)
    scores: dict[str, float] = {}
    for m in wanted:
        if m not in scores:  # scores computed together (precision, recall, f1) come in one call
            scores.update(METRICS.get(m).score(target, output, loss))
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


def with_epoch_metrics(logs: Mapping[str, float], names: Sequence[str], loss: str,
                       train: tuple, val: tuple) -> dict[str, float]:
    """`logs` plus the epoch-level metrics of the training set (with the end-of-epoch weights)
    and the validation set, each given as (targets, outputs) (None: no such set), in the order
    loss, metrics..., val_loss, val_metrics..."""
    extra: dict[str, float] = {}
    for prefix, (t, out) in (("", train), ("val_", val)):
        if t is None or out is None:
            continue
        for k, v in compute(names, t, out, loss).items():
            extra[prefix + k] = v
    merged = {**logs, **extra}
    order = ["loss", *names]
    keys = [k for k in order if k in merged] + [f"val_{k}" for k in order if f"val_{k}" in merged]
    return {**{k: merged[k] for k in keys}, **{k: v for k, v in merged.items() if k not in keys}}


# --- the improvement rule ------------------------------------------------------------

@dataclass
class Monitor:
    """A monitored value and its best so far, with Keras' improvement rule (MonitorCallback), for
    early stopping and reduce_on_plateau: in mode min a value improves on the best when it is below
    best - min_delta, in mode max when above best + min_delta (auto: max for accuracy-like names,
    see higher_is_better). NaN never improves, and any other value improves on a NaN best (the
    start)."""

    name: str
    mode: str = "auto"
    min_delta: float = 0.0
    best: float = math.nan
    best_epoch: int = 0

    def __post_init__(self) -> None:
        if self.mode == "auto":
            self.mode = "max" if higher_is_better(self.name) else "min"

    def improved(self, value: float) -> bool:
        if math.isnan(self.best):
            return not math.isnan(value)
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        """improved(value), and if so `value` becomes the best, seen at `epoch`."""
        better = self.improved(value)
        if better:
            self.best, self.best_epoch = value, epoch
        return better
