"""Issue 12 (trust), training: finished runs, resume hints and settings, interrupts at any moment,
"state saved" that is true, changed configs on --resume, stable metrics.csv columns, non-finite
updates, output folders holding another run, run names, and data files that are the run's outputs."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from support import (BLOBS_CONFIG, InterruptAt, assert_same_arrays, checkpoint_arrays, error_line,
                      nncli_executable, write_config)
from nncli import checkpoint, plot, progress
from nncli.training import trainer
from nncli.cli import main
from nncli.errors import Interrupted

RUN_FILES = ("last.h5", "model.h5", "metrics.csv")

# validation loss never improves by 10: early stopping after epoch 2 of 50
EARLY = BLOBS_CONFIG.replace("epochs: 6", "epochs: 50") + "early_stopping: {{patience: 1, min_delta: 10}}\n"
PLAIN = BLOBS_CONFIG.replace("epochs: 6", "epochs: 3") + "early_stopping: false\n"


def snapshot(out: Path) -> dict:
    return {n: ((out / n).read_bytes(), (out / n).stat().st_mtime_ns) for n in RUN_FILES if (out / n).exists()}




def cli(*args):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def env():
    e = dict(os.environ)
    e.setdefault("NNCLI_BACKEND", "jax")
    e["PYTHONUNBUFFERED"] = "1"
    return e


@pytest.fixture(scope="module")
def configs(tmp_path_factory, blobs_csv):
    folder = tmp_path_factory.mktemp("trust")
    return (write_config(folder, EARLY.format(train=blobs_csv), "early.yaml"),
            write_config(folder, PLAIN.format(train=blobs_csv), "plain.yaml"))


@pytest.fixture(scope="module")
def early_run(configs, tmp_path_factory):
    """A run that stopped early (epoch 2 of 50), trained through the CLI."""
    out = tmp_path_factory.mktemp("early") / "run"
    r = cli(configs[0], "-o", out)
    assert r.exit_code == 0, r.output
    assert "stopped early" in r.output
    return out


@pytest.fixture(scope="module")
def plain_run(configs, tmp_path_factory):
    """A run that reached its 3 epochs."""
    out = tmp_path_factory.mktemp("plain") / "run"
    trainer.train(configs[1], output=str(out))
    return out


# --- 1. a finished run is finished --------------------------------------------------------------

def test_resume_of_an_early_stopped_run_changes_nothing(configs, early_run):
    ck = checkpoint.load(early_run / "last.h5")
    assert ck.finished == "early_stopping" and ck.epoch == 2
    before = snapshot(early_run)
    for _ in range(2):
        r = cli(configs[0], "-o", early_run, "--resume")
        assert r.exit_code == 0, r.output
        assert "training has already finished (stopped early after epoch 2); nothing to do" in r.stderr
        assert "Traceback" not in r.stderr
        assert snapshot(early_run) == before
    # an explicit --epochs does not revive an early-stopped run
    r = cli(configs[0], "-o", early_run, "--resume", "--epochs", "80")
    assert r.exit_code == 0 and "already finished" in r.stderr
    assert snapshot(early_run) == before


def test_a_run_that_reached_its_epochs_goes_on_only_when_epochs_are_raised(configs, plain_run, tmp_path):
    out = tmp_path / "run"
    r = cli(configs[1], "-o", out, "--epochs", "2")
    assert r.exit_code == 0, r.output
    assert checkpoint.load(out / "last.h5").finished == "epochs"
    before = snapshot(out)
    r = cli(configs[1], "-o", out, "--resume")  # the run's own 2 epochs, not the config's 3
    assert r.exit_code == 0 and "reached its 2 epochs; give --epochs N > 2 to train on" in r.stderr, r.output
    assert snapshot(out) == before
    r = cli(configs[1], "-o", out, "--resume", "--epochs", "3")
    assert r.exit_code == 0, r.output
    assert checkpoint.load(out / "last.h5").epoch == 3
    assert_same_arrays(plain_run / "last.h5", out / "last.h5", groups=("params", "optimizer"))


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs."""


