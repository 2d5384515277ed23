"""Activation functions, by YAML name: symbolic PyTensor tensor -> tensor."""

from __future__ import annotations

import pytensor.tensor as pt

from nncli.registry import Registry

ACTIVATIONS: Registry = Registry("activation")


@ACTIVATIONS.register("linear")
def linear(x):
    return x


@ACTIVATIONS.register("sigmoid")
def sigmoid(x):
    return pt.sigmoid(x)


@ACTIVATIONS.register("tanh")
def tanh(x):
    return pt.tanh(x)


@ACTIVATIONS.register("relu")
def relu(x):
    return pt.maximum(x, 0)


@ACTIVATIONS.register("leaky_relu")
def leaky_relu(x, alpha: float = 0.01):
    return pt.switch(x > 0, x, alpha * x)


@ACTIVATIONS.register("elu")
def elu(x, alpha: float = 1.0):
    return pt.switch(x > 0, x, alpha * pt.expm1(pt.minimum(x, 0)))


@ACTIVATIONS.register("softplus")
def softplus(x):
    return pt.softplus(x)


@ACTIVATIONS.register("softmax")
def softmax(x):
    return pt.special.softmax(x, axis=-1)


def apply(name: str, x):
    return ACTIVATIONS.get(name)(x)
