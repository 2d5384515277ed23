"""A checkpoint as an ONNX model, checked by onnxruntime before it is written.

The graph is built from the checkpoint alone (weights, normalisation, label
encoding), one mapping function per layer type in ``EXPORTERS``, keyed by the
layer's YAML word. It reads the raw features as ``nncli predict`` reads them
(input ``x``, shape (N, *input_shape), float32): the stored normalisation is
the graph's first nodes (Sub, Mul). It outputs the class probabilities
(``probabilities``, (N, classes); a binary classifier's two columns are
1 - p and p, as ``predict`` prints them) or the values (``values``, the
network's output shape, in the target's own units). The class names, input
column names and the rest are in ``metadata_props``.

Mappings that are easy to get wrong (each has a test in tests/export/):
- LSTM: nncli (Keras) gate blocks i, f, c, o; ONNX wants i, o, f, c.
- recurrent inputs are batch-first; onnxruntime refuses ``layout=1``, so the
  input is transposed to (time, batch, features) and ``layout=0`` is used.
- GRU is the reset-after form: ``linear_before_reset=1``, B = [b, b_recurrent].
- embedding ids are rounded (half to even, as nncli's graph does), clipped
  into [0, input_dim - 1] and only then cast and gathered.
- ``same`` padding becomes explicit pads, the extra row/column after.
- dropout is the identity; batch_norm uses its running statistics.
- a network that is not a stack is wired as nncli wires it: each layer reads the output
  names of the layers its ``inputs`` names; merge layers map to Sum, Sub, Mul, Mean, Max and
  Concat (the axis shifted by one for the batch axis).
- conv1d and the 1-D poolings are channels-last: Transpose to (N, C, T), ONNX's 1-D Conv /
  MaxPool / AveragePool (count_include_pad=0: an average over real steps only, as nncli), back.
- ReduceMean / ReduceMax take their axes as an input from opset 18 on, an attribute before.

A layer (or an activation inside a recurrent layer) with no mapping is an
:class:`ExportError` naming it, and nothing is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nncli import __version__, data, fileio, inference
from nncli.errors import ConfigError, NncliError
from nncli.registry import Registry

DEFAULT_OPSET = 17
OPSETS = range(14, 22)          # checked with onnxruntime at 14, 17 and 21
TOLERANCE = 1e-4                # the largest difference from nncli's own outputs a written model may have
CHECK_ROWS = 64                 # rows the export is checked on

EXPORTERS: Registry = Registry("ONNX layer mapping")


class ExportError(NncliError):
    """The model cannot be exported faithfully (exit 1); nothing was written."""


@dataclass
class Graph:
    """The ONNX graph under construction: nodes and initializers, with unique names."""

    opset: int
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    _count: int = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, n_out: int = 1, **attrs) -> str | list[str]:
        from onnx import helper

        outs = [self.name(f"{hint}_{op.lower()}") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs


@dataclass
class LayerInput:
    """What a mapping function gets: the layer object, its parameters (numpy) and shapes."""

    layer: Any
    params: dict[str, np.ndarray]
    input_shape: Any                  # per example (no batch axis); a multi-input layer: a list of shapes
    output_shape: tuple[int, ...]


def f32(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def i64(value) -> np.ndarray:
    return np.asarray(value, dtype=np.int64)


# --- activations --------------------------------------------------------------

def activation(g: Graph, name: str, x: str, hint: str) -> str:
    """The node(s) applying nncli activation `name` to `x` (see nncli.activations)."""
    if name == "linear":
        return x
    simple = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "softplus": "Softplus"}
    if name in simple:
        return g.node(simple[name], [x], hint)
    if name == "leaky_relu":
        return g.node("LeakyRelu", [x], hint, alpha=0.01)
    if name == "elu":
        return g.node("Elu", [x], hint, alpha=1.0)
    if name == "softmax":
        return g.node("Softmax", [x], hint, axis=-1)
    raise ExportError(f"{hint}: activation '{name}' has no ONNX mapping")


#: activations inside ONNX's RNN/LSTM/GRU cells: (name, alpha, beta); None: ONNX has no such cell activation
CELL_ACTIVATIONS = {"linear": ("Affine", 1.0, 0.0), "sigmoid": ("Sigmoid", None, None), "tanh": ("Tanh", None, None),
                    "relu": ("Relu", None, None), "softplus": ("Softplus", None, None),
                    "leaky_relu": ("LeakyRelu", 0.01, None), "elu": ("Elu", 1.0, None)}


# --- layers -------------------------------------------------------------------

@EXPORTERS.register("dense")
def dense(g: Graph, li: LayerInput, x: str) -> str:
    """x W + b on the last axis (MatMul broadcasts over any leading axes; Gemm would need 2-D)."""
    z = g.node("MatMul", [x, g.const(f"{li.layer.name}_W", f32(li.params["W"]))], li.layer.name)
    if "b" in li.params:
        z = g.node("Add", [z, g.const(f"{li.layer.name}_b", f32(li.params["b"]))], li.layer.name)
    return z


@EXPORTERS.register("flatten")
def flatten(g: Graph, li: LayerInput, x: str) -> str:
    return g.node("Flatten", [x], li.layer.name, axis=1)


@EXPORTERS.register("reshape")
def reshape(g: Graph, li: LayerInput, x: str) -> str:
    shape = g.const(f"{li.layer.name}_shape", i64([0, *li.output_shape]))   # 0: keep the batch size
    return g.node("Reshape", [x, shape], li.layer.name)


@EXPORTERS.register("dropout")
def dropout(g: Graph, li: LayerInput, x: str) -> str:
    return x   # inference: the identity


@EXPORTERS.register("embedding")
def embedding(g: Graph, li: LayerInput, x: str) -> str:
    """Round half to even, clip into [0, input_dim - 1] (as nncli does; onnxruntime refuses
    out-of-range ids), cast, Gather rows of W."""
    n = li.layer.config["input_dim"]
    name = li.layer.name
    ids = g.node("Round", [x], name)
    ids = g.node("Clip", [ids, g.const(f"{name}_lo", f32(0.0)), g.const(f"{name}_hi", f32(n - 1))], name)
    ids = g.node("Cast", [ids], name, to=7)   # INT64
    return g.node("Gather", [g.const(f"{name}_W", f32(li.params["W"])), ids], name, axis=0)


@EXPORTERS.register("conv2d")
def conv2d(g: Graph, li: LayerInput, x: str) -> str:
    cfg, name = li.layer.config, li.layer.name
    (kh, kw), (sh, sw) = cfg["kernel_size"], cfg["stride"]
    _, h, w = li.input_shape
    (top, bottom), (left, right) = li.layer.pads(h, w)
    dilations = list(cfg.get("dilation", (1, 1)))
    inputs = [x, g.const(f"{name}_W", f32(li.params["W"]))]
    if "b" in li.params:
        inputs.append(g.const(f"{name}_b", f32(li.params["b"])))
    return g.node("Conv", inputs, name, kernel_shape=[kh, kw], strides=[sh, sw], pads=[top, left, bottom, right],
                  dilations=dilations)


@EXPORTERS.register("activation")
def activation_layer(g: Graph, li: LayerInput, x: str) -> str:
    return x   # the activation itself is applied after every layer that has one


def _variadic(op: str):
    """add -> Sum, average -> Mean, maximum -> Max: one node over every input."""
    def mapping(g: Graph, li: LayerInput, xs: list[str]) -> str:
        return g.node(op, list(xs), li.layer.name)
    return mapping


EXPORTERS.add("add", _variadic("Sum"))
EXPORTERS.add("average", _variadic("Mean"))
EXPORTERS.add("maximum", _variadic("Max"))


@EXPORTERS.register("subtract")
def subtract(g: Graph, li: LayerInput, xs: list[str]) -> str:
    return g.node("Sub", [xs[0], xs[1]], li.layer.name)


@EXPORTERS.register("multiply")
def multiply(g: Graph, li: LayerInput, xs: list[str]) -> str:
    out = xs[0]
    for x in xs[1:]:   # Mul is binary; left to right, as nncli multiplies
        out = g.node("Mul", [out, x], li.layer.name)
    return out


@EXPORTERS.register("concatenate")
def concatenate(g: Graph, li: LayerInput, xs: list[str]) -> str:
    rank = len(li.input_shape[0])
    return g.node("Concat", list(xs), li.layer.name, axis=li.layer._axis(rank) + 1)   # +1: the batch axis


def _pool(op: str):
    def mapping(g: Graph, li: LayerInput, x: str) -> str:
        ph, pw, sh, sw = li.layer._geometry()
        return g.node(op, [x], li.layer.name, kernel_shape=[ph, pw], strides=[sh, sw])   # no pads: floor, as nncli
    return mapping


EXPORTERS.add("max_pool2d", _pool("MaxPool"))
EXPORTERS.add("avg_pool2d", _pool("AveragePool"))


@EXPORTERS.register("batch_norm")
def batch_norm(g: Graph, li: LayerInput, x: str) -> str:
    """Inference form: the running statistics. Channels on axis 1 (images, vectors): BatchNormalization;
    features on the last axis of (time, features): the same arithmetic as elementwise nodes."""
    name, p, eps = li.layer.name, li.params, float(li.layer.config["epsilon"])
    n = p["running_mean"].shape[0]
    gamma = f32(p.get("gamma", np.ones(n)))
    beta = f32(p.get("beta", np.zeros(n)))
    if len(li.input_shape) in (1, 3):
        inputs = [x] + [g.const(f"{name}_{k}", v) for k, v in
                        (("gamma", gamma), ("beta", beta), ("mean", f32(p["running_mean"])),
                         ("var", f32(p["running_var"])))]
        return g.node("BatchNormalization", inputs, name, epsilon=eps)
    y = g.node("Sub", [x, g.const(f"{name}_mean", f32(p["running_mean"]))], name)
    y = g.node("Div", [y, g.const(f"{name}_std", np.sqrt(f32(p["running_var"]) + f32(eps)))], name)
    y = g.node("Mul", [y, g.const(f"{name}_gamma", gamma)], name)
    return g.node("Add", [y, g.const(f"{name}_beta", beta)], name)


def reduce_node(g: Graph, op: str, x: str, axes: list[int], hint: str, keepdims: int = 0) -> str:
    """ReduceMean / ReduceMax over `axes`: an attribute before opset 18, an input from 18 on."""
    if g.opset >= 18:
        return g.node(op, [x, g.const(f"{hint}_axes", i64(axes))], hint, keepdims=keepdims)
    return g.node(op, [x], hint, axes=axes, keepdims=keepdims)


def _channels_first(g: Graph, x: str, hint: str) -> str:
    """(N, T, C) -> (N, C, T), the layout of ONNX's 1-D Conv and pooling (and back: the same perm)."""
    return g.node("Transpose", [x], hint, perm=[0, 2, 1])


