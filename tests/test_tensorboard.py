"""TensorBoard logging (`tensorboard:` / `nncli train --tensorboard`), read back by a reader that is not
the writer: the TFRecord framing (length, masked CRC-32C computed bit by bit here) is parsed in this
file and each record decoded with the Event protobuf class tensorboardX ships (generated from
TensorFlow's event.proto). The `tensorboard` package, whose EventAccumulator would be the other
choice, is not installed here.

- every scalar equals metrics.csv's value of its tag and epoch (float32), each (tag, step) once;
- the resolved config is there as text (the checkpoint's stored config), histograms every N epochs
  with the checkpoint's weights (count, min, max, sum);
- an interrupted run + --resume, and a resume from a last.h5 older than the event files (a run killed
  between its TensorBoard write and its checkpoint), give each epoch once with the values of the
  uninterrupted run;
- a resume that turns TensorBoard on logs only the epochs it trains; a fresh rerun replaces the files;
- a missing tensorboardX is a one-line exit-2 error before any training.
"""

from __future__ import annotations

import builtins
import csv
import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from support import BLOBS_CONFIG, InterruptAt, checkpoint_arrays, error_line, write_config
from nncli import checkpoint, spec as spec_mod, tensorboard
from nncli.cli import main
from nncli.errors import ConfigError, Interrupted
from nncli.training import trainer

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")


# --- the reader -----------------------------------------------------------------

def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(folder: Path) -> list:
    """Every Event of every event file in `folder` (file order, then record order); every record's
    length and checksums must hold."""
    events = []
    files = sorted(folder.glob("events.out.tfevents.*"))
    for path in files:
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            header = data[pos:pos + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == _masked(header), path
            body = data[pos + 12:pos + 12 + length]
            assert len(body) == length and struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] \
                == _masked(body), path
            events.append(event_pb2.Event.FromString(body))
            pos += 16 + length
    return events


def values_of(folder: Path) -> list[tuple[str, int, object]]:
    """(tag, step, summary value) of every summary value in the folder's events."""
    return [(v.tag, e.step, v) for e in read_events(folder) if e.HasField("summary") for v in e.summary.value]


def scalars(folder: Path) -> dict[tuple[str, int], float]:
    pairs = [(tag, step, v.simple_value) for tag, step, v in values_of(folder) if v.WhichOneof("value") == "simple_value"]
    counts = Counter((tag, step) for tag, step, _ in pairs)
    assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1]  # no duplicated step
    return {(tag, step): value for tag, step, value in pairs}


def metrics_csv(out: Path) -> dict[tuple[str, int], float]:
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {(k, int(row["epoch"])): float(v) for row in rows for k, v in row.items() if k != "epoch"}


def assert_scalars_equal_csv(out: Path) -> dict:
    events, table = scalars(out / "tensorboard"), metrics_csv(out)
    assert set(events) == set(table)
    for key, value in table.items():
        assert np.float32(events[key]) == np.float32(value), key
    return events


# --- runs -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def config(tmp_path_factory, blobs_csv):
    folder = tmp_path_factory.mktemp("tb")
    return write_config(folder, BLOBS_CONFIG.format(train=blobs_csv)
                        + "steps_per_execution: 2\ntensorboard: {histograms: 2}\n")  # 2 steps a call: stops mid-epoch


@pytest.fixture(scope="module")
def full(config, tmp_path_factory):
    """The uninterrupted run: 6 epochs, histograms at 2, 4 and 6."""
    out = tmp_path_factory.mktemp("full") / "run"
    trainer.train(config, output=str(out))
    return out


