"""Batch normalisation (batch statistics in training, running averages in inference) and layer_norm.

Batch normalisation follows Keras: the batch mean and (biased) variance in
training, the running averages in inference, ``running = momentum * running
+ (1 - momentum) * batch`` after each training step. Batch statistics are
weighted by ``ctx.sample_weight``, so the zero-weight padding rows of the last
batch do not pollute them.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from nncli.layers.base import LAYERS, Layer, ShapeError
from nncli.schema import Key, boolean, number


def _scale_and_center(config, n: int) -> dict[str, np.ndarray]:
    """gamma (ones, with scale: true) and beta (zeros, with center: true) over n features."""
    params = {}
    if config["scale"]:
        params["gamma"] = np.ones(n, dtype="float32")
    if config["center"]:
        params["beta"] = np.zeros(n, dtype="float32")
    return params


@LAYERS.register("batch_norm")
class BatchNorm(Layer):
    """Normalise each feature (each channel of (channels, height, width) input) to zero mean, unit variance.

    Statistics are over the batch axis, and over height and width for 3-D
    input; for 2-D (steps, features) input over the batch and step axes.
    """

    keys = {
        "momentum": Key(number(min=0.0, max=1.0), 0.99, "running = momentum * running + (1 - momentum) * batch"),
        "epsilon": Key(number(min=0.0, min_open=True), 1e-3, "added to the variance"),
        "center": Key(boolean(), True, "learn an offset beta"),
        "scale": Key(boolean(), True, "learn a scale gamma"),
    }

    @staticmethod
    def _feature_axis(input_shape) -> int:
        """Axis of the normalised features in the per-example shape."""
        return 0 if len(input_shape) == 3 else len(input_shape) - 1

    def output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise ShapeError(f"batch_norm expects at least 1-D input per example, got shape {tuple(input_shape)}")
        return input_shape

    def _features(self, input_shape) -> int:
        return int(input_shape[self._feature_axis(input_shape)])

    def init_params(self, input_shape, rng):
        return _scale_and_center(self.config, self._features(input_shape))

    def init_state(self, input_shape):
        n = self._features(input_shape)
        return {"running_mean": np.zeros(n, dtype="float32"), "running_var": np.ones(n, dtype="float32")}

    def linear(self, x, params, ctx):
        nd = x.ndim
        feat = 1 + self._feature_axis((None,) * (nd - 1))   # axis in the batched tensor
        reduce_axes = tuple(a for a in range(nd) if a != feat)
        pattern = ["x"] * nd
        pattern[feat] = 0

        def bcast(v):
            return v.dimshuffle(*pattern)

        dtype = x.dtype
        eps = np.asarray(self.config["epsilon"], dtype=dtype)
        if ctx.training:
            w = ctx.sample_weight
            if w is None:
                w = pt.ones((x.shape[0],), dtype=dtype)
            w_b = w.dimshuffle(0, *(["x"] * (nd - 1)))
            per_example = 1
            for a in reduce_axes[1:]:
                per_example = per_example * x.shape[a]
            total = pt.maximum(pt.sum(w, acc_dtype=dtype), np.asarray(1e-12, dtype=dtype)) * pt.cast(per_example, dtype)
            mean = pt.sum(w_b * x, axis=reduce_axes, acc_dtype=dtype) / total
            centred = x - bcast(mean)
            var = pt.sum(w_b * pt.sqr(centred), axis=reduce_axes, acc_dtype=dtype) / total
            m = np.asarray(self.config["momentum"], dtype=dtype)
            one_m = np.asarray(1.0 - self.config["momentum"], dtype=dtype)
            rm, rv = params["running_mean"], params["running_var"]
            ctx.updates.append((rm, pt.cast(m * rm + one_m * mean, rm.dtype)))
            ctx.updates.append((rv, pt.cast(m * rv + one_m * var, rv.dtype)))
            y = centred / bcast(pt.sqrt(var + eps))
        else:
            y = (x - bcast(params["running_mean"])) / bcast(pt.sqrt(params["running_var"] + eps))
        if "gamma" in params:
            y = y * bcast(params["gamma"])
        if "beta" in params:
            y = y + bcast(params["beta"])
        return y




@LAYERS.register("layer_norm")
class LayerNorm(Layer):
    """Normalise each example over its last axis, as Keras LayerNormalization (axis=-1).

    y = (x - mean) / sqrt(var + epsilon) * gamma + beta, with the mean and the biased variance of
    the last axis (the features of each time step of (time, features) input, the width of an
    image); gamma and beta have the size of that axis. The same graph in training and inference,
    no running statistics.
    """

    keys = {
        "epsilon": Key(number(min=0.0, min_open=True), 1e-3, "added to the variance"),
        "center": Key(boolean(), True, "learn an offset beta"),
        "scale": Key(boolean(), True, "learn a scale gamma"),
    }

    def output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise ShapeError(f"layer_norm expects at least 1-D input per example, got shape {tuple(input_shape)}")
        return input_shape

    def init_params(self, input_shape, rng):
        return _scale_and_center(self.config, int(input_shape[-1]))

    def linear(self, x, params, ctx):
        eps = np.asarray(self.config["epsilon"], dtype=x.dtype)
        mean = pt.mean(x, axis=-1, keepdims=True, acc_dtype=x.dtype)
        centred = x - mean
        var = pt.mean(pt.sqr(centred), axis=-1, keepdims=True, acc_dtype=x.dtype)
        y = centred / pt.sqrt(var + eps)
        if "gamma" in params:
            y = y * params["gamma"]
        if "beta" in params:
            y = y + params["beta"]
        return y