@EXPORTERS.register("conv1d")
def conv1d(g: Graph, li: LayerInput, x: str) -> str:
    """Channels-last (N, T, C) around ONNX's channels-first 1-D Conv; the padding as explicit pads."""
    layer, name = li.layer, li.layer.name
    t, c, left, right, _ = layer.geometry(li.input_shape)
    inputs = [_channels_first(g, x, name), g.const(f"{name}_W", f32(li.params["W"]))]
    if "b" in li.params:
        inputs.append(g.const(f"{name}_b", f32(li.params["b"])))
    y = g.node("Conv", inputs, name, kernel_shape=[layer.config["kernel_size"]], strides=[layer.config["stride"]],
               dilations=[layer.config["dilation"]], pads=[left, right])
    return _channels_first(g, y, name)


def _pool1d(op: str):
    def mapping(g: Graph, li: LayerInput, x: str) -> str:
        """Explicit pads; MaxPool never picks a pad, AveragePool's count_include_pad=0 counts real steps."""
        t, c, p, s, left, right, _ = li.layer.geometry(li.input_shape)
        attrs = {"count_include_pad": 0} if op == "AveragePool" else {}
        y = g.node(op, [_channels_first(g, x, li.layer.name)], li.layer.name, kernel_shape=[p], strides=[s],
                   pads=[left, right], **attrs)
        return _channels_first(g, y, li.layer.name)
    return mapping