def test_a_kill_during_the_work_after_training_then_resume_keeps_the_weights(configs, early_run, tmp_path,
                                                                             monkeypatch):
    out = tmp_path / "run"

    def killed(result, reporter):
        raise Killed()
    monkeypatch.setattr(plot, "after_training", killed)
    with pytest.raises(Killed):
        trainer.train(configs[0], output=str(out))
    monkeypatch.undo()
    assert checkpoint.load(out / "last.h5").finished == "early_stopping"
    result = trainer.train(configs[0], output=str(out), resume=True)
    assert result.already_finished
    for name in ("last.h5", "model.h5"):
        assert_same_arrays(early_run / name, out / name, groups=("params", "optimizer"))


# --- 2. the resume hint continues exactly this run; --resume restores its settings ---------------

def test_the_resume_hint_pasted_as_is_continues_exactly_this_run(configs, tmp_path, monkeypatch):
    config = configs[1]  # epochs: 3, seed: 1 in the file; this run: 5 epochs, seed 4
    straight = tmp_path / "straight"
    trainer.train(config, output=str(straight), epochs=5, seed=4)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as info:
        trainer.train(config, output=str(out), epochs=5, seed=4, reporter=InterruptAt(epoch=2, batch=2))
    hint = info.value.message.split("continue with: ")[1]
    args = shlex.split(hint)
    assert args[:2] == ["nncli", "train"] and "-o" in args and "--resume" in args
    monkeypatch.chdir(tmp_path)  # pasted in another folder: still this run
    r = CliRunner().invoke(main, args[1:])
    assert r.exit_code == 0, r.output
    assert_same_arrays(straight / "last.h5", out / "last.h5", groups=("params", "optimizer"))
    # without repeating --epochs/--seed: the run's own settings come from last.h5
    again = tmp_path / "again"
    with pytest.raises(Interrupted):
        trainer.train(config, output=str(again), epochs=5, seed=4, reporter=InterruptAt(epoch=3, batch=1))
    r = cli(config, "-o", again, "--resume")
    assert r.exit_code == 0, r.output
    assert checkpoint.load(again / "last.h5").epoch == 5
    assert_same_arrays(straight / "last.h5", again / "last.h5", groups=("params", "optimizer"))


# --- 3. Ctrl-C at any moment: exit 130, state kept, no traceback ---------------------------------

def test_ctrl_c_swallowed_during_compilation_still_stops_the_run(configs, tmp_path, monkeypatch):
    """JAX swallows a KeyboardInterrupt raised in its callbacks ("Exception ignored ..."); a signal
    during compilation must still stop the run."""
    real = trainer.Trainer.compile

    def compile_with_ctrl_c(self):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        except KeyboardInterrupt:  # what JAX's callbacks do with it
            pass
        real(self)
    monkeypatch.setattr(trainer.Trainer, "compile", compile_with_ctrl_c)
    out = tmp_path / "run"
    r = cli(configs[1], "-o", out)
    assert r.exit_code == 130, r.output
    line = error_line(r.stderr)
    assert "interrupted before the first checkpoint; nothing saved" in line
    assert not (out / "last.h5").exists()


def test_ctrl_c_after_the_final_save_exits_130_with_the_state_saved(configs, tmp_path, monkeypatch):
    def ctrl_c(result, reporter):
        os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(plot, "after_training", ctrl_c)
    out = tmp_path / "run"
    r = cli(configs[1], "-o", out)
    assert r.exit_code == 130, r.output
    assert f"interrupted after training finished; state saved to {out / 'last.h5'}" in error_line(r.stderr)
    assert checkpoint.load(out / "last.h5").finished == "epochs"


