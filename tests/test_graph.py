"""Networks beyond a stack (issue 15): `inputs:`, merge layers and the graph checks.

One graph on the blobs data (tests/conftest.py), trained once per module: a residual block
with dropout in its branch, and a diamond (the input feeds a second branch through batch_norm;
the branches join by concatenate and by multiply). It trains, is interrupted mid-epoch and resumes bit-exactly; its checkpoint, read with
h5py + numpy alone (the graph from the stored config's `inputs`), run forward in numpy,
matches `nncli predict`; `nncli evaluate` matches a numpy loss and accuracy; `nncli inspect`
shows the inputs. Then every validation error of the graph, through `nncli config --check`.
"""

from __future__ import annotations

import csv
import io
import json

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from support import InterruptAt, assert_same_arrays, error_line, write_config
import pytensor
import pytensor.tensor as pt

from nncli import checkpoint, errors, initializers, network, spec
from nncli.layers import LAYERS, Context, Layer
from nncli.schema import Key, integer
from nncli.cli import main
from nncli.errors import Interrupted
from nncli.training import trainer

HEAD = """
name: {name}
seed: 3
data:
  train: {train}
  validation: 0.2
  normalize: standard
optimizer: adam
learning_rate: 0.05
epochs: 4
batch_size: 16
steps_per_execution: 2
checkpoint_interval: 0
"""

#: a residual block (h1 + relu(W h1), dropout inside the branch: its counter-based mask must resume
#: exactly) and a diamond (the input feeds a second branch through batch_norm, whose running statistics
#: are state updates; the two branches join twice, by concatenate and by multiply), then subtract
GRAPH = """layers:
  - {type: dense, units: 6, activation: tanh, name: h1}
  - {type: dropout, rate: 0.3, name: drop}
  - {type: dense, units: 6, activation: relu, name: h2}
  - {type: add, inputs: [h1, h2], name: res}
  - {type: dense, units: 6, name: b, inputs: input}
  - {type: batch_norm, name: bn}
  - {type: activation, activation: relu, name: b_relu}
  - {type: concatenate, inputs: [res, b_relu], name: cat}
  - {type: multiply, inputs: [res, b_relu], name: prod}
  - {type: dense, units: 3, name: logits, inputs: cat}
  - {type: dense, units: 3, name: logits2, inputs: prod}
  - {type: subtract, inputs: [logits, logits2]}
  - {type: activation, activation: softmax, name: probs}
"""


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory, blobs_csv):
    """(config, the uninterrupted run's folder, the interrupted-then-resumed run's folder).
    Three trainings of 4 short epochs (each compiles its step: most of this module's time), shared
    by every test here."""
    name = "graph"
    folder = tmp_path_factory.mktemp(name)
    config = write_config(folder, HEAD.format(name=name, train=blobs_csv) + GRAPH)
    trainer.train(config, output=str(folder / "whole"))
    with pytest.raises(Interrupted):   # 72 training rows: 5 minibatches an epoch; stop in the middle of epoch 3
        trainer.train(config, output=str(folder / "resumed"), reporter=InterruptAt(epoch=3, batch=2))
    ck = checkpoint.load(folder / "resumed" / "last.h5")
    assert (ck.epoch, ck.rng["batch"]) == (2, 2)
    trainer.train(config, output=str(folder / "resumed"), resume=True)
    return name, config, folder / "whole", folder / "resumed"


def test_resume_mid_epoch_is_bit_exact(graph_run):
    _, _, whole, resumed = graph_run
    assert_same_arrays(whole / "last.h5", resumed / "last.h5", groups=("params", "optimizer"))
    assert checkpoint.load(resumed / "last.h5").epoch == 4


# --- an independent forward pass from the public format --------------------------

