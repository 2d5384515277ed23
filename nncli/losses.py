"""Losses and per-example metrics, by YAML name.

Targets always reach the graph as a float matrix shaped like the network
output (class labels become one-hot rows in the data layer), so no loss
indexes with integer arrays (which overflows under the JAX backend of
PyTensor 3.0.7 for batches over 127).

A loss returns one value per example; the trainer weights and averages
them. When the last layer's activation matches the loss (softmax with
categorical cross-entropy, sigmoid with binary cross-entropy) the loss is
computed from the pre-activation in a numerically stable form.
"""

from __future__ import annotations

from typing import Callable

import pytensor.tensor as pt

from nncli.registry import Registry

EPS = 1e-7

LOSSES: Registry = Registry("loss")
METRICS: Registry = Registry("metric")

CLASSIFICATION_LOSSES = ("categorical_crossentropy", "binary_crossentropy")


def _rows(x):
    """Flatten every axis but the batch axis (per-example reduction)."""
    return x.reshape((x.shape[0], -1)) if x.ndim > 2 else x


@LOSSES.register("categorical_crossentropy")
def categorical_crossentropy(target, output, logits=None, activation=None):
    if activation == "softmax" and logits is not None:
        logp = pt.special.log_softmax(logits, axis=-1)
    else:
        logp = pt.log(pt.clip(output, EPS, 1.0))
    return -pt.sum(_rows(target * logp), axis=1)


@LOSSES.register("binary_crossentropy")
def binary_crossentropy(target, output, logits=None, activation=None):
    if activation == "sigmoid" and logits is not None:
        per = pt.softplus(logits) - target * logits
    else:
        p = pt.clip(output, EPS, 1.0 - EPS)
        per = -(target * pt.log(p) + (1.0 - target) * pt.log1p(-p))
    return pt.mean(_rows(per), axis=1)


@LOSSES.register("mse")
def mse(target, output, logits=None, activation=None):
    return pt.mean(_rows(pt.sqr(output - target)), axis=1)


@LOSSES.register("mae")
def mae(target, output, logits=None, activation=None):
    return pt.mean(_rows(pt.abs(output - target)), axis=1)


def per_example_loss(name: str, target, output, logits, activation):
    return LOSSES.get(name)(target, output, logits=logits, activation=activation)


# --- per-example metrics: averaged over all examples of an epoch -------------

MetricFn = Callable[..., object]


@METRICS.register("accuracy")
def accuracy(target, output, loss: str):
    if loss == "binary_crossentropy":
        return pt.mean(_rows(pt.eq(output > 0.5, target > 0.5)), axis=1)
    return pt.eq(pt.argmax(output, axis=-1), pt.argmax(target, axis=-1)).reshape((output.shape[0], -1)).mean(axis=1)


@METRICS.register("mse")
def mse_metric(target, output, loss: str):
    return mse(target, output)


@METRICS.register("mae")
def mae_metric(target, output, loss: str):
    return mae(target, output)


def top_k_accuracy(target, output, k: int):
    """1 when the true class is among the k highest outputs (ties count in its favour)."""
    c = output.shape[-1]
    o, t = output.reshape((-1, c)), target.reshape((-1, c))
    true_score = pt.sum(o * t, axis=1, keepdims=True)
    hit = pt.lt(pt.sum(pt.gt(o, true_score), axis=1), k)
    return hit.reshape((output.shape[0], -1)).mean(axis=1)


def per_example_metric(name: str, target, output, loss: str):
    from nncli.metrics import top_k  # top_<k>_accuracy: any k (nncli.metrics)

    k = top_k(name)
    if k is not None:
        return top_k_accuracy(target, output, k)
    return METRICS.get(name)(target, output, loss)
