"""Losses, by YAML name (the metrics, in-graph ones included, are in nncli/metrics.py).

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

import pytensor.tensor as pt

from nncli.registry import Registry

EPS = 1e-7

LOSSES: Registry = Registry("loss")

CLASSIFICATION_LOSSES = ("categorical_crossentropy", "binary_crossentropy")


def rows(x):
    """Flatten every axis but the batch axis (per-example reduction)."""
    return x.reshape((x.shape[0], -1)) if x.ndim > 2 else x


@LOSSES.register("categorical_crossentropy")
def categorical_crossentropy(target, output, logits=None, activation=None):
    if activation == "softmax" and logits is not None:
        logp = pt.special.log_softmax(logits, axis=-1)
    else:
        logp = pt.log(pt.clip(output, EPS, 1.0))
    return -pt.sum(rows(target * logp), axis=1)


@LOSSES.register("binary_crossentropy")
def binary_crossentropy(target, output, logits=None, activation=None):
    if activation == "sigmoid" and logits is not None:
        per = pt.softplus(logits) - target * logits
    else:
        p = pt.clip(output, EPS, 1.0 - EPS)
        per = -(target * pt.log(p) + (1.0 - target) * pt.log1p(-p))
    return pt.mean(rows(per), axis=1)


@LOSSES.register("mse")
def mse(target, output, logits=None, activation=None):
    return pt.mean(rows(pt.sqr(output - target)), axis=1)


@LOSSES.register("mae")
def mae(target, output, logits=None, activation=None):
    return pt.mean(rows(pt.abs(output - target)), axis=1)


def per_example_loss(name: str, target, output, logits, activation):
    return LOSSES.get(name)(target, output, logits=logits, activation=activation)