EXPORTERS.add("max_pool1d", _pool1d("MaxPool"))
EXPORTERS.add("avg_pool1d", _pool1d("AveragePool"))
EXPORTERS.add("global_avg_pool1d", lambda g, li, x: reduce_node(g, "ReduceMean", x, [1], li.layer.name))
EXPORTERS.add("global_max_pool1d", lambda g, li, x: reduce_node(g, "ReduceMax", x, [1], li.layer.name))
EXPORTERS.add("global_avg_pool2d", lambda g, li, x: reduce_node(g, "ReduceMean", x, [2, 3], li.layer.name))
EXPORTERS.add("global_max_pool2d", lambda g, li, x: reduce_node(g, "ReduceMax", x, [2, 3], li.layer.name))


@EXPORTERS.register("layer_norm")
def layer_norm(g: Graph, li: LayerInput, x: str) -> str:
    """Elementwise nodes over the last axis (LayerNormalization needs opset 17; these run on every opset)."""
    name, p, eps = li.layer.name, li.params, float(li.layer.config["epsilon"])
    last = len(li.input_shape)
    centred = g.node("Sub", [x, reduce_node(g, "ReduceMean", x, [last], name, keepdims=1)], name)
    var = reduce_node(g, "ReduceMean", g.node("Mul", [centred, centred], name), [last], name, keepdims=1)
    y = g.node("Div", [centred, g.node("Sqrt", [g.node("Add", [var, g.const(f"{name}_eps", f32(eps))], name)],
                                       name)], name)
    if "gamma" in p:
        y = g.node("Mul", [y, g.const(f"{name}_gamma", f32(p["gamma"]))], name)
    if "beta" in p:
        y = g.node("Add", [y, g.const(f"{name}_beta", f32(p["beta"]))], name)
    return y