def numpy_forward(model_path, x_raw):
    """h5py + numpy only: the stored config's layers wired by their `inputs` (a graph stores
    them for every layer), each computed here."""
    with h5py.File(model_path, "r") as f:
        config = yaml.safe_load(f["config"].attrs["yaml"])
        norm = f["normalization"]
        x = x_raw.astype(np.float64)
        if norm.attrs["kind"] != "none":
            x = (x - norm["shift"][()]) * norm["scale"][()]
        outs = {"input": x}
        for layer in config["layers"]:
            p = {k: v[()].astype(np.float64) for k, v in f["params"][layer["name"]].items()} \
                if layer["name"] in f["params"] else {}
            xs = [outs[n] for n in layer["inputs"]]
            kind = layer["type"]
            if kind == "dense":
                y = xs[0] @ p["W"] + p.get("b", 0.0)
            elif kind in ("dropout", "activation"):
                y = xs[0]
            elif kind == "batch_norm":
                y = (xs[0] - p["running_mean"]) / np.sqrt(p["running_var"] + layer["epsilon"]) * p["gamma"] + p["beta"]
            elif kind == "add":
                y = sum(xs)
            elif kind == "subtract":
                y = xs[0] - xs[1]
            elif kind == "multiply":
                y = np.prod(xs, axis=0)
            elif kind == "concatenate":
                y = np.concatenate(xs, axis=layer["axis"])
            else:
                raise AssertionError(f"this reference does not know {kind}")
            act = layer.get("activation", "linear")
            if act == "tanh":
                y = np.tanh(y)
            elif act == "relu":
                y = np.maximum(y, 0)
            elif act == "softmax":
                e = np.exp(y - y.max(1, keepdims=True))
                y = e / e.sum(1, keepdims=True)
            else:
                assert act == "linear", act
            outs[layer["name"]] = y
        classes = [c.decode() for c in f["labels/classes"][()]]
    return y, classes


def test_predict_matches_a_numpy_forward_pass_of_the_graph(graph_run, blobs_csv):
    _, _, whole, _ = graph_run
    r = run("predict", whole / "model.h5", blobs_csv)
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    raw = np.loadtxt(blobs_csv, delimiter=",", skiprows=1, usecols=(0, 1))
    probs, classes = numpy_forward(whole / "model.h5", raw)
    got = np.array([[float(row[f"p_{c}"]) for c in classes] for row in rows])
    np.testing.assert_allclose(got, probs, atol=1e-6)
    truth = [line.split(",")[2] for line in blobs_csv.read_text().split()[1:]]
    assert np.mean([classes[i] == t for i, t in zip(probs.argmax(1), truth)]) > 0.9   # it learned


def test_evaluate_matches_numpy(graph_run, blobs_csv):
    _, _, whole, _ = graph_run
    r = run("evaluate", whole / "model.h5", blobs_csv, "--json")
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    raw = np.loadtxt(blobs_csv, delimiter=",", skiprows=1, usecols=(0, 1))
    probs, classes = numpy_forward(whole / "model.h5", raw)
    truth = np.array([classes.index(line.split(",")[2]) for line in blobs_csv.read_text().split()[1:]])
    loss = -np.mean(np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-7, 1.0)))
    metrics = got.get("metrics", got)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == truth))


def test_inspect_shows_each_layers_inputs(graph_run):
    name, config, whole, _ = graph_run
    r = run("inspect", whole / "model.h5", "--json")
    assert r.exit_code == 0, r.stderr
    layers = json.loads(r.stdout)["layers"]
    written = yaml.safe_load(config.read_text())["layers"]
    for i, (got, item) in enumerate(zip(layers, written)):   # the inputs as written, or the previous layer
        previous = written[i - 1].get("name", f"{written[i - 1]['type']}_{i}") if i else "input"
        given = item.get("inputs", previous)
        assert got["inputs"] == ([given] if isinstance(given, str) else given)
    text = run("inspect", whole / "model.h5").stdout
    header = next(line for line in text.splitlines() if line.startswith("layer "))
    assert header.split()[-1] == "inputs"
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert rows["res"].endswith("  h1, h2") and rows["cat"].endswith("  res, b_relu") and rows["bn"].endswith("  b")


