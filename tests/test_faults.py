"""Faults: SIGKILL at random moments, SIGINT/SIGTERM, a full disk, an unwritable output folder,
two runs on one output folder. Real `nncli train` subprocesses where the fault is a process's fate."""

from __future__ import annotations

import errno
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from support import assert_same_arrays, error_line, nncli_executable, write_config
from nncli import checkpoint, fileio
from nncli.training import lock, trainer
from nncli.cli import main
from nncli.errors import CheckpointError

CONFIG = """
name: faults
seed: 7
data: {{train: {train}}}
layers:
  - {{type: dense, units: 16, activation: tanh}}
  - {{type: dense, units: 1}}
loss: mse
optimizer: adam
learning_rate: 0.01
epochs: {epochs}
batch_size: 8
checkpoint_interval: 0
early_stopping: false
"""
EPOCHS = 60
CHECKPOINTS = ("last.h5", "model.h5")


def assert_same_weights(a, b):
    assert_same_arrays(a, b, groups=("params", "optimizer"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 4))
    (folder / "d.csv").write_text("a,b,c,d,y\n" + "".join(
        ",".join(f"{v:.5f}" for v in row) + f",{np.sin(row).sum():.5f}\n" for row in x))
    config = write_config(folder, CONFIG.format(train=folder / "d.csv", epochs=EPOCHS))
    return folder, config


def env():
    e = dict(os.environ)
    e.setdefault("NNCLI_BACKEND", "jax")
    e["PYTHONUNBUFFERED"] = "1"
    e.pop("NNCLI_TEST_HOOK", None)
    return e


class Run:
    """`nncli train` as a subprocess, its stderr lines collected by a thread."""

    def __init__(self, config, out, *extra):
        args = [nncli_executable(), "train", str(config), "-o", str(out), *extra]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_line(self, predicate, timeout=60.0) -> str | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("the run ended before the awaited line: " + "".join(self.stderr[-5:]))
            if predicate(line):
                return line
        raise AssertionError("timed out waiting for the run: " + "".join(self.stderr[-5:]))

    def finish(self, timeout=120.0) -> tuple[int, str, str]:
        out = self.proc.stdout.read()
        self.proc.wait(timeout)
        self.thread.join(10)
        return self.proc.returncode, out, "".join(self.stderr)


class Reference:
    """An uninterrupted run, as a subprocess like the runs it is compared with; it runs
    alongside the test that asks for it first and is waited for when needed."""

    def __init__(self, config, out):
        self.out, self.run, self.done = out, Run(config, out), False

    def path(self, name: str) -> Path:
        if not self.done:
            code, _, stderr = self.run.finish()
            assert code == 0, stderr
            self.done = True
        return self.out / name


@pytest.fixture(scope="module")
def reference(setup):
    folder, config = setup
    return Reference(config, folder / "reference")


def epoch_line(n: int | None = None):
    pattern = re.compile(r"epoch\s+\d+/" if n is None else rf"epoch\s+{n}/")
    return lambda line: bool(pattern.match(line))




def assert_readable(out: Path) -> None:
    for name in CHECKPOINTS:
        if (out / name).exists():
            checkpoint.load(out / name)  # raises CheckpointError if unreadable


def temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


