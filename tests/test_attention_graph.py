"""An attention block that is not a chain (issue 15): a transformer encoder block with two residual
adds, then cross-attention in the two-input form `inputs: [query, value]`, on sequences.

Trained once per module (three short trainings share their compiled step). It is interrupted
mid-epoch and resumes bit-exactly (attention dropout included: the counter-based mask); `nncli
predict` matches the exported model run by onnxruntime (an implementation that is not PyTensor);
`nncli evaluate` matches a numpy loss and accuracy from those probabilities; `nncli inspect` shows
each layer's inputs. Each layer's own numpy and finite-difference checks are in tests/layers.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from support import InterruptAt, assert_same_arrays, write_config
from nncli import checkpoint
from nncli.cli import main
from nncli.errors import Interrupted
from nncli.training import trainer

CONFIG = """
name: block
seed: 5
data: {{train: {train}, x: x, y: y, validation: 0.25}}
layers:
  - {{type: dense, units: 8, name: emb}}
  - {{type: position_embedding, name: pos}}
  - {{type: multi_head_attention, num_heads: 2, key_dim: 4, dropout: 0.2, name: att}}
  - {{type: add, inputs: [pos, att], name: res1}}
  - {{type: layer_norm, name: ln1}}
  - {{type: dense, units: 16, activation: relu, name: ff1}}
  - {{type: dense, units: 8, name: ff2}}
  - {{type: add, inputs: [ln1, ff2], name: res2}}
  - {{type: layer_norm, name: ln2}}
  - {{type: multi_head_attention, num_heads: 1, key_dim: 4, causal: true, inputs: [ln2, emb], name: cross}}
  - {{type: global_avg_pool1d, name: pool}}
  - {{type: dense, units: 3, activation: softmax, name: out}}
optimizer: adam
learning_rate: 0.01
epochs: 3
batch_size: 16
steps_per_execution: 2
checkpoint_interval: 0
"""


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def block_run(tmp_path_factory):
    """(folder, data file, uninterrupted run, interrupted-then-resumed run)."""
    folder = tmp_path_factory.mktemp("block")
    rng = np.random.default_rng(0)
    x = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=(96, 7))]      # (96, 7, 3) one-hot symbols
    y = x.sum(axis=1).argmax(axis=1).astype(np.int64)                        # the most frequent symbol
    data = folder / "seq.h5"
    with h5py.File(data, "w") as f:
        f["x"], f["y"] = x, y
    config = write_config(folder, CONFIG.format(train=data))
    trainer.train(config, output=str(folder / "whole"))
    with pytest.raises(Interrupted):   # 72 training rows: 5 minibatches an epoch; stop inside epoch 2
        trainer.train(config, output=str(folder / "resumed"), reporter=InterruptAt(epoch=2, batch=2))
    ck = checkpoint.load(folder / "resumed" / "last.h5")
    assert (ck.epoch, ck.rng["batch"]) == (1, 2)
    trainer.train(config, output=str(folder / "resumed"), resume=True)
    return folder, data, folder / "whole", folder / "resumed"


def test_resume_mid_epoch_is_bit_exact(block_run):
    _, _, whole, resumed = block_run
    assert_same_arrays(whole / "last.h5", resumed / "last.h5", groups=("params", "optimizer"))
    assert checkpoint.load(resumed / "last.h5").epoch == 3


def _predicted(whole: Path, data: Path, tmp: Path) -> tuple[np.ndarray, list[str]]:
    out = tmp / "preds.csv"
    r = run("predict", whole / "model.h5", data, "-o", out)
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    return np.array([[float(row[f"p_{c}"]) for c in classes] for row in rows]), classes


def test_predict_matches_onnxruntime(block_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    _, data, whole, _ = block_run
    r = run("export", whole / "model.h5", "-o", tmp_path / "block.onnx")
    assert r.exit_code == 0, r.stderr
    with h5py.File(data, "r") as f:
        x = f["x"][()]
    session = ort.InferenceSession(str(tmp_path / "block.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(["probabilities"], {"x": x})[0]
    got, _ = _predicted(whole, data, tmp_path)
    assert got.shape == (96, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_evaluate_matches_numpy(block_run, tmp_path):
    _, data, whole, _ = block_run
    probs, classes = _predicted(whole, data, tmp_path)
    with h5py.File(data, "r") as f:
        truth = np.array([classes.index(str(v)) for v in f["y"][()]])
    r = run("evaluate", whole / "model.h5", data, "--json")
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    metrics = got.get("metrics", got)
    loss = -np.mean(np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-7, 1.0)))
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-5)
    assert metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == truth))


def test_inspect_shows_the_block_wiring(block_run):
    _, _, whole, _ = block_run
    r = run("inspect", whole / "model.h5", "--json")
    assert r.exit_code == 0, r.stderr
    inputs = {l["name"]: l["inputs"] for l in json.loads(r.stdout)["layers"]}
    assert inputs["res1"] == ["pos", "att"] and inputs["res2"] == ["ln1", "ff2"]
    assert inputs["cross"] == ["ln2", "emb"] and inputs["att"] == ["pos"]