@EXPORTERS.register("position_embedding")
def position_embedding(g: Graph, li: LayerInput, x: str) -> str:
    return g.node("Add", [x, g.const(f"{li.layer.name}_P", f32(li.params["P"]))], li.layer.name)


@EXPORTERS.register("multi_head_attention")
def multi_head_attention(g: Graph, li: LayerInput, x) -> str:
    """Attention as MatMul / Softmax nodes (the Attention operator needs opset 23): heads split by
    Reshape (0, T, H, d) + Transpose, causal scores replaced by -inf with Where. `x` is one name
    (self-attention, li.input_shape one shape) or [query, value] (li.input_shape a list of two)."""
    layer, name, p = li.layer, li.layer.name, li.params
    h, dk, dv = layer.config["num_heads"], layer.config["key_dim"], layer.value_dim
    (tq, _), (tv, _) = layer.shapes(li.input_shape)
    names = list(x) if isinstance(x, (list, tuple)) else [x]
    query, value = names[0], names[-1]

    def project(src: str, which: str, t: int, size: int, perm: list[int]) -> str:
        y = g.node("MatMul", [src, g.const(f"{name}_W{which}", f32(p[f"W{which}"]))], name)
        if f"b{which}" in p:
            y = g.node("Add", [y, g.const(f"{name}_b{which}", f32(p[f"b{which}"]))], name)
        y = g.node("Reshape", [y, g.const(f"{name}_heads", i64([0, t, h, size]))], name)
        return g.node("Transpose", [y], name, perm=perm)

    q = project(query, "q", tq, dk, [0, 2, 1, 3])                                          # (N, H, Tq, dk)
    k = project(value, "k", tv, dk, [0, 2, 3, 1])                                          # (N, H, dk, Tv)
    v = project(value, "v", tv, dv, [0, 2, 1, 3])                                          # (N, H, Tv, dv)
    q = g.node("Mul", [q, g.const(f"{name}_scale", f32(1.0 / np.sqrt(dk)))], name)
    scores = g.node("MatMul", [q, k], name)                                                # (N, H, Tq, Tv)
    if layer.config["causal"]:
        allowed = g.const(f"{name}_causal", np.tril(np.ones((tq, tv), dtype=bool)))
        scores = g.node("Where", [allowed, scores, g.const(f"{name}_neg_inf", f32(-np.inf))], name)
    weights = g.node("Softmax", [scores], name, axis=-1)
    out = g.node("Transpose", [g.node("MatMul", [weights, v], name)], name, perm=[0, 2, 1, 3])
    out = g.node("Reshape", [out, g.const(f"{name}_merge", i64([0, tq, h * dv]))], name)
    out = g.node("MatMul", [out, g.const(f"{name}_Wo", f32(p["Wo"]))], name)
    if "bo" in p:
        out = g.node("Add", [out, g.const(f"{name}_bo", f32(p["bo"]))], name)
    return out


