"""curves.png after training, `nncli plot`, and `nncli train --log-json`."""

from __future__ import annotations

import json
import struct
import sys
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from support import BLOBS_CONFIG, write_config
from nncli import plot, progress
from nncli.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"
    return width, height, len(data)


def test_training_writes_curves_png(blobs_run):
    result, _ = blobs_run
    width, height, size = png_size(result.output / "curves.png")
    # two panels (loss, accuracy) of 5 x 4 inches at 100 dpi; no learning-rate panel (constant rate)
    assert (width, height) == (1000, 400)
    assert size > 10_000


def test_plot_command_redraws_and_compares(blobs_run, tmp_path):
    result, _ = blobs_run
    one = tmp_path / "one.png"
    r = CliRunner().invoke(main, ["plot", str(result.output), "-o", str(one)])
    assert r.exit_code == 0, r.stderr
    assert png_size(one)[:2] == (1000, 400)
    both = tmp_path / "both.png"
    r = CliRunner().invoke(main, ["plot", str(result.output), str(result.output), "-o", str(both)])
    assert r.exit_code == 0, r.stderr
    assert png_size(both)[:2] == (1000, 400) and r.stderr.strip() == f"wrote {both}"


def test_plot_draws_a_learning_rate_panel_when_the_rate_changes(tmp_path):
    hist = {"loss": [1.0, 0.5, 0.4], "mae": [0.9, 0.6, 0.5], "val_loss": [1.1, 0.7, 0.8],
            "val_mae": [1.0, 0.7, 0.75], "learning_rate": [0.1, 0.05, 0.025], "seconds": [1, 1, 1]}
    run = plot.Run("r", hist, best_epoch=2, metric=plot.main_metric(hist))
    assert run.metric == "mae"
    width, height, _ = png_size(plot.draw([run], tmp_path / "lr.png"))
    assert (width, height) == (1500, 400)


@pytest.mark.parametrize("make", ["empty_folder", "missing", "a_file", "bad_csv"])
def test_plot_on_something_that_is_not_a_run_is_a_one_line_error(tmp_path, make):
    target = tmp_path / "thing"
    if make == "empty_folder":
        target.mkdir()
    elif make == "a_file":
        target.write_text("hello")
    elif make == "bad_csv":
        target.mkdir()
        (target / "metrics.csv").write_text("a,b\n1,2\n")
    r = CliRunner().invoke(main, ["plot", str(target)])
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
    assert str(target) in r.stderr
    assert not (target / "curves.png").exists() if target.is_dir() else True


@pytest.fixture
def no_matplotlib(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` raises ImportError


def test_without_matplotlib_training_skips_the_png_with_a_notice(no_matplotlib, tmp_path):
    messages = []

    class Collect(progress.Silent):
        def info(self, message):
            messages.append(message)

    result = SimpleNamespace(output=tmp_path, history={"loss": [1.0, 0.5]}, best_epoch=2)
    assert plot.after_training(result, Collect()) is None
    assert messages == ["curves.png skipped: matplotlib is not installed (pip install 'nncli[plot]')"]
    assert not (tmp_path / "curves.png").exists()


def test_without_matplotlib_plot_says_how_to_install_it(no_matplotlib, blobs_run, tmp_path):
    result, _ = blobs_run
    r = CliRunner().invoke(main, ["plot", str(result.output), "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 1
    assert r.stderr == "Error: plotting needs matplotlib: pip install 'nncli[plot]'\n"


def test_log_json_writes_one_object_per_epoch_to_stdout(tmp_path, blobs_csv):
    text = BLOBS_CONFIG.format(train=blobs_csv) + "schedule: {type: step, every: 1, factor: 0.5}\n"
    config = write_config(tmp_path, text.replace("epochs: 6", "epochs: 3"))
    r = CliRunner().invoke(main, ["train", str(config), "-o", str(tmp_path / "run"), "--log-json"])
    assert r.exit_code == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["epoch"] for x in records] == [1, 2, 3] and all(x["epochs"] == 3 for x in records)
    assert [x["learning_rate"] for x in records] == pytest.approx([0.05, 0.025, 0.0125])
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(records[0])
    assert "trained 3 epochs" in r.stderr and "model saved to" in r.stderr
    with open(tmp_path / "run" / "metrics.csv") as fh:
        header = fh.readline().strip().split(",")
    assert header == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