def kill_during_write(run: Run, out: Path, prefix: str, timeout=60.0) -> bool:
    """SIGKILL `run` as soon as the temporary of an atomic write (`.last.h5.*.tmp`, ...)
    appears in `out`: the write is in progress."""
    run.wait_line(lambda l: l.startswith("compiled in"))
    end = time.monotonic() + timeout
    while time.monotonic() < end and run.proc.poll() is None:
        try:
            names = os.listdir(out)
        except FileNotFoundError:
            names = []
        if any(n.endswith(".tmp") and n.startswith(prefix) for n in names):
            run.proc.kill()
            return True
        time.sleep(0.0002)
    return False


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(setup, reference, tmp_path):
    """Eleven SIGKILLs (during start-up, during checkpoint writes, mid-training); after each:
    every checkpoint readable; resume (or start over when there is no last.h5); the last run
    finishes with weights and optimizer state equal to the uninterrupted run's."""
    _, config = setup
    out = tmp_path / "run"
    rnd = random.Random(1234)
    plan = (["startup"] * 2 + ["write"] * 4 + ["training"] * 5)
    rnd.shuffle(plan)
    targets = iter([".model.h5.", ".last.h5.", ".metrics.csv.", ".last.h5."])
    log = []
    for i, kind in enumerate(plan):
        resume = (out / "last.h5").exists()
        epoch_before = checkpoint.load(out / "last.h5").epoch if resume else 0
        run = Run(config, out, *(["--resume"] if resume else []))
        if kind == "startup":  # while importing, reading the data or compiling
            delay = rnd.uniform(0.2, 2.5)
            try:
                run.wait_line(lambda l: l.startswith("compiling the training graph"), timeout=delay)
                what = "startup: as compiling began"
            except AssertionError:
                what = f"startup +{delay:.2f}s"
            run.proc.kill()
        elif kind == "write":
            prefix = next(targets)
            assert kill_during_write(run, out, prefix), "".join(run.stderr[-5:])
            what = f"writing {prefix[1:-1]}"
        else:
            lines = rnd.randint(1, 4)
            for _ in range(lines):
                run.wait_line(epoch_line())
            delay = rnd.uniform(0.0, 0.01)
            time.sleep(delay)
            run.proc.kill()
            what = f"training: {delay * 1000:.1f} ms after its epoch line {lines}"
        code, _, stderr = run.finish()
        assert code == -signal.SIGKILL, f"run {i} ended on its own ({code}) before the kill: {stderr[-300:]}"
        left = temporaries(out) if out.exists() else []
        assert_readable(out)
        epoch_after = checkpoint.load(out / "last.h5").epoch if (out / "last.h5").exists() else 0
        log.append((what, epoch_before, epoch_after, left))
        assert epoch_after >= epoch_before
    writes = [e for e in log if e[0].startswith("writing")]
    assert sum(1 for e in writes if e[3]) >= 2, f"kills did not land inside writes: {log}"
    run = Run(config, out, *(["--resume"] if (out / "last.h5").exists() else []))
    code, stdout, stderr = run.finish()
    assert code == 0, stderr
    assert temporaries(out) == [], "the temporaries of killed writes are cleaned up"
    assert_same_weights(reference.path("last.h5"), out / "last.h5")
    assert_same_weights(reference.path("model.h5"), out / "model.h5")
    assert checkpoint.load(out / "last.h5").epoch == EPOCHS
    print("\nkill points (kind, last.h5 epoch before -> after, temporaries left):")
    for entry in log:
        print("  ", entry)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_last_and_exits_with_a_resume_hint(setup, reference, tmp_path, sig, code):
    _, config = setup
    out = tmp_path / "run"
    run = Run(config, out, "--epochs", "100000")
    run.wait_line(epoch_line(3))
    # while it trains, the output folder is locked: a second run is refused, naming the pid
    with pytest.raises(lock.OutputLocked) as info:
        with lock.hold(out):
            pass
    assert f"pid {run.proc.pid}" in info.value.message and "another nncli train" in info.value.message
    r = CliRunner().invoke(main, ["train", str(config), "-o", str(out)])
    assert r.exit_code == 1 and "another nncli train" in error_line(r.stderr)
    run.proc.send_signal(sig)
    rc, stdout, stderr = run.finish()
    assert rc == code, stderr
    line = error_line(stderr)
    assert f"state saved to {out / 'last.h5'}" in line
    # the hint continues exactly this run: its output folder and command-line overrides (issue 12)
    assert line.endswith(f"continue with: nncli train {config} -o {out} --epochs=100000 --resume")
    ck = checkpoint.load(out / "last.h5")
    assert ck.epoch >= 3
    if sig == signal.SIGTERM and ck.epoch < EPOCHS:
        # the lock went with the process; resuming for one more epoch continues exactly
        # (the loss history matches the uninterrupted run's, which bit-exact weights imply)
        rc, _, stderr = Run(config, out, "--resume", "--epochs", str(ck.epoch + 1)).finish()
        assert rc == 0, stderr
        done = checkpoint.load(out / "last.h5").history["loss"]
        assert done == checkpoint.load(reference.path("last.h5")).history["loss"][:ck.epoch + 1]


# --- a full disk, an unwritable folder: one line, exit 1, the previous checkpoint intact ---------

@pytest.fixture
def two_epochs(setup, tmp_path):
    """A run of 2 epochs (finished: --resume needs --epochs 4 to train on)."""
    folder, _ = setup
    config = write_config(tmp_path, CONFIG.format(train=folder / "d.csv", epochs=4))
    out = tmp_path / "run"
    trainer.train(config, output=str(out), epochs=2)
    before = {n: (out / n).read_bytes() for n in ("last.h5", "model.h5", "metrics.csv")}
    return config, out, before


