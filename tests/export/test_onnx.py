"""`nncli export` to ONNX: every layer type, the pitfalls of the mapping, every shipped example.

The reference is always nncli itself (inference.outputs / `nncli predict`), and the
ONNX side is always run by onnxruntime, which shares no code with nncli.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402

from nncli import checkpoint, cli, inference, network, spec  # noqa: E402
from nncli.data import Encoding, Normalizer  # noqa: E402
from nncli.export import onnx as onnx_export  # noqa: E402
from nncli.layers import LAYERS, Layer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TIGHT = 1e-5


def make_checkpoint(path: Path, layers: list[dict], input_shape, seed: int = 0, normalizer=None,
                    encoding=None, loss: str = "mse") -> Path:
    """A checkpoint of randomly initialised weights (biases and running statistics randomised
    too, so that every parameter matters), written with nncli's own checkpoint writer."""
    specs = spec.parse_layers(layers, "test")
    net = network.Network(specs, tuple(input_shape))
    rng = np.random.default_rng(seed)
    params, state = net.initial_values(rng)
    for k in params:
        if k.endswith(("/b", "/b_reverse", "/b_recurrent", "/b_recurrent_reverse", "/beta",
                       "/bq", "/bk", "/bv", "/bo")):
            params[k] = rng.normal(0, 0.5, params[k].shape).astype(np.float32)
        if k.endswith("/gamma"):
            params[k] = rng.uniform(0.5, 1.5, params[k].shape).astype(np.float32)
    for k in state:
        state[k] = (rng.uniform(0.5, 2.0, state[k].shape) if k.endswith("running_var")
                    else rng.normal(0, 0.5, state[k].shape)).astype(np.float32)
    graph = not spec.is_chain(specs)   # as Spec.resolved stores a graph: every layer with its inputs
    config = {"layers": [{"type": s.type, "name": s.name, **({"inputs": list(s.inputs)} if graph else {}),
                          **dict(s.config)} for s in specs]}
    config["layers"] = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in l.items()} for l in config["layers"]]
    ck = checkpoint.Checkpoint(
        config_yaml=yaml.safe_dump(config), input_shape=tuple(input_shape),
        task="classification" if encoding is not None and encoding.kind != "values" else "regression",
        loss=loss, params={**params, **state}, trainable=list(params),
        normalizer=normalizer or Normalizer("none"), encoding=encoding or Encoding("values"),
        rng={"shuffle": np.random.default_rng(0).bit_generator.state, "batch": 0, "sums": []})
    checkpoint.save(ck, path)
    return path


def compare(path: Path, x: np.ndarray, opset: int = 17) -> float:
    """Max |onnxruntime - nncli| on raw rows x (the model built but not checked by export)."""
    model = inference.load_model(path)
    proto = onnx_export.build(model, opset)
    onnx.checker.check_model(proto, full_check=True)
    got = onnx_export.run_onnx(proto.SerializeToString(), x)
    want = onnx_export.reference(model, x)
    assert got.shape == want.shape
    return float(np.max(np.abs(got.astype(np.float64) - want)))


# --- every layer type --------------------------------------------------------