#: nncli's gate blocks -> ONNX's order, per layer type (LSTM: i, f, c, o -> i, o, f, c)
GATE_ORDER = {"simple_rnn": [0], "lstm": [0, 3, 1, 2], "gru": [0, 1, 2]}
RNN_OPS = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def gate_blocks(m: np.ndarray, order: list[int], units: int) -> np.ndarray:
    """Reorder the `units`-wide gate blocks of the last axis of `m`."""
    return np.concatenate([m[..., k * units:(k + 1) * units] for k in order], axis=-1)


def _cell_activations(li: LayerInput, type_name: str) -> dict[str, Any]:
    cfg = li.layer.config
    names = [cfg["activation"]] if type_name == "simple_rnn" else [cfg["recurrent_activation"], cfg["activation"]]
    if type_name == "lstm":
        names.append(cfg["activation"])
    acts, alphas, betas = [], [], []
    for act in names:
        if act not in CELL_ACTIVATIONS:
            raise ExportError(f"layer '{li.layer.name}' ({type_name}): activation '{act}' inside the recurrence "
                              f"has no ONNX equivalent; cannot export it")
        op, alpha, beta = CELL_ACTIVATIONS[act]
        acts.append(op)
        if alpha is not None:
            alphas.append(alpha)
        if beta is not None:
            betas.append(beta)
    directions = 2 if cfg["bidirectional"] else 1
    out = {"activations": acts * directions}
    if alphas:
        out["activation_alpha"] = alphas * directions
    if betas:
        out["activation_beta"] = betas * directions
    return out


def _recurrent(type_name: str):
    def mapping(g: Graph, li: LayerInput, x: str) -> str:
        cfg, name, p = li.layer.config, li.layer.name, li.params
        h, order = cfg["units"], GATE_ORDER[type_name]
        suffixes = ["", "_reverse"] if cfg["bidirectional"] else [""]
        W = np.stack([gate_blocks(p[f"W{s}"], order, h).T for s in suffixes])             # (dirs, G*H, F)
        R = np.stack([gate_blocks(p[f"U{s}"], order, h).T for s in suffixes])             # (dirs, G*H, H)
        inputs = [g.node("Transpose", [x], name, perm=[1, 0, 2]),                     # (T, B, F): layout 0
                  g.const(f"{name}_W", f32(W)), g.const(f"{name}_R", f32(R))]
        if "b" in p:
            zeros = np.zeros(len(order) * h, np.float32)
            B = np.stack([np.concatenate([gate_blocks(p[f"b{s}"], order, h),
                                          gate_blocks(p[f"b_recurrent{s}"], order, h) if f"b_recurrent{s}" in p
                                          else zeros]) for s in suffixes])            # (dirs, 2*G*H)
            inputs.append(g.const(f"{name}_B", f32(B)))
        attrs = dict(hidden_size=h, direction="bidirectional" if cfg["bidirectional"] else "forward",
                     **_cell_activations(li, type_name))
        if type_name == "gru":
            attrs["linear_before_reset"] = 1   # nncli's GRU is the reset-after form
        n_out = 3 if type_name == "lstm" else 2
        outs = g.node(RNN_OPS[type_name], inputs, name, n_out=n_out, **attrs)
        if cfg["return_sequences"]:                                                   # Y: (T, dirs, B, H)
            y = g.node("Transpose", [outs[0]], name, perm=[2, 0, 1, 3])               # (B, T, dirs, H)
            return g.node("Reshape", [y, g.const(f"{name}_shape", i64([0, 0, -1]))], name)
        y = g.node("Transpose", [outs[1]], name, perm=[1, 0, 2])                      # Y_h (dirs, B, H) -> (B, dirs, H)
        return g.node("Reshape", [y, g.const(f"{name}_shape", i64([0, -1]))], name)  # forward then backward
    return mapping


for _word in RNN_OPS:
    EXPORTERS.add(_word, _recurrent(_word))