def assert_unchanged(out, before):
    assert {n: (out / n).read_bytes() for n in before} == before
    assert temporaries(out) == []


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["write", "fsync", "replace", "metrics"])
def test_disk_full_during_a_write_is_one_line_and_keeps_the_previous_files(two_epochs, monkeypatch, where):
    config, out, before = two_epochs
    if where == "write":  # the checkpoint's bytes hit a full disk
        import builtins

        real_open = builtins.open

        class Full:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                self.fh.write(data[: len(data) // 2])
                enospc()

        def fake_open(file, mode="r", *a, **k):
            fh = real_open(file, mode, *a, **k)
            return Full(fh) if str(file).endswith(".tmp") and "w" in mode else fh
        monkeypatch.setattr(builtins, "open", fake_open)
    elif where == "fsync":
        monkeypatch.setattr(fileio.os, "fsync", enospc)
    elif where == "replace":
        monkeypatch.setattr(fileio.os, "replace", enospc)
    else:
        real_write_text = fileio.write_text
        monkeypatch.setattr(fileio, "write_text", lambda p, t: enospc() if str(p).endswith(".csv")
                            else real_write_text(p, t))
    r = CliRunner().invoke(main, ["train", str(config), "-o", str(out), "--resume", "--epochs", "4"])
    assert r.exit_code == 1, r.output
    line = error_line(r.stderr)
    assert "No space left on device" in line and "unchanged" in line
    monkeypatch.undo()
    if where == "metrics":  # the checkpoints of epoch 3 were written before metrics.csv failed
        assert_unchanged(out, {"metrics.csv": before["metrics.csv"]})
        assert checkpoint.load(out / "last.h5").epoch == 3
    else:
        assert_unchanged(out, before)


def test_a_really_full_disk_in_a_subprocess(two_epochs):
    """A real write failure (RLIMIT_FSIZE makes writes past 8 kB fail with EFBIG, as a full disk
    would with ENOSPC) inside `nncli train`: one line, exit 1, nothing replaced, no temporaries."""
    config, out, before = two_epochs

    limit = ("import os, resource, signal, sys\n"
             "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))\n"
             "os.execv(sys.argv[1], sys.argv[1:])\n")
    r = subprocess.run([sys.executable, "-c", limit, nncli_executable(), "train", str(config), "-o", str(out),
                        "--resume", "--epochs", "4"], capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 1, r.stderr
    line = error_line(r.stderr)
    assert "File too large" in line and "previous file is unchanged" in line
    assert_unchanged(out, before)


def test_read_only_output_folder(two_epochs, monkeypatch):
    """Root ignores permission bits, so the read-only file system is simulated: every attempt
    to create or open a file for writing in the folder fails with EROFS."""
    config, out, before = two_epochs
    real_open = os.open

    def ro_open(path, flags, *a, **k):
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **k)
    monkeypatch.setattr(os, "open", ro_open)
    r = CliRunner().invoke(main, ["train", str(config), "-o", str(out), "--resume", "--epochs", "4"])
    assert r.exit_code == 1
    line = error_line(r.stderr)
    assert "Read-only file system" in line and str(out) in line
    # the lock file could be opened but no checkpoint temporary can be created
    monkeypatch.setattr(os, "open", real_open)
    monkeypatch.setattr(fileio.tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.EROFS, os.strerror(errno.EROFS))))
    with pytest.raises(CheckpointError) as info:
        trainer.train(config, output=str(out), resume=True, epochs=4)
    assert "Read-only file system" in info.value.message and "unchanged" in info.value.message
    monkeypatch.undo()
    assert_unchanged(out, before)


def test_output_folder_under_a_file(tmp_path, setup):
    folder, config = setup
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = CliRunner().invoke(main, ["train", str(config), "-o", str(blocker / "run")])
    assert r.exit_code == 1 and "cannot create the output folder" in error_line(r.stderr)
    with pytest.raises(CheckpointError) as info:
        trainer.train(config, output=str(blocker))
    assert "a file of that name exists" in info.value.message
    assert blocker.read_text() == "not a folder"


def test_lock_is_exclusive_and_released(tmp_path):
    out = tmp_path / "out"
    with lock.hold(out):
        assert (out / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(lock.OutputLocked) as info:
            with lock.hold(out):
                pass
        assert info.value.exit_code == 1 and f"pid {os.getpid()}" in info.value.message
    with lock.hold(out):  # released at exit
        pass


def test_a_killed_holder_does_not_block(tmp_path):
    out = tmp_path / "out"
    code = ("import sys, time; from nncli.training import lock\n"
            "with lock.hold(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        (out / ".last.h5.abc123.tmp").write_bytes(b"half a checkpoint")
        with pytest.raises(lock.OutputLocked):
            with lock.hold(out):
                pass
        assert (out / ".last.h5.abc123.tmp").exists(), "a live run's temporaries are left alone"
    finally:
        proc.kill()
        proc.wait()
    with lock.hold(out):  # the kernel released the dead process's lock
        assert not (out / ".last.h5.abc123.tmp").exists(), "a dead run's temporaries are removed"