def test_sigint_at_several_moments_of_a_real_run(configs, tmp_path):
    """Real subprocesses: SIGINT as compilation starts, a little later, and just after the last
    epoch. Each ends with exit 130 (or 0 when it had finished first), one line, no traceback,
    and the state that the line reports."""
    config = configs[1]
    results = []
    for i, (after, delay) in enumerate([("compiling", 0.0), ("compiling", 0.05), ("compiling", 0.3),
                                        ("epoch 3/3", 0.0), ("epoch 3/3", 0.05)]):
        out = tmp_path / f"run{i}"
        proc = subprocess.Popen([nncli_executable(), "train", str(config), "-o", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        try:
            lines = []
            end = time.monotonic() + 120
            for line in proc.stderr:
                lines.append(line)
                if line.startswith(after) or time.monotonic() > end:
                    break
            time.sleep(delay)
            sent = proc.poll() is None
            proc.send_signal(signal.SIGINT)
            _, rest = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr = "".join(lines) + rest
        assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
        if proc.returncode == 0:
            assert not sent or after.startswith("epoch"), stderr
            continue
        assert proc.returncode == 130, stderr
        line = error_line(stderr)
        if "state saved to" in line:
            checkpoint.load(out / "last.h5")
        else:
            assert "nothing saved" in line and not (out / "last.h5").exists()
        results.append(line)
    assert len(results) >= 3


# --- 4. "state saved" is true ---------------------------------------------------------------------

class SignalAt(progress.Silent):
    """SIGTERM at the n-th progress event (batch, epoch start or end)."""

    def __init__(self, n):
        self.n, self.count = n, 0

    def _tick(self):
        self.count += 1
        if self.count == self.n:
            os.kill(os.getpid(), signal.SIGTERM)

    def epoch_start(self, *a, **k):
        self._tick()

    def batch(self, *a, **k):
        self._tick()

    def epoch_end(self, *a, **k):
        self._tick()


def assert_message_is_true(message: str, out: Path) -> None:
    if "state saved to" in message:
        path = Path(message.split("state saved to ")[1].split(";")[0])
        assert path == out / "last.h5" and checkpoint.load(path).epoch >= 0
    else:
        assert "nothing saved" in message


def test_state_saved_is_true_when_the_signal_lands_after_the_flush_decision(configs, tmp_path, monkeypatch):
    """The window of issue 12: the epoch loop had decided not to write (checkpoint_interval not
    reached), then the signal came, and the run said "state saved" with no last.h5."""
    config = write_config(tmp_path, configs[1].read_text().replace("checkpoint_interval: 0",
                                                                    "checkpoint_interval: 1000000"))
    real = trainer._Saver.maybe_flush
    for n in (1, 2):
        calls = []

        def maybe_flush(self, force=False):
            real(self, force)
            calls.append(1)
            if len(calls) == n:
                os.kill(os.getpid(), signal.SIGTERM)
        monkeypatch.setattr(trainer._Saver, "maybe_flush", maybe_flush)
        out = tmp_path / f"run{n}"
        with pytest.raises(Interrupted) as info:
            trainer.train(config, output=str(out))
        assert info.value.exit_code == 143
        assert f"state saved to {out / 'last.h5'}" in info.value.message
        assert checkpoint.load(out / "last.h5").epoch == n


def test_state_saved_is_true_for_a_signal_at_every_progress_event(configs, tmp_path):
    config = write_config(tmp_path, configs[1].read_text().replace("checkpoint_interval: 0",
                                                                    "checkpoint_interval: 1000000"))
    for n in (1, 2, 3, 5, 9):  # epoch 1's start, batches (one call) and end; epoch 2's batches; the last end
        out = tmp_path / f"run{n}"
        with pytest.raises(Interrupted) as info:
            trainer.train(config, output=str(out), reporter=SignalAt(n))
        assert_message_is_true(info.value.message, out)
        assert "state saved to" in info.value.message  # every event is after compilation


# --- 5. --resume with a changed config ----------------------------------------------------------

@pytest.fixture
def interrupted(configs, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        trainer.train(configs[1], output=str(out), reporter=InterruptAt(epoch=2, batch=2))
    return out


def test_resume_with_a_changed_config_is_refused_naming_the_keys(configs, interrupted, tmp_path):
    before = snapshot(interrupted)
    changed = configs[1].read_text().replace("units: 8", "units: 9") + "metrics: [accuracy, top_2_accuracy]\n"
    config = write_config(tmp_path, changed, "changed.yaml")
    r = cli(config, "-o", interrupted, "--resume")
    assert r.exit_code == 2, r.output
    line = error_line(r.stderr)
    assert f"differs from the run in {interrupted / 'last.h5'} in metrics, layers[0].units; " in line
    assert snapshot(interrupted) == before


def test_resume_may_change_epochs_and_checkpoint_interval(configs, interrupted, tmp_path):
    changed = configs[1].read_text().replace("checkpoint_interval: 0", "checkpoint_interval: 3")
    config = write_config(tmp_path, changed, "changed.yaml")
    r = cli(config, "-o", interrupted, "--resume", "--epochs", "4")
    assert r.exit_code == 0, r.output
    assert checkpoint.load(interrupted / "last.h5").epoch == 4


# --- 6. metrics.csv columns -----------------------------------------------------------------------

def test_metrics_csv_columns_keep_their_order_after_resume(configs, plain_run, interrupted):
    trainer.train(configs[1], output=str(interrupted), resume=True)
    header = (interrupted / "metrics.csv").read_text().splitlines()[0]
    assert header == (plain_run / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,loss,accuracy,val_loss,val_accuracy")


# --- 7. a non-finite update is the NaN stop -------------------------------------------------------

OVERFLOW = """
name: overflow
data: {{train: {train}}}
layers:
  - {{type: dense, units: 4, activation: tanh}}
  - {{type: dense, units: 1, activation: sigmoid}}
batch_size: 4
epochs: 2
checkpoint_interval: 0
{extra}
"""


@pytest.mark.parametrize("extra, bad", [("optimizer: {type: adamw, weight_decay: 1.0e+23}", 2),
                                        ("optimizer: {type: adamw, weight_decay: 1.0e+30}", 2),
                                        ("optimizer: sgd\nregularization: {l2: 1.0e+30}", 2),
                                        ("regularization: {l2: 1.0e+30}", 1)],
                         ids=["adamw-1e23", "adamw-1e30", "sgd-l2", "adam-l2"])
def test_an_update_that_overflows_on_the_last_step_is_the_nan_stop(xor_csv, tmp_path, extra, bad):
    """One step an epoch, each with a finite loss; the parameters (or Adam's moments, with l2)
    overflow at epoch `bad`. Exit 1, one line, and only the good epochs' files, all finite."""
    config = write_config(tmp_path, OVERFLOW.format(train=xor_csv, extra=extra))
    out = tmp_path / "run"
    r = cli(config, "-o", out)
    assert r.exit_code == 1, r.output
    line = error_line(r.stderr)
    assert f"the parameters became non-finite at epoch {bad}" in line
    if bad == 1:
        assert not (out / "last.h5").exists() and not (out / "model.h5").exists()
        return
    assert f"kept the last good checkpoint {out / 'last.h5'}" in line
    assert checkpoint.load(out / "last.h5").epoch == 1
    for name in ("last.h5", "model.h5"):
        for key, value in checkpoint_arrays(out / name, ("params", "optimizer")).items():
            assert np.isfinite(value).all(), (name, key)
    assert len((out / "metrics.csv").read_text().splitlines()) == 2


# --- 8. a folder that holds another run -----------------------------------------------------------

def test_training_into_a_folder_holding_another_run_is_refused(configs, plain_run, tmp_path):
    out = tmp_path / "run"
    assert cli(configs[1], "-o", out).exit_code == 0
    before = snapshot(out)
    other = write_config(tmp_path, configs[1].read_text().replace("name: blobs", "name: other")
                         .replace("units: 8", "units: 5"), "other.yaml")
    r = cli(other, "-o", out)
    assert r.exit_code == 2, r.output
    line = error_line(r.stderr)
    assert f"{out} holds another run, 'blobs'" in line and "name, layers[0].units" in line
    assert "--overwrite" in line
    assert snapshot(out) == before
    # the same config again is a rerun of the same run: allowed, as is --overwrite for another
    assert cli(configs[1], "-o", out).exit_code == 0
    r = cli(other, "-o", out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert checkpoint.load(out / "last.h5").config_yaml.startswith("name: other")


def test_a_folder_of_other_files_is_fine_and_an_unreadable_model_is_refused(configs, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli(configs[1], "-o", out, "--epochs", "1").exit_code == 0
    assert (out / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.h5").write_bytes(b"my own file")
    r = cli(configs[1], "-o", other)
    assert r.exit_code == 2 and "--overwrite" in error_line(r.stderr)
    assert (other / "model.h5").read_bytes() == b"my own file"


def test_resume_and_overwrite_together_is_a_usage_error(configs, tmp_path):
    r = cli(configs[1], "-o", tmp_path / "x", "--resume", "--overwrite")
    assert r.exit_code == 2 and "give one of them" in error_line(r.stderr)


def test_output_paths_one_rule(configs, tmp_path, monkeypatch):
    """An explicit output: in the config is relative to the config file (as every path inside the
    file); the default runs/<name> and -o are relative to the current folder."""
    from nncli import spec as spec_mod

    monkeypatch.chdir(tmp_path)
    text = configs[1].read_text()
    assert spec_mod.load(configs[1])["output"] == str(Path("runs") / "blobs")
    sub = tmp_path / "sub"
    sub.mkdir()
    config = write_config(sub, text + "output: here\n")
    assert spec_mod.load(config)["output"] == str(sub / "here")


# --- 9. name: -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "/tmp/x", ".hidden", "a/b", '"\\ud800"', "a b", "x" * 101])
def test_a_run_name_that_is_not_one_plain_folder_name_is_a_config_error(configs, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, configs[1].read_text().replace("name: blobs", f"name: {name}"))
    r = cli(config)
    assert r.exit_code == 2, r.output
    line = error_line(r.stderr)
    assert f"{config}: name (line 2): a run name is letters, digits" in line
    assert list(tmp_path.iterdir()) == [config]


# --- 10. a data file that is one of the run's own files ------------------------------------------

def test_a_data_file_that_is_one_of_the_run_files_is_refused(configs, blobs_csv, tmp_path):
    out = tmp_path
    assert cli(configs[1], "-o", out, "--epochs", "1").exit_code == 0
    before = snapshot(out)
    for key, target in [("train", "metrics.csv"), ("validation", "model.h5"), ("test", "last.h5")]:
        text = configs[1].read_text()
        if key == "train":
            text = text.replace(f"train: {blobs_csv}", "train: metrics.csv\n  y: seconds").replace(
                "validation: 0.2", "validation: 0.2")
        else:
            text = text.replace("validation: 0.2", f"{key}: {target}")
        config = write_config(tmp_path, text, f"{key}.yaml")
        r = cli(config, "-o", out, "--overwrite")
        assert r.exit_code == 2, r.output
        line = error_line(r.stderr)
        assert f"data.{key}" in line and f"is the run's own {target}" in line
        assert snapshot(out) == before
    # by inode, not by name: a hard link elsewhere is the same file
    link = tmp_path / "linked" / "d.csv"
    link.parent.mkdir()
    os.link(out / "metrics.csv", link)
    config = write_config(tmp_path, configs[1].read_text().replace(f"train: {blobs_csv}", f"train: {link}"),
                          "link.yaml")
    r = cli(config, "-o", out, "--overwrite")
    assert r.exit_code == 2 and "is the run's own metrics.csv" in error_line(r.stderr)
    assert snapshot(out) == before


def test_unreachable_output_and_data_paths_are_one_line(configs, tmp_path, monkeypatch):
    """A path that cannot even be looked at (like /proc/1/root/x for a contained root) is one
    Error: line, not an internal error, for the output folder and for a data file."""
    blocked = tmp_path / "blocked"
    real_stat, real_mkdir = os.stat, Path.mkdir

    def stat(path, *args, **kwargs):
        if str(path).startswith(str(blocked)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(blocked)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "resolve", lambda self, strict=False: stat(self) and self)
    r = cli(configs[1], "-o", blocked / "x", "--epochs", "1")
    assert r.exit_code == 1
    assert "cannot create the output folder" in error_line(r.stderr) and "internal error" not in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"data:\n  train: {blocked / 'x.csv'}\nlayers:\n  - {{type: dense, units: 1}}\n")
    r = cli(bad)
    assert r.exit_code == 2
    line = error_line(r.stderr)
    assert "data.train (line 2)" in line and "Permission denied" in line
