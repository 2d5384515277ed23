"""multi_head_attention and position_embedding, over (time, features) input.

``multi_head_attention`` follows Keras MultiHeadAttention (key = value):

    Q = q Wq + bq    (Tq, H * key_dim)      K = v Wk + bk    (Tv, H * key_dim)
    V = v Wv + bv    (Tv, H * value_dim)    per head h:
    A_h = softmax(Q_h K_h^T / sqrt(key_dim))            (Tq, Tv), softmax over the keys
    out = concat_h(dropout(A_h) V_h) Wo + bo            (Tq, features of q)

- ``causal``: query position i attends to key positions j <= i only (Keras' ``use_causal_mask``:
  the lower triangle of the (Tq, Tv) score matrix); masked scores are -inf before the softmax,
  so a future input has exactly no effect on an earlier output.
- ``dropout``: inverted dropout on the attention weights A in the training graph only, with the
  SAME counter-based mask as the ``dropout`` layer (nncli.layers.dropout: keyed by the run's seed,
  this layer's name and the step counter ``iterations``), so a resumed run draws the same masks.
- Weights are 2-D matrices: Wq (Fq, H * key_dim), Wk (Fv, H * key_dim), Wv (Fv, H * value_dim),
  Wo (H * value_dim, Fq), with head h in columns h * key_dim .. (h + 1) * key_dim - 1 (Keras'
  (F, H, key_dim) kernels reshaped); biases bq, bk, bv, bo when ``use_bias``.

One input (self-attention): query = value = the layer's input. Two inputs ``[query, value]``:
:meth:`MultiHeadAttention.output_shape` and :meth:`init_params` take a list of the two per-example
shapes and :meth:`linear` a list of the two symbolic tensors; :meth:`attend` is the core both use.

``position_embedding`` adds a learned table P (time, features) to each example (as keras_hub's
PositionEmbedding added to its input); the table's size comes from the input shape.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import zero_grad

from nncli import initializers
from nncli.layers.base import LAYERS, Layer, ShapeError, initializer_key
from nncli.layers.conv1d import example_shape
from nncli.layers.dropout import dropout_keep_mask
from nncli.schema import Key, boolean, integer, number, optional


def _sequence(layer_type: str, shape, what: str = "input") -> tuple[int, int]:
    shape = tuple(int(d) for d in shape)
    if len(shape) != 2:
        hint = f"; use {{type: reshape, shape: [{shape[0]}, 1]}} for one feature" if len(shape) == 1 else ""
        raise ShapeError(f"{layer_type} expects 2-D (time, features) {what} per example, got shape {shape}{hint}")
    return shape


def _is_shape_list(input_shape) -> bool:
    """A list of per-example shapes (several inputs), not one shape."""
    return len(input_shape) > 0 and isinstance(input_shape[0], (tuple, list))


@LAYERS.register("multi_head_attention")
class MultiHeadAttention(Layer):
    """Scaled dot-product attention with several heads, as Keras MultiHeadAttention (see the module)."""

    kind = "dense"
    #: how many inputs the layer takes: 1 (self-attention) or 2 (`inputs: [query, value]`); as a
    #: multi-input layer it receives lists (of one or two) from the network
    n_inputs = (1, 2)
    keys = {
        "num_heads": Key(integer(min=1, max=4096), doc="number of attention heads"),
        "key_dim": Key(integer(min=1, max=100_000), doc="size of each head's query and key"),
        "value_dim": Key(optional(integer(min=1, max=100_000)), None, "size of each head's value (default: key_dim)"),
        "causal": Key(boolean(), False, "position i attends to positions <= i only"),
        "dropout": Key(number(min=0.0, max=1.0, max_open=True), 0.0,
                       "dropout rate on the attention weights (training only)"),
        "use_bias": Key(boolean(), True),
        "initializer": initializer_key("glorot_uniform"),
    }

    @property
    def value_dim(self) -> int:
        return self.config["value_dim"] or self.config["key_dim"]

    def shapes(self, input_shape) -> tuple[tuple[int, int], tuple[int, int]]:
        """(query shape, value shape) per example, from one shape or a list of two."""
        if _is_shape_list(input_shape) and len(input_shape) == 1:
            input_shape = input_shape[0]
        if _is_shape_list(input_shape):
            if len(input_shape) != 2:
                raise ShapeError(f"multi_head_attention takes 1 input (self-attention) or 2 ([query, value]), "
                                 f"got {len(input_shape)}")
            return (_sequence("multi_head_attention", input_shape[0], "query"),
                    _sequence("multi_head_attention", input_shape[1], "value"))
        q = _sequence("multi_head_attention", input_shape)
        return q, q

    def output_shape(self, input_shape):
        self.seen_shapes = self.shapes(input_shape)
        return self.seen_shapes[0]

    def init_params(self, input_shape, rng):
        (_, fq), (_, fv) = self.shapes(input_shape)
        hk, hv = self.config["num_heads"] * self.config["key_dim"], self.config["num_heads"] * self.value_dim
        init = self.config["initializer"]
        params = {}
        for name, shape in (("q", (fq, hk)), ("k", (fv, hk)), ("v", (fv, hv)), ("o", (hv, fq))):
            params[f"W{name}"] = initializers.make(init, shape, rng)
            if self.config["use_bias"]:
                params[f"b{name}"] = np.zeros(shape[1], dtype="float32")
        return params

    def linear(self, x, params, ctx):
        if isinstance(x, (list, tuple)):
            query, value = (x[0], x[0]) if len(x) == 1 else x
        else:
            query, value = x, x
        return self.attend(query, value, params, ctx)

    def attend(self, query, value, params, ctx):
        """The attention of symbolic `query` (B, Tq, Fq) over `value` (B, Tv, Fv): (B, Tq, Fq)."""
        seen = getattr(self, "seen_shapes", (None, None))
        tq, _ = example_shape(self, query, seen[0], "query")
        tv, _ = example_shape(self, value, seen[1], "value")
        h, dk, dv = self.config["num_heads"], self.config["key_dim"], self.value_dim
        batch = query.shape[0]

        def project(t, name, length, size):
            y = pt.tensordot(t, params[f"W{name}"], axes=[[2], [0]])
            if f"b{name}" in params:
                y = y + params[f"b{name}"]
            return y.reshape((batch, length, h, size)).dimshuffle(0, 2, 1, 3)            # (B, H, T, size)

        q = project(query, "q", tq, dk) * np.asarray(1.0 / np.sqrt(dk), dtype=query.dtype)
        k = project(value, "k", tv, dk)
        v = project(value, "v", tv, dv)
        scores = pt.matmul(q, k.dimshuffle(0, 1, 3, 2))                                   # (B, H, Tq, Tv)
        if self.config["causal"]:
            allowed = np.tril(np.ones((tq, tv), dtype=bool))
            scores = pt.switch(allowed, scores, np.asarray(-np.inf, dtype=scores.dtype))
        # softmax over the keys, written out: PyTensor's Softmax op computes in float32 under the C
        # backend once floatX is float32, even on float64 inputs (measured: 1.2e-7 off)
        # (the max only keeps exp finite: the softmax does not depend on it, so no gradient flows
        # through it, which saves the (B, H, Tq, Tv) argmax mask of max's gradient)
        e = pt.exp(scores - zero_grad(pt.max(scores, axis=-1, keepdims=True)))
        weights = e / pt.sum(e, axis=-1, keepdims=True)
        rate = self.config["dropout"]
        if ctx.training and rate > 0.0:
            weights = self._dropout(weights, (query.type.shape[0], h, tq, tv), rate, ctx)
        out = pt.matmul(weights, v).dimshuffle(0, 2, 1, 3).reshape((batch, tq, h * dv))  # (B, Tq, H * dv)
        out = pt.tensordot(out, params["Wo"], axes=[[2], [0]])
        return out + params["bo"] if "bo" in params else out

    def _dropout(self, weights, shape, rate, ctx):
        if shape[0] is None:
            raise ShapeError(f"{self.name}: attention dropout needs a static batch size")
        if "iterations" not in ctx.state:
            raise ValueError(f"{self.name}: the training graph needs ctx.state['iterations'] (the step counter)")
        keep = dropout_keep_mask(shape, ctx.state["iterations"], int(ctx.seed), self.name, rate)
        return pt.switch(keep, weights * np.asarray(1.0 / (1.0 - rate), dtype=weights.dtype),
                         pt.zeros_like(weights))


@LAYERS.register("position_embedding")
class PositionEmbedding(Layer):
    """x + P, with P a learned (time, features) table the size of the input (keras_hub PositionEmbedding
    added to its input)."""

    keys = {"initializer": initializer_key("glorot_uniform")}

    def output_shape(self, input_shape):
        return _sequence("position_embedding", input_shape)

    def init_params(self, input_shape, rng):
        return {"P": initializers.make(self.config["initializer"], tuple(int(d) for d in input_shape), rng)}

    def linear(self, x, params, ctx):
        return x + params["P"]