def test_scalars_equal_metrics_csv(full):
    events = assert_scalars_equal_csv(full)
    tags = {tag for tag, _ in events}
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"} <= tags
    assert sorted({step for _, step in events}) == [1, 2, 3, 4, 5, 6]
    assert len(list((full / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_config_text_is_the_stored_config(full):
    texts = [(step, v) for tag, step, v in values_of(full / "tensorboard") if tag == "config/text_summary"]
    assert len(texts) == 1 and texts[0][0] == 0
    value = texts[0][1]
    assert value.metadata.plugin_data.plugin_name == "text"
    text = value.tensor.string_val[0].decode()
    assert all(line.startswith("    ") for line in text.splitlines())  # a Markdown code block
    assert "\n".join(line[4:] for line in text.splitlines()) + "\n" == checkpoint.load(full / "last.h5").config_yaml


def test_histograms_every_n_epochs_hold_the_weights(full):
    histos = {(tag, step): v.histo for tag, step, v in values_of(full / "tensorboard") if v.HasField("histo")}
    weights = checkpoint_arrays(full / "last.h5")  # epoch 6, the last histogram epoch
    names = {k.removeprefix("params/") for k in weights}
    assert names == {"dense_1/W", "dense_1/b", "dense_2/W", "dense_2/b"}
    assert set(histos) == {(f"weights/{n}", step) for n in names for step in (2, 4, 6)}
    for name in names:
        h, w = histos[(f"weights/{name}", 6)], weights[f"params/{name}"].astype(np.float64)
        assert (h.num, h.min, h.max) == (w.size, w.min(), w.max())
        assert h.sum == pytest.approx(w.sum(), abs=1e-12) and sum(h.bucket) == w.size
        assert h.sum_squares == pytest.approx(float(w.ravel() @ w.ravel()), rel=1e-12)
    # the weights changed between histograms: epoch 2's is not epoch 6's
    assert histos[("weights/dense_1/W", 2)].sum != histos[("weights/dense_1/W", 6)].sum


def _same_as_full(out: Path, full: Path, table: dict | None = None) -> None:
    """Each epoch's scalars once, equal to the uninterrupted run's (seconds: to `table`, by default this
    run's metrics.csv)."""
    mine, theirs = scalars(out / "tensorboard"), scalars(full / "tensorboard")
    table = table if table is not None else metrics_csv(out)
    assert set(mine) == set(theirs) == set(table)
    for key in mine:
        assert np.float32(mine[key]) == np.float32(table[key]), key
        if key[0] != "seconds":
            assert mine[key] == theirs[key], key
    hist = Counter((tag, step) for tag, step, v in values_of(out / "tensorboard") if v.HasField("histo"))
    assert set(hist) == {(f"weights/{n}", s) for n in ("dense_1/W", "dense_1/b", "dense_2/W", "dense_2/b")
                         for s in (2, 4, 6)} and set(hist.values()) == {1}


def test_interrupted_and_resumed_equals_uninterrupted(config, full, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        trainer.train(config, output=str(out), reporter=InterruptAt(epoch=4, batch=2))
    ck = checkpoint.load(out / "last.h5")
    assert (ck.epoch, ck.rng["batch"]) == (3, 2)  # mid-epoch 4
    assert sorted({s for _, s in scalars(out / "tensorboard")}) == [1, 2, 3]
    trainer.train(config, output=str(out), resume=True)
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    _same_as_full(out, full)
    assert [s for t, s, _ in values_of(out / "tensorboard") if t == "config/text_summary"] == [0]


def test_resume_from_a_checkpoint_older_than_the_events(config, full, tmp_path):
    """A run killed after logging epochs its last.h5 does not hold (checkpoint_interval > 0): the
    resume trains them again and does not log them again."""
    out = tmp_path / "run"
    trainer.train(config, output=str(out), epochs=3)
    saved = {name: (out / name).read_bytes() for name in ("last.h5", "metrics.csv")}
    trainer.train(config, output=str(out), resume=True, epochs=6)
    logged = metrics_csv(out)  # what the events hold (epochs 4-6 timed by the run that is "killed")
    for name, data in saved.items():  # back to epoch 3, as a kill before the later checkpoints would leave it
        (out / name).write_bytes(data)
    assert checkpoint.load(out / "last.h5").epoch == 3
    trainer.train(config, output=str(out), resume=True, epochs=6)
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 3
    _same_as_full(out, full, logged)
    now = metrics_csv(out)  # epochs 4-6 trained again: the same values, but for their seconds
    assert {k: v for k, v in now.items() if k[0] != "seconds"} == {k: v for k, v in logged.items() if k[0] != "seconds"}


def test_read_back_stops_at_a_torn_record(full, tmp_path):
    """A writer killed mid-record leaves a torn tail: the pairs before it are read back, and the file
    is never misread (nncli's own read-back, used by --resume)."""
    out = tmp_path / "copy"
    shutil.copytree(full / "tensorboard", out / "tensorboard")
    whole = tensorboard.logged(out)
    assert whole == set(scalars(full / "tensorboard")) | {("config/text_summary", 0)} | {
        (f"weights/{n}", s) for n in ("dense_1/W", "dense_1/b", "dense_2/W", "dense_2/b") for s in (2, 4, 6)}
    (path,) = (out / "tensorboard").glob("events.out.tfevents.*")
    data = path.read_bytes()
    last = read_events(full / "tensorboard")[-1].SerializeToString()
    assert data.endswith(last + struct.pack("<I", _masked(last)))
    for cut in (3, 12, 12 + len(last) // 2, 14 + len(last)):  # torn inside the last record
        path.write_bytes(data[:len(data) - 16 - len(last) + cut])
        assert tensorboard.logged(out) == whole - {(t, 6) for t, s in whole if s == 6}
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # a bad checksum
    assert tensorboard.logged(out) == whole - {(t, 6) for t, s in whole if s == 6}


def test_resume_that_turns_tensorboard_on_logs_only_new_epochs(blobs_csv, tmp_path):
    cfg = write_config(tmp_path, BLOBS_CONFIG.format(train=blobs_csv))
    out = tmp_path / "run"
    trainer.train(cfg, output=str(out), epochs=3)
    assert not (out / "tensorboard").exists()
    trainer.train(cfg, output=str(out), epochs=5, resume=True, tensorboard=True)
    events, table = scalars(out / "tensorboard"), metrics_csv(out)
    assert sorted({s for _, s in events}) == [4, 5]
    assert set(events) == {k for k in table if k[1] > 3}
    for key, value in events.items():
        assert np.float32(value) == np.float32(table[key]), key
    assert [s for t, s, _ in values_of(out / "tensorboard") if t == "config/text_summary"] == [3]
    assert not any(v.HasField("histo") for _, _, v in values_of(out / "tensorboard"))  # true: no histograms


def test_a_fresh_rerun_replaces_the_event_files(config, tmp_path):
    out = tmp_path / "run"
    trainer.train(config, output=str(out), epochs=2)
    (out / "tensorboard" / "notes.txt").write_text("mine")
    trainer.train(config, output=str(out), epochs=2)  # a rerun of the same config: replaces the run
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert (out / "tensorboard" / "notes.txt").read_text() == "mine"  # only event files are removed
    assert_scalars_equal_csv(out)


def test_missing_tensorboardx_is_a_one_line_error_before_training(config, blobs_csv, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboardx(name, *args, **kwargs):
        if name == "tensorboardX" or name.startswith("tensorboardX."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    plain = write_config(tmp_path, BLOBS_CONFIG.format(train=blobs_csv), "plain.yaml")
    for args in (["train", str(config)], ["train", str(plain), "--tensorboard"]):
        out = tmp_path / f"run-{len(args)}"
        result = CliRunner().invoke(main, [*args, "-o", str(out)])
        assert result.exit_code == 2, result.output
        line = error_line(result.stderr)
        assert "tensorboard" in line and "tensorboardX" in line and "pip install 'nncli[tensorboard]'" in line
        assert not out.exists()  # nothing trained, nothing written
    # without tensorboard: on, tensorboardX is not needed
    result = CliRunner().invoke(main, ["train", str(plain), "-o", str(tmp_path / "plain"), "--epochs", "1", "-q"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("value, expected", [
    (False, False), (None, False), (True, {"histograms": None}), ({}, {"histograms": None}),
    ({"histograms": 5}, {"histograms": 5}),
])
def test_the_key(blobs_csv, value, expected):
    base = {"data": {"train": str(blobs_csv)}, "layers": [{"type": "dense", "units": 3, "activation": "softmax"}]}
    assert spec_mod.from_dict({**base, "tensorboard": value}, "c.yaml")["tensorboard"] == expected
    assert spec_mod.from_dict(base, "c.yaml")["tensorboard"] is False


@pytest.mark.parametrize("value, message", [
    ({"histograms": 0}, "tensorboard.histograms: expected an integer from 1"),
    ({"histogram": 2}, "tensorboard.histogram: unknown key (did you mean 'histograms'?)"),
    ("yes", "tensorboard: expected a mapping (or true/false), got a string"),
    ({"histograms": 1.5}, "tensorboard.histograms: expected an integer"),
])
def test_bad_values_are_config_errors(blobs_csv, value, message):
    base = {"data": {"train": str(blobs_csv)}, "layers": [{"type": "dense", "units": 3, "activation": "softmax"}]}
    with pytest.raises(ConfigError) as info:
        spec_mod.from_dict({**base, "tensorboard": value}, "c.yaml")
    assert message in info.value.message and info.value.exit_code == 2


def test_the_flag_keeps_the_configs_histograms(config, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(config), "-o", str(out), "--epochs", "2", "--tensorboard", "-q"])
    assert result.exit_code == 0, result.output
    assert any(v.HasField("histo") for _, step, v in values_of(out / "tensorboard") if step == 2)
    assert "histograms: 2" in checkpoint.load(out / "last.h5").config_yaml