def test_config_check_shows_the_inputs(graph_run):
    _, config, _, _ = graph_run
    r = run("config", config, "--check")
    assert r.exit_code == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    assert rows["layer"].endswith("  inputs") and rows["prod"].endswith("  res, b_relu")
    assert rows["h1"].endswith("  input") and rows["logits"].endswith("  cat")


def test_onnx_export_of_the_graph_matches_numpy(graph_run, blobs_csv, tmp_path):
    """`nncli export`, run by onnxruntime, against the numpy forward pass of the checkpoint."""
    ort = pytest.importorskip("onnxruntime")
    _, _, whole, _ = graph_run
    r = run("export", whole / "model.h5", "-o", tmp_path / "graph.onnx")
    assert r.exit_code == 0, r.stderr
    raw = np.loadtxt(blobs_csv, delimiter=",", skiprows=1, usecols=(0, 1))
    session = ort.InferenceSession(str(tmp_path / "graph.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"x": raw.astype(np.float32)})[0]
    probs, _ = numpy_forward(whole / "model.h5", raw)
    np.testing.assert_allclose(got, probs, atol=1e-5)


def test_checkpoint_stores_the_resolved_graph(graph_run):
    """Every layer of a graph is stored with its inputs (the first layer's default too)."""
    _, _, whole, _ = graph_run
    with h5py.File(whole / "model.h5", "r") as f:
        assert f.attrs["format_version"] == checkpoint.FORMAT_VERSION   # a graph needs no version of its own
        stored = yaml.safe_load(f["config"].attrs["yaml"])["layers"]
    assert all("inputs" in l for l in stored) and stored[0]["inputs"] == ["input"]


def test_a_stack_is_stored_as_before(blobs_run):
    """No `inputs` in a stack's stored config: the same text as before graphs existed."""
    result, _ = blobs_run
    with h5py.File(result.output / "model.h5", "r") as f:
        stored = yaml.safe_load(f["config"].attrs["yaml"])["layers"]
    assert all("inputs" not in l for l in stored)


def test_explicit_chain_inputs_mean_a_stack(tmp_path, blobs_csv):
    """Writing the default inputs out changes nothing: same initial values, stored as a stack."""
    plain = spec.from_dict(yaml.safe_load(HEAD.format(name="p", train=blobs_csv) + """layers:
  - {type: dense, units: 4, activation: tanh}
  - {type: dense, units: 3, activation: softmax}
"""), "p.yaml")
    named = spec.from_dict(yaml.safe_load(HEAD.format(name="p", train=blobs_csv) + """layers:
  - {type: dense, units: 4, activation: tanh, inputs: input}
  - {type: dense, units: 3, activation: softmax, inputs: [dense_1]}
"""), "p.yaml")
    assert plain.resolved() == named.resolved() and "inputs" not in plain.resolved()["layers"][0]
    a, _ = network.build(plain, (2,)).initial_values(np.random.default_rng(5))
    b, _ = network.build(named, (2,)).initial_values(np.random.default_rng(5))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_default_loss_follows_the_output_chain(blobs_csv):
    """The loss default comes from the output layer's activation, through its own chain: the
    activation layer's softmax counts; a merge layer last (no activation) gives mse."""
    s = spec.from_dict(yaml.safe_load(HEAD.format(name="d", train=blobs_csv) + GRAPH), "d.yaml")
    assert s["loss"] == "categorical_crossentropy"
    assert network.build(s, (2,)).last_activation == "softmax"
    s = spec.from_dict(yaml.safe_load(HEAD.format(name="d", train=blobs_csv) + """layers:
  - {type: dense, units: 3, activation: softmax, name: a}
  - {type: dense, units: 3, name: b, inputs: input}
  - {type: add, inputs: [a, b]}
"""), "d.yaml")
    assert s["loss"] == "mse" and network.build(s, (2,)).last_activation is None


# --- the multi-input interface (what attention's inputs: [q, kv] uses) ----------------------

class FakeQueryKeyValue(Layer):
    """Registered only in this test: 1 or 2 inputs, like attention (q alone, or [q, kv]); one
    weight per input; y = q W_q + the sum over kv's steps of (kv W_kv), per step of q."""

    n_inputs = (1, 2)
    keys = {"units": Key(integer(min=1), 3)}
    seen: list = []

    def output_shape(self, shapes):
        FakeQueryKeyValue.seen.append(("output_shape", [tuple(s) for s in shapes]))
        return (*shapes[0][:-1], self.config["units"])

    def init_params(self, shapes, rng):
        FakeQueryKeyValue.seen.append(("init_params", [tuple(s) for s in shapes]))
        return {f"W{i}": initializers.make("glorot_uniform", (s[-1], self.config["units"]), rng)
                for i, s in enumerate(shapes)}

    def linear(self, xs, params, ctx):
        assert isinstance(xs, list)
        q, kv = xs[0], xs[-1]
        kv = pt.dot(kv, params[f"W{len(xs) - 1}"])
        return pt.dot(q, params["W0"]) + pt.sum(kv, axis=1, keepdims=True, acc_dtype=kv.dtype)   # float32 under JAX


@pytest.fixture
def fake_layer():
    LAYERS.add("fake_qkv", FakeQueryKeyValue)
    FakeQueryKeyValue.seen = []
    try:
        yield FakeQueryKeyValue
    finally:
        LAYERS._items.pop("fake_qkv", None)


def _forward(net, x, seed=0):
    params, state = net.initial_values(np.random.default_rng(seed))
    net.create_shared(params, state)
    xs = pt.tensor("x", dtype=pytensor.config.floatX, shape=(None, *net.input_shape))
    out, _, _ = net.forward(xs, Context(training=False))
    return params, pytensor.function([xs], out)(x.astype(pytensor.config.floatX))


def test_a_multi_input_layer_gets_lists_in_the_order_of_its_inputs(fake_layer):
    specs = spec.parse_layers([{"type": "dense", "units": 4, "name": "kv"},            # (5, 2) -> (5, 4)
                               {"type": "dense", "units": 2, "name": "q", "inputs": "input"},
                               {"type": "fake_qkv", "inputs": ["q", "kv"]}], "test")
    net = network.Network(specs, (5, 2))
    assert fake_layer.seen[0] == ("output_shape", [(5, 2), (5, 4)])   # then init_params (the parameter count)
    assert all(shapes == [(5, 2), (5, 4)] for _, shapes in fake_layer.seen)
    assert net.shapes == [(5, 4), (5, 2), (5, 3)] and network.trainable_counts(net) == [12, 6, 2 * 3 + 4 * 3]
    x = np.random.default_rng(1).normal(size=(3, 5, 2))
    params, got = _forward(net, x)
    assert fake_layer.seen[-1] == ("init_params", [(5, 2), (5, 4)])
    kv = x @ params["kv/W"] + params["kv/b"]
    q = x @ params["q/W"] + params["q/b"]
    want = q @ params["fake_qkv_3/W0"] + (kv @ params["fake_qkv_3/W1"]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_multi_input_layer_with_one_input_gets_a_list_of_one(fake_layer):
    net = network.Network(spec.parse_layers([{"type": "fake_qkv"}], "test"), (4, 2))
    assert fake_layer.seen[0] == ("output_shape", [(4, 2)]) and net.shapes == [(4, 3)]
    x = np.random.default_rng(2).normal(size=(2, 4, 2))
    params, got = _forward(net, x)
    want = x @ params["fake_qkv_1/W0"] + (x @ params["fake_qkv_1/W0"]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(errors.ConfigError, match=r"layers\[1\]\.inputs: fake_qkv takes 1 or 2 inputs, got 3"):
        spec.parse_layers([{"type": "dense", "units": 2, "name": "a"},
                           {"type": "fake_qkv", "inputs": ["a", "a", "input"]}], "test")


# --- validation: one Error: line naming the layer and key path, exit 2 -----------------

BAD = [
    ("unknown name, did you mean",
     """  - {type: dense, units: 4, name: hidden}
  - {type: dense, units: 4, name: h2}
  - {type: add, inputs: [hiden, h2]}""",
     "layers[2].inputs[0] (line 17): unknown layer 'hiden' (did you mean 'hidden'?); inputs name earlier "
     "layers (input, hidden, h2)"),
    ("a later layer",
     """  - {type: dense, units: 4, name: h1, inputs: h2}
  - {type: dense, units: 4, name: h2}""",
     "layers[0].inputs (line 15): 'h2' is layers[1], after this layer; inputs name earlier layers (or 'input', "
     "the network's input)"),
    ("itself",
     """  - {type: dense, units: 4, name: h1}
  - {type: dense, units: 4, name: h2, inputs: [h1, h2]}""",
     "layers[1].inputs[1] (line 16): a layer cannot take its own output as its input; inputs name earlier layers "
     "(or 'input', the network's input)"),
    ("an unused output",
     """  - {type: dense, units: 4, name: h1}
  - {type: dense, units: 4, name: h2}
  - {type: dense, units: 3, inputs: h1}""",
     "layers[1] (line 16): the output of dense 'h2' is not used by any later layer (only the last layer, the "
     "network's output, may go unused); name 'h2' in a later layer's inputs, or remove it"),
    ("a duplicate name",
     """  - {type: dense, units: 4, name: h1}
  - {type: dense, units: 4, name: h1}""",
     "layers[1].name (line 16): duplicate layer name 'h1' (layers[0] has it too)"),
    ("the reserved name input",
     """  - {type: dense, units: 4, name: input}""",
     "layers[0].name (line 15): 'input' names the network's input in inputs:; choose another layer name"),
    ("a merge layer with one input (the default)",
     """  - {type: dense, units: 4, name: h1}
  - {type: add}""",
     "layers[1].inputs (line 16): add takes at least 2 inputs, got 1 (default: the previous layer); name "
     "them, e.g. inputs: [input, h1]"),
    ("subtract with three",
     """  - {type: dense, units: 4, name: h1}
  - {type: subtract, inputs: [h1, h1, input]}""",
     "layers[1].inputs (line 16): subtract takes exactly 2 inputs, got 3"),
    ("a one-input layer given two",
     """  - {type: dense, units: 4, name: h1}
  - {type: dense, units: 3, inputs: [h1, input]}""",
     "layers[1].inputs (line 16): dense takes one input, got 2"),
    ("inputs of the wrong type",
     """  - {type: dense, units: 4, inputs: 3}""",
     "layers[0].inputs (line 15): expected a layer name or a list of layer names, got 3"),
    ("shapes that cannot be added",
     """  - {type: dense, units: 4, name: h1}
  - {type: dense, units: 5, name: h2}
  - {type: add, inputs: [h1, h2]}""",
     "layers[2].inputs (line 17): add 'add_3': add needs inputs of one shape; inputs[0] has shape (4,), "
     "inputs[1] has shape (5,) (inputs: h1 (4,), h2 (5,))"),
    ("shapes that cannot be concatenated",
     """  - {type: dense, units: 4, name: h1}
  - {type: reshape, shape: [2, 2], name: r}
  - {type: concatenate, inputs: [r, input], axis: 0}""",
     "layers[2].inputs (line 17): concatenate 'concatenate_3': concatenate needs inputs with the same number of "
     "axes; inputs[0] has shape (2, 2), inputs[1] has shape (2,) (inputs: r (2, 2), input (2,))"),
]


@pytest.mark.parametrize("what,layers,message", BAD, ids=[b[0] for b in BAD])
def test_graph_errors_are_one_line_naming_the_key_path(tmp_path, blobs_csv, what, layers, message):
    config = write_config(tmp_path, HEAD.format(name="bad", train=blobs_csv) + "layers:\n" + layers + "\n")
    r = run("config", config, "--check")
    assert r.exit_code == 2, r.output
    assert error_line(r.stderr) == f"Error: {config}: {message}"