CASES = {
    "dense": ([{"type": "dense", "units": 5, "activation": "tanh"}, {"type": "dense", "units": 3}], (4,)),
    "dense_3d": ([{"type": "dense", "units": 6, "activation": "relu"}], (3, 4)),
    "flatten_reshape": ([{"type": "reshape", "shape": [2, 3, 2]}, {"type": "flatten"},
                         {"type": "dense", "units": 2}], (12,)),
    "embedding": ([{"type": "embedding", "input_dim": 7, "output_dim": 3}, {"type": "flatten"}], (5,)),
    "conv_valid": ([{"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"}], (2, 6, 7)),
    "conv_same_stride": ([{"type": "conv2d", "filters": 3, "kernel_size": [2, 4], "stride": 2, "padding": "same",
                           "use_bias": False}], (2, 7, 9)),
    "conv_pads_dilation": ([{"type": "conv2d", "filters": 3, "kernel_size": [3, 2], "padding": [[1, 2], [0, 1]],
                             "dilation": [2, 1]}], (2, 6, 5)),
    "max_pool": ([{"type": "max_pool2d", "pool_size": 2}], (3, 7, 6)),
    "max_pool_overlap": ([{"type": "max_pool2d", "pool_size": 3, "stride": 1}], (2, 6, 6)),
    "avg_pool": ([{"type": "avg_pool2d", "pool_size": [2, 3]}], (2, 7, 8)),
    "avg_pool_overlap": ([{"type": "avg_pool2d", "pool_size": 3, "stride": 2}], (2, 7, 7)),
    "dropout": ([{"type": "dense", "units": 4}, {"type": "dropout", "rate": 0.5}], (3,)),
    "batch_norm_vector": ([{"type": "batch_norm"}], (5,)),
    "batch_norm_image": ([{"type": "batch_norm", "center": False}], (3, 4, 4)),
    "batch_norm_sequence": ([{"type": "batch_norm", "scale": False}], (6, 4)),
    "simple_rnn": ([{"type": "simple_rnn", "units": 5}], (7, 3)),
    "simple_rnn_relu_seq": ([{"type": "simple_rnn", "units": 4, "activation": "relu", "return_sequences": True}],
                            (6, 3)),
    "lstm": ([{"type": "lstm", "units": 5}], (7, 3)),
    "lstm_bi_seq": ([{"type": "lstm", "units": 4, "bidirectional": True, "return_sequences": True}], (6, 2)),
    "lstm_no_bias": ([{"type": "lstm", "units": 3, "use_bias": False}], (4, 2)),
    "gru": ([{"type": "gru", "units": 5}], (7, 3)),
    "gru_bi": ([{"type": "gru", "units": 4, "bidirectional": True}], (6, 3)),
    # a graph: every merge layer, a layer used by several, the input used twice, the activation layer
    "merge_graph": ([{"type": "dense", "units": 5, "activation": "tanh", "name": "a"},
                     {"type": "dense", "units": 5, "name": "b", "inputs": "input"},
                     {"type": "add", "inputs": ["a", "b", "a"], "name": "s"},
                     {"type": "subtract", "inputs": ["s", "b"], "name": "d"},
                     {"type": "multiply", "inputs": ["d", "b", "a"], "name": "m"},
                     {"type": "average", "inputs": ["m", "a"], "name": "v"},
                     {"type": "maximum", "inputs": ["v", "b"], "name": "x"},
                     {"type": "concatenate", "inputs": ["x", "a"], "name": "c"},
                     {"type": "activation", "activation": "sigmoid"}], (4,)),
    "concatenate_axes": ([{"type": "dense", "units": 2, "name": "d"},
                          {"type": "concatenate", "inputs": ["input", "d"], "name": "c"},
                          {"type": "concatenate", "axis": 0, "inputs": ["c", "c"], "name": "c0"},
                          {"type": "concatenate", "axis": -2, "inputs": ["c0", "c"]}], (3, 4)),
    "gru_seq_stacked": ([{"type": "gru", "units": 4, "return_sequences": True},
                         {"type": "gru", "units": 3, "return_sequences": True}], (5, 2)),
    "conv1d_causal_dilated": ([{"type": "conv1d", "filters": 4, "kernel_size": 3, "dilation": 2, "padding": "causal",
                                "activation": "relu"}], (9, 3)),
    "conv1d_same_even_stride": ([{"type": "conv1d", "filters": 3, "kernel_size": 4, "stride": 2, "padding": "same"}],
                                (9, 2)),
    "conv1d_explicit_pads": ([{"type": "conv1d", "filters": 3, "kernel_size": 5, "stride": 2, "padding": 1,
                               "use_bias": False},
                              {"type": "conv1d", "filters": 2, "kernel_size": 2, "stride": 3, "padding": [2, 1]}],
                             (10, 2)),
    "pool1d_same": ([{"type": "max_pool1d", "pool_size": 3, "stride": 2, "padding": "same"},
                     {"type": "avg_pool1d", "pool_size": 4, "stride": 1, "padding": "same"}], (9, 3)),
    "pool1d_valid": ([{"type": "avg_pool1d"}, {"type": "max_pool1d", "pool_size": 2, "stride": 1}], (9, 3)),
    "global_pool1d": ([{"type": "conv1d", "filters": 4, "kernel_size": 2}, {"type": "global_max_pool1d"}], (7, 3)),
    "global_avg_pool1d": ([{"type": "global_avg_pool1d"}], (7, 3)),
    "global_pool2d": ([{"type": "global_avg_pool2d"}], (3, 4, 5)),
    "global_max_pool2d": ([{"type": "global_max_pool2d"}], (3, 4, 5)),
    "layer_norm": ([{"type": "layer_norm"}], (6, 4)),
    "layer_norm_vector": ([{"type": "layer_norm", "center": False, "epsilon": 0.1}], (5,)),
    "attention_block": ([{"type": "dense", "units": 8}, {"type": "position_embedding"},
                         {"type": "multi_head_attention", "num_heads": 2, "key_dim": 3, "value_dim": 2,
                          "causal": True, "dropout": 0.5}, {"type": "layer_norm"}], (6, 3)),
    "attention_no_bias": ([{"type": "multi_head_attention", "num_heads": 3, "key_dim": 2, "use_bias": False}], (5, 4)),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("layers")
    return {name: make_checkpoint(folder / f"{name}.h5", layers, shape, seed=i)
            for i, (name, (layers, shape)) in enumerate(CASES.items())}


def test_every_layer_type_has_a_case():
    used = {l["type"] for layers, _ in CASES.values() for l in layers}
    assert used == set(LAYERS.names()) - {n for n in LAYERS.names() if n.startswith("fake_")}
    assert set(LAYERS.names()) - {"fake_unexportable"} <= set(onnx_export.EXPORTERS.names())


@pytest.mark.parametrize("name", list(CASES))
def test_layer_matches_nncli(ckpts, name):
    # 5 rows, and time steps != batch: a wrong transpose of batch-first inputs cannot pass
    shape = CASES[name][1]
    x = np.random.default_rng(1).normal(0, 1.5, size=(5, *shape)).astype(np.float32)
    if name == "embedding":
        x = np.random.default_rng(1).integers(0, 7, size=(5, *shape)).astype(np.float32)
    assert compare(ckpts[name], x) <= TIGHT


@pytest.mark.parametrize("opset", [14, 21])
def test_other_opsets(ckpts, opset):
    x = np.random.default_rng(2).normal(size=(4, 7, 3)).astype(np.float32)
    assert compare(ckpts["lstm"], x, opset) <= TIGHT
    img = np.random.default_rng(2).normal(size=(4, 3, 4, 4)).astype(np.float32)
    assert compare(ckpts["batch_norm_image"], img, opset) <= TIGHT
    seq = np.random.default_rng(2).normal(size=(4, 7, 3)).astype(np.float32)   # ReduceMean/Max: axes move at 18
    assert compare(ckpts["global_pool1d"], seq, opset) <= TIGHT
    assert compare(ckpts["global_avg_pool1d"], seq, opset) <= TIGHT
    assert compare(ckpts["layer_norm"], seq[:, :6, :].repeat(2, axis=2)[:, :, :4], opset) <= TIGHT


# --- the pitfalls ---------------------------------------------------------------

def test_lstm_gate_order_matters(ckpts, monkeypatch):
    """Keras' i, f, c, o taken as ONNX's order would compute something else: the check refuses it."""
    model = inference.load_model(ckpts["lstm"])
    onnx_export.check(model, onnx_export.build(model))           # the right order passes
    monkeypatch.setitem(onnx_export.GATE_ORDER, "lstm", [0, 1, 2, 3])
    with pytest.raises(onnx_export.ExportError, match="differs from nncli's predictions"):
        onnx_export.check(model, onnx_export.build(model))


def test_lstm_gate_reorder_blocks():
    m = np.repeat(np.arange(4.0)[None, :], 2, axis=1).reshape(1, 8)  # blocks i=0, f=1, c=2, o=3 of width 2
    m = np.array([[0, 0, 1, 1, 2, 2, 3, 3]], float)
    assert onnx_export.gate_blocks(m, onnx_export.GATE_ORDER["lstm"], 2).tolist() == [[0, 0, 3, 3, 1, 1, 2, 2]]


def test_gru_needs_linear_before_reset(ckpts, monkeypatch):
    model = inference.load_model(ckpts["gru"])
    proto = onnx_export.build(model)
    gru = [n for n in proto.graph.node if n.op_type == "GRU"][0]
    assert {a.name: a.i for a in gru.attribute}["linear_before_reset"] == 1
    for a in gru.attribute:
        if a.name == "linear_before_reset":
            a.i = 0
    with pytest.raises(onnx_export.ExportError, match="differs"):
        onnx_export.check(model, proto)


def test_recurrent_layout_is_time_major(ckpts):
    proto = onnx_export.build(inference.load_model(ckpts["lstm_bi_seq"]))
    lstm = [n for n in proto.graph.node if n.op_type == "LSTM"][0]
    assert {a.name: a.i for a in lstm.attribute}.get("layout", 0) == 0
    first = proto.graph.node[0]
    assert first.op_type == "Transpose" and list(first.attribute[0].ints) == [1, 0, 2]


def test_embedding_clips_and_rounds_ids(ckpts):
    """Ids out of range (nncli clips them; onnxruntime's Gather would refuse them) and halves
    (rounded half to even, as nncli's graph does)."""
    x = np.array([[-5, -1, 0, 6, 7], [100, 2.5, 3.5, -0.5, 0.5], [1.4999, 1.5, 5.5, 6.5, 1e6]], np.float32)
    assert compare(ckpts["embedding"], x) <= TIGHT
    model = inference.load_model(ckpts["embedding"])
    want = onnx_export.reference(model, x).reshape(3, 5, 3)
    W = model.ck.params["embedding_1/W"]
    assert np.allclose(want[0, 0], W[0]) and np.allclose(want[1, 0], W[6]) and np.allclose(want[1, 1], W[2])


def test_same_padding_is_explicit_and_asymmetric(ckpts):
    proto = onnx_export.build(inference.load_model(ckpts["conv_same_stride"]))
    conv = [n for n in proto.graph.node if n.op_type == "Conv"][0]
    attrs = {a.name: list(a.ints) for a in conv.attribute}
    assert "auto_pad" not in attrs
    # h 7, k 2, s 2: out 4, total 1 -> (0, 1); w 9, k 4, s 2: out 5, total 3 -> (1, 2); ONNX order t, l, b, r
    assert attrs["pads"] == [0, 1, 1, 2]


@pytest.mark.parametrize("act", ["linear", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "softmax"])
def test_activations(tmp_path, act):
    path = make_checkpoint(tmp_path / "a.h5", [{"type": "dense", "units": 4, "activation": act}], (3,))
    x = np.random.default_rng(3).normal(0, 3, size=(6, 3)).astype(np.float32)
    assert compare(path, x) <= TIGHT


@pytest.mark.parametrize("kind,act", [("simple_rnn", "sigmoid"), ("simple_rnn", "linear"), ("gru", "relu"),
                                      ("lstm", "elu"), ("simple_rnn", "leaky_relu")])
def test_recurrent_cell_activations(tmp_path, kind, act):
    path = make_checkpoint(tmp_path / "r.h5", [{"type": kind, "units": 3, "activation": act}], (4, 2))
    x = np.random.default_rng(4).normal(size=(3, 4, 2)).astype(np.float32)
    assert compare(path, x) <= TIGHT


def test_normalization_inside_the_graph(tmp_path):
    norm = Normalizer("standard", np.array([1.0, -2.0, 30.0], np.float32), np.array([0.5, 2.0, 0.01], np.float32))
    path = make_checkpoint(tmp_path / "n.h5", [{"type": "dense", "units": 2}], (3,), normalizer=norm)
    x = np.array([[1, -2, 30], [3, 0, 100], [-4, 5, -20]], np.float32)
    assert compare(path, x) <= TIGHT
    ops = [n.op_type for n in onnx_export.build(inference.load_model(path)).graph.node]
    assert ops[:2] == ["Sub", "Mul"]


def test_binary_classifier_two_columns(tmp_path):
    path = make_checkpoint(tmp_path / "b.h5", [{"type": "dense", "units": 1, "activation": "sigmoid"}], (3,),
                           encoding=Encoding("binary", ["no", "yes"]), loss="binary_crossentropy")
    out = tmp_path / "b.onnx"
    r = CliRunner().invoke(cli.main, ["export", str(path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"]) == ["no", "yes"] and proto.graph.output[0].name == "probabilities"
    x = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    p = inference.outputs(inference.load_model(path), x).reshape(-1)
    assert np.max(np.abs(got - np.stack([1 - p, p], 1))) <= TIGHT


# --- what cannot be exported --------------------------------------------------

class FakeUnexportable(Layer):
    """A layer type registered only in this test: nncli can run it, export has no mapping."""

    def linear(self, x, params, ctx):
        return x * 2


def test_unexportable_layer_names_it_and_writes_nothing(tmp_path):
    LAYERS.add("fake_unexportable", FakeUnexportable)
    try:
        path = make_checkpoint(tmp_path / "f.h5", [{"type": "dense", "units": 2}, {"type": "fake_unexportable"}],
                               (3,))
        out = tmp_path / "f.onnx"
        r = CliRunner().invoke(cli.main, ["export", str(path), "-o", str(out)])
        assert r.exit_code == 1
        assert r.output.startswith("Error: ") and "layer 'fake_unexportable_2' (type fake_unexportable)" in r.output
        assert len(r.output.strip().splitlines()) == 1 and not out.exists()
    finally:
        LAYERS._items.pop("fake_unexportable", None)


def test_unexportable_cell_activation(tmp_path):
    path = make_checkpoint(tmp_path / "s.h5", [{"type": "gru", "units": 2, "activation": "softmax"}], (3, 2))
    out = tmp_path / "s.onnx"
    out.write_bytes(b"previous")
    r = CliRunner().invoke(cli.main, ["export", str(path), "-o", str(out)])
    assert r.exit_code == 1 and "activation 'softmax' inside the recurrence" in r.output
    assert out.read_bytes() == b"previous"


def test_mismatch_is_an_error_not_a_file(ckpts, tmp_path, monkeypatch):
    monkeypatch.setitem(onnx_export.GATE_ORDER, "lstm", [3, 2, 1, 0])
    out = tmp_path / "bad.onnx"
    r = CliRunner().invoke(cli.main, ["export", str(ckpts["lstm"]), "-o", str(out)])
    assert r.exit_code == 1 and "differs from nncli's predictions" in r.output and not out.exists()


def test_usage_errors(ckpts, tmp_path):
    r = CliRunner().invoke(cli.main, ["export", str(ckpts["dense"]), "-o", str(tmp_path / "x.onnx"), "--opset", "9"])
    assert r.exit_code == 2 and "--opset 9" in r.output
    r = CliRunner().invoke(cli.main, ["export", str(ckpts["dense"]), "-o", str(ckpts["dense"])])
    assert r.exit_code == 2 and "input" in r.output
    r = CliRunner().invoke(cli.main, ["export", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code == 1 and "not found" in r.output


# --- every shipped example, against `nncli predict` on its test file --------------

EXAMPLES = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))


def _nncli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "nncli.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    runs = {}
    for name in EXAMPLES:
        out = folder / name
        r = _nncli("train", f"configs/{name}.yaml", "-o", str(out), "--epochs", "2", "-q")
        assert r.returncode == 0, r.stderr
        runs[name] = out
    return runs


def _test_file(name: str) -> str:
    cfg = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    path = cfg["data"].get("test") or cfg["data"]["train"]   # iris and xor ship no test file: their data
    return str((ROOT / "configs" / path).resolve())


def _inputs_of(model_path: Path, test_file: str) -> np.ndarray:
    """The raw inputs of the test file, read with h5py / csv here (not nncli's reader)."""
    import h5py

    ck = checkpoint.load(model_path)
    if test_file.endswith(".h5"):
        with h5py.File(test_file, "r") as f:
            return np.asarray(f["x"][()], np.float32)
    if ck.columns is not None:
        # typed columns (penguins): the ONNX graph takes the encoded inputs (README "Typed columns"),
        # encoded here with the checkpoint's columns; the encoding itself is checked against values
        # computed by hand in tests/data/test_columns.py
        from nncli.data import columns as columns_mod
        return columns_mod.read_file(ck.columns, test_file, ck.y_name, with_targets=False)[0].x
    with open(test_file, newline="") as fh:
        rows = list(csv.reader(fh))
    idx = [rows[0].index(n) for n in ck.x_names]
    return np.array([[float(r[i]) for i in idx] for r in rows[1:] if r], np.float32)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_matches_nncli_predict(trained, name, tmp_path):
    model = trained[name] / "model.h5"
    out = tmp_path / f"{name}.onnx"
    r = _nncli("export", str(model), "-o", str(out))
    assert r.returncode == 0, r.stderr
    test_file = _test_file(name)
    r = _nncli("predict", str(model), test_file)
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))
    header, body = rows[0], rows[1:]
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"x": _inputs_of(model, test_file)})[0]
    assert len(got) == len(body) > 0
    if "classes" in meta:
        classes = json.loads(meta["classes"])
        assert header == ["label"] + [f"p_{c}" for c in classes]
        want = np.array([[float(v) for v in row[1:]] for row in body])
        assert [row[0] for row in body] == [classes[i] for i in np.argmax(got, axis=1)] or \
            np.max(np.abs(got - want)) <= TIGHT  # labels agree unless two probabilities tie within 1e-5
    else:
        want = np.array([[float(v) for v in row] for row in body])
    # relative to the outputs' size: a regression in its own units (grams, penguins-mass) is float32
    # to about 1e-7 of its magnitude
    assert np.max(np.abs(got.reshape(len(got), -1) - want)) <= TIGHT * max(1.0, float(np.max(np.abs(want))))