# --- the whole model ----------------------------------------------------------

def build(model: inference.Loaded, opset: int = DEFAULT_OPSET):
    """The ONNX ModelProto of a loaded checkpoint (not yet checked)."""
    from onnx import TensorProto, helper

    ck, net = model.ck, model.net
    g = Graph(opset)
    x = "x"
    if ck.normalizer.kind != "none":
        x = g.node("Sub", [x, g.const("norm_shift", f32(ck.normalizer.shift))], "normalize")
        x = g.node("Mul", [x, g.const("norm_scale", f32(ck.normalizer.scale))], "normalize")
    shape, outs = tuple(ck.input_shape), []   # outs: each layer's output tensor name (the graph's wiring)
    for i, (spec, layer, out_shape) in enumerate(zip(net.specs, net.layers, net.shapes)):
        if spec.type not in EXPORTERS:
            raise ExportError(f"{model.path}: layer '{layer.name}' (type {spec.type}) cannot be exported to ONNX "
                              f"(no mapping; exportable: {', '.join(EXPORTERS.names())}); nothing was written")
        params = {k.split("/", 1)[1]: np.asarray(v) for k, v in ck.params.items() if k.split("/", 1)[0] == layer.name}
        xs = [x if j < 0 else outs[j] for j in net.sources[i]]
        y = EXPORTERS.get(spec.type)(g, LayerInput(layer, params, net.input_shapes(i), out_shape),
                                     xs if layer.multi_input() else xs[0])
        if layer.activation:
            y = activation(g, layer.activation, y, layer.name)
        outs.append(y)
        shape = out_shape
    x = outs[-1]
    enc = ck.encoding
    if enc.kind == "binary":   # one sigmoid column -> (1 - p, p), the two columns predict prints
        one = g.const("one", f32(1.0))
        x = g.node("Concat", [g.node("Sub", [one, x], "binary"), x], "binary", axis=1)
    ts = ck.target_scaler  # a standardised regression target: back in its own units, inside the graph
    if ts.kind != "none":
        x = g.node("Div", [x, g.const("target_scale", f32(ts.scale))], "target_units")
        x = g.node("Add", [x, g.const("target_shift", f32(ts.shift))], "target_units")
    out_name, out_shape = ("probabilities", [len(enc.classes)]) if enc.kind != "values" else ("values", list(shape))
    g.nodes.append(helper.make_node("Identity", [x], [out_name], name="output"))
    graph = helper.make_graph(
        g.nodes, f"nncli_{os.path.splitext(os.path.basename(model.path))[0]}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *ck.input_shape])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", *out_shape])],
        g.initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                   producer_name="nncli", producer_version=__version__)
    onnx_model.ir_version = min(onnx_model.ir_version, 10)   # onnxruntime >= 1.20 reads IR 10
    meta = {"nncli_version": __version__, "task": ck.task, "loss": ck.loss, "output": out_name,
            "input_shape": json.dumps(list(ck.input_shape)),
            "input_names": json.dumps(inference.input_names(ck, model.path)
                                      if int(np.prod(ck.input_shape)) <= inference.MAX_CSV_INPUTS else []),
            "normalization": ck.normalizer.kind + " (inside the graph)", "created": ck.created,
            "epoch": str(ck.epoch)}
    if enc.kind != "values":
        meta["classes"] = json.dumps(list(enc.classes))
    else:
        meta["target"] = ck.y_name or ""
    helper.set_model_props(onnx_model, meta)
    return onnx_model