@pytest.mark.parametrize("causal", [False, True])
def test_two_input_attention_mapping(causal):
    """The multi_head_attention mapping given [query, value] (the form a multi-input network passes):
    onnxruntime against a numpy Keras-style attention written here."""
    from onnx import TensorProto, helper

    layer_cls = LAYERS.get("multi_head_attention")
    layer = layer_cls("attn", spec.parse_layers([{"type": "multi_head_attention", "num_heads": 2, "key_dim": 3,
                                                  "value_dim": 2, "causal": causal}], "t")[0].config)
    shapes = [(4, 5), (6, 3)]
    assert layer.output_shape(shapes) == (4, 5)
    rng = np.random.default_rng(3)
    p = {k: rng.normal(0, 0.5, size=v.shape).astype(np.float32) for k, v in layer.init_params(shapes, rng).items()}
    g = onnx_export.Graph(17)
    out = onnx_export.EXPORTERS.get("multi_head_attention")(
        g, onnx_export.LayerInput(layer, p, shapes, (4, 5)), ["q", "v"])
    g.nodes.append(helper.make_node("Identity", [out], ["y"]))
    graph = helper.make_graph(g.nodes, "attn", [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["N", 4, 5]),
                                                helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N", 6, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 5])], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model, full_check=True)
    q, v = rng.normal(size=(3, 4, 5)).astype(np.float32), rng.normal(size=(3, 6, 3)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"q": q, "v": v})[0]
    P = {k: a.astype(np.float64) for k, a in p.items()}
    Q, K, V = q @ P["Wq"] + P["bq"], v @ P["Wk"] + P["bk"], v @ P["Wv"] + P["bv"]
    heads = []
    for h in range(2):
        s = Q[..., 3 * h:3 * h + 3] @ K[..., 3 * h:3 * h + 3].transpose(0, 2, 1) / np.sqrt(3)
        if causal:
            s = np.where(np.tril(np.ones((4, 6), bool)), s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        heads.append(a / a.sum(-1, keepdims=True) @ V[..., 2 * h:2 * h + 2])
    want = np.concatenate(heads, -1) @ P["Wo"] + P["bo"]
    np.testing.assert_allclose(got, want, rtol=TIGHT, atol=TIGHT)