def sample_rows(model: inference.Loaded, n: int = CHECK_ROWS, seed: int = 0) -> tuple[np.ndarray, str]:
    """Raw input rows to check an export on: the first `n` rows of the stored config's data.train
    when it is readable, else random rows spanning the normalised range (ids for an embedding)."""
    ck = model.ck
    train = (model.config.get("data") or {}).get("train")
    if isinstance(train, str) and os.path.isfile(train):
        try:
            names = (ck.x_names if ck.x_names and len(ck.x_names) == 1 else []) if data.is_hdf5(train) \
                else inference.input_names(ck, train)
            delimiter, missing = inference.reading(model)
            table = data.read(train, None, ck.y_name, with_targets=False, expect_x=names, delimiter=delimiter,
                              missing=missing)
            if table.x.shape[1:] == ck.input_shape and len(table.x):
                return table.x[:n].astype(np.float32), f"the first {min(n, len(table.x))} rows of {train}"
        except NncliError:
            pass
    rng = np.random.default_rng(seed)
    first = model.net.specs[0].type if model.net.specs else ""
    if first == "embedding":   # ids, some out of range (the graph clips them)
        dim = model.net.layers[0].config["input_dim"]
        return rng.integers(-2, dim + 2, size=(n, *ck.input_shape)).astype(np.float32), f"{n} random token ids"
    z = rng.uniform(-2.0, 2.0, size=(n, *ck.input_shape)) if ck.normalizer.kind != "minmax" \
        else rng.uniform(0.0, 1.0, size=(n, *ck.input_shape))
    if ck.normalizer.kind != "none":
        z = z / ck.normalizer.scale + ck.normalizer.shift
    return z.astype(np.float32), f"{n} random rows"


def reference(model: inference.Loaded, raw: np.ndarray) -> np.ndarray:
    """nncli's own outputs for raw rows, shaped as the ONNX model's output."""
    out = model.ck.target_scaler.invert(inference.outputs(model, model.ck.normalizer.apply(raw)))
    if model.ck.encoding.kind == "binary":
        p = out.reshape(len(out)).astype(np.float64)
        return np.stack([1.0 - p, p], axis=1)
    return out


def run_onnx(model_bytes: bytes, raw: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": raw.astype(np.float32)})[0]


def check(model: inference.Loaded, onnx_model, tolerance: float = TOLERANCE) -> float:
    """onnx.checker, then onnxruntime against nncli on a few rows; returns the largest difference."""
    import onnx

    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{model.path}: the ONNX model fails onnx.checker: {str(exc).splitlines()[0]}; "
                          f"nothing was written") from None
    raw, where = sample_rows(model)
    try:
        got = run_onnx(onnx_model.SerializeToString(), raw)
    except Exception as exc:   # onnxruntime's own exception types (Fail, InvalidGraph, ...)
        raise ExportError(f"{model.path}: onnxruntime cannot run the exported model: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; nothing was written") from None
    want = reference(model, raw)
    if got.shape != want.shape:
        raise ExportError(f"{model.path}: the ONNX model outputs shape {got.shape[1:]} per example, nncli "
                          f"{want.shape[1:]}; nothing was written")
    ts = model.ck.target_scaler  # a target in its own units (prices ~1e5): compared in the units trained on
    per_unit = np.asarray(ts.scale, dtype=np.float64) if ts.kind != "none" else 1.0
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)) * per_unit)) if got.size else 0.0
    if not diff <= tolerance:
        raise ExportError(f"{model.path}: the ONNX model differs from nncli's predictions by {diff:.3g} on {where} "
                          f"(more than {tolerance:g}); nothing was written")
    return diff


@dataclass
class Exported:
    path: str
    opset: int
    max_diff: float
    output: str
    nodes: int


def export(model_path: str, output: str, opset: int = DEFAULT_OPSET) -> Exported:
    """Export the checkpoint at `model_path` to ONNX at `output` (atomically), checked first."""
    if opset not in OPSETS:
        raise ConfigError(f"--opset {opset}: expected {OPSETS.start} to {OPSETS.stop - 1}")
    target = fileio.output_target(output, inputs=(model_path,), what="ONNX model")
    if target.kind == "stdout":
        raise ConfigError("-o -: an ONNX model is binary; give a file name")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise NncliError(f"export needs onnx and onnxruntime ({exc.name} is missing): "
                         f"pip install 'nncli[onnx]'") from None
    model = inference.load_model(model_path)
    onnx_model = build(model, opset)
    diff = check(model, onnx_model)
    blob = onnx_model.SerializeToString()
    try:
        with fileio.open_output(target, binary=True) as fh:
            fh.write(blob)
    except OSError as exc:
        raise NncliError(f"{target.path}: cannot write: {exc.strerror or exc}; the previous file is unchanged") from None
    return Exported(target.path, opset, diff, onnx_model.graph.output[0].name, len(onnx_model.graph.node))


Mapping = Callable[[Graph, LayerInput, str], str]
