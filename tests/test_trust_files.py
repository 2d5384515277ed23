"""Issue 12, sections 3-4 (files): outputs never replace special files or inputs, the lock never
follows links, HDF5 files never read other files, and plot/grad failures are one line.

Runs as root in CI: root ignores permission bits, so nothing here relies on them. /dev/null is
never put at risk: os.replace onto anything under /dev fails the test instead of happening."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nncli import checkpoint, data, fileio
from nncli.data import hdf5
from nncli.training import lock
from nncli.cli import main
from nncli.errors import CheckpointError, ConfigError, DataError
from nncli.grad import derivatives

PNG = b"\x89PNG\r\n\x1a\n"


def one_line(r, code, *words):
    """exit `code` and exactly one `Error:` line on stderr holding `words`; no traceback."""
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    err = r.stderr
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def no_replace_in_dev(monkeypatch):
    """Fail (never do) an os.replace onto a file under /dev, e.g. /dev/null."""
    real = os.replace

    def guarded(src, dst, *a, **k):
        assert not os.path.abspath(dst).startswith("/dev/"), f"would replace {dst}"
        return real(src, dst, *a, **k)
    monkeypatch.setattr(os, "replace", guarded)


@pytest.fixture
def model(blobs_run, tmp_path):
    """A copy of the trained blobs run (tests may try to destroy it) and its training CSV."""
    result, _ = blobs_run
    run = tmp_path / "run"
    shutil.copytree(result.output, run, ignore=shutil.ignore_patterns(".lock"))
    return run


def drain_fifo(path, action):
    """Run `action` while a thread reads everything written into the FIFO `path`; the bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a reader exists: a writer's open never blocks
    got, stop = bytearray(), threading.Event()

    def read():
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                chunk = None
            if chunk:
                got.extend(chunk)
            elif stop.is_set():
                return
            else:
                time.sleep(0.01)
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        result = action()
    finally:
        stop.set()
        thread.join(10)
        os.close(fd)
    return result, bytes(got)


# --- 1. outputs onto special files, symlinks, stdout; permission bits ------------------------

@pytest.mark.parametrize("via_link", [False, True])
def test_predict_into_a_fifo_writes_through_it(model, blobs_csv, tmp_path, via_link):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    out = fifo
    if via_link:  # like /dev/stdout -> /proc/self/fd/1
        out = tmp_path / "link"
        out.symlink_to(fifo)
    r, text = drain_fifo(fifo, lambda: invoke("predict", model / "model.h5", blobs_csv, "-o", out))
    assert r.exit_code == 0, r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced"
    assert os.path.islink(out) == via_link
    lines = text.decode().splitlines()
    assert lines[0].startswith("label,") and len(lines) == 91
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"pipe", "link", "run"} if via_link
                                                                else {"pipe", "run"})


def test_predict_into_dev_null_keeps_it_a_device(model, blobs_csv, no_replace_in_dev):
    before = os.stat("/dev/null")
    r = invoke("predict", model / "model.h5", blobs_csv, "-o", "/dev/null")
    assert r.exit_code == 0, r.stderr
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_rdev, after.st_ino) == (before.st_rdev, before.st_ino)


def test_plot_and_grad_plot_into_a_fifo_write_a_png_through_it(model, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    r, png = drain_fifo(fifo, lambda: invoke("plot", model, "-o", fifo))
    assert r.exit_code == 0, r.stderr
    assert png[:8] == PNG and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    r, png = drain_fifo(fifo, lambda: invoke("grad", "sin(x)", "--at", "1", "--plot", fifo))
    assert r.exit_code == 0, r.stderr
    assert png[:8] == PNG and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symlink_to_a_file_stays_a_link_and_the_file_keeps_its_mode(model, blobs_csv, tmp_path):
    old_mask = os.umask(0o022)
    try:
        real = tmp_path / "real.csv"
        real.write_text("old\n")
        real.chmod(0o600)
        link = tmp_path / "preds.csv"
        link.symlink_to(real)
        r = invoke("predict", model / "model.h5", blobs_csv, "-o", link)
        assert r.exit_code == 0, r.stderr
        assert link.is_symlink() and os.readlink(link) == str(real)
        assert real.read_text().startswith("label,")
        assert stat.S_IMODE(real.stat().st_mode) == 0o600
        # a plain file keeps its mode too; a new file gets 0666 minus the umask
        plain = tmp_path / "plain.csv"
        plain.write_text("old\n")
        plain.chmod(0o640)
        assert invoke("predict", model / "model.h5", blobs_csv, "-o", plain).exit_code == 0
        assert stat.S_IMODE(plain.stat().st_mode) == 0o640 and plain.read_text().startswith("label,")
        png = tmp_path / "c.png"
        assert invoke("plot", model, "-o", png).exit_code == 0
        png.chmod(0o600)
        assert invoke("plot", model, "-o", png).exit_code == 0
        assert stat.S_IMODE(png.stat().st_mode) == 0o600
        new = tmp_path / "new.csv"
        assert invoke("predict", model / "model.h5", blobs_csv, "-o", new).exit_code == 0
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
    finally:
        os.umask(old_mask)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_dangling_symlink_is_refused(model, blobs_csv, tmp_path):
    link = tmp_path / "preds.csv"
    link.symlink_to(tmp_path / "nowhere" / "x.csv")
    r = invoke("predict", model / "model.h5", blobs_csv, "-o", link)
    one_line(r, 2, str(link), "symbolic link to a missing file")
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_dash_is_stdout(model, blobs_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = invoke("predict", model / "model.h5", blobs_csv)
    r = invoke("predict", model / "model.h5", blobs_csv, "-o", "-")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == plain.stdout and r.stdout.startswith("label,") and r.stderr == ""
    r = invoke("plot", model, "-o", "-")
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes[:8] == PNG and r.stderr == ""
    assert not (tmp_path / "-").exists()
    one_line(invoke("grad", "sin(x)", "--at", "1", "--plot", "-"), 2, "--plot -")


def test_a_folder_output_is_refused(tmp_path):
    """(click refuses a folder given on the command line itself; the library checks too)"""
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    for out in (tmp_path, link):
        with pytest.raises(ConfigError) as info:
            fileio.output_target(out)
        assert info.value.message == f"{out}: is a folder; give a file name for the output"


# --- 4. outputs that are inputs --------------------------------------------------------------

def test_predict_never_writes_onto_its_inputs(model, blobs_csv, tmp_path):
    ckpt = model / "model.h5"
    csv_copy = tmp_path / "in.csv"
    shutil.copy(blobs_csv, csv_copy)
    hard = tmp_path / "hard.h5"
    os.link(ckpt, hard)
    soft = tmp_path / "soft.csv"
    soft.symlink_to(csv_copy)
    before = {p: p.read_bytes() for p in (ckpt, csv_copy)}
    for out in (ckpt, csv_copy, hard, soft):
        r = invoke("predict", ckpt, csv_copy, "-o", out)
        one_line(r, 2, str(out), "is also an input")
    assert {p: p.read_bytes() for p in before} == before
    assert hard.stat().st_ino == ckpt.stat().st_ino and soft.is_symlink()


def test_plot_and_grad_never_replace_a_checkpoint_or_csv(model, tmp_path):
    files = {name: (model / name).read_bytes() for name in ("model.h5", "last.h5", "metrics.csv")}
    for name in files:
        one_line(invoke("plot", model, "-o", model / name), 2, str(model / name), "also an input")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    one_line(invoke("plot", model, "-o", other), 2, str(other), "not a PNG")
    for target in (model / "last.h5", other):
        r = invoke("grad", "sin(x)", "--at", "1", "--plot", target)
        one_line(r, 2, str(target), "not a PNG")
        assert r.stdout == "", "refused before any work"
    assert {name: (model / name).read_bytes() for name in files} == files
    assert other.read_text() == "a,b\n1,2\n"
    assert not [p for p in list(model.iterdir()) + list(tmp_path.iterdir()) if p.name.endswith(".tmp")]


# --- 5. an OSError while checking the output path --------------------------------------------

def test_an_unreadable_output_path_is_one_line(model, blobs_csv, tmp_path, monkeypatch):
    forbidden = str(tmp_path / "forbidden")
    for name in ("stat", "lstat"):
        real = getattr(os, name)

        def denied(path, *a, _real=real, **k):
            if str(path).startswith(forbidden):
                raise PermissionError(13, "Permission denied", str(path))
            return _real(path, *a, **k)
        monkeypatch.setattr(os, name, denied)
    out = f"{forbidden}/x"
    one_line(invoke("predict", model / "model.h5", blobs_csv, "-o", out), 1, out, "Permission denied")
    one_line(invoke("plot", model, "-o", out), 1, out, "Permission denied")
    one_line(invoke("grad", "sin(x)", "--at", "1", "--plot", out), 1, out, "Permission denied")


# --- 2. the lock ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["symlink", "hardlink", "fifo"])
def test_the_lock_never_writes_through_a_link(tmp_path, how):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    if how == "symlink":
        (out / ".lock").symlink_to(victim)
    elif how == "hardlink":
        os.link(victim, out / ".lock")
    else:
        os.mkfifo(out / ".lock")
    with pytest.raises(CheckpointError) as info:
        with lock.hold(out):
            pass
    msg = info.value.message
    assert msg.startswith(f"{out / '.lock'}: the lock file is") and "\n" not in msg
    assert info.value.exit_code == 1
    assert victim.read_text() == "precious\n"


def test_a_killed_runs_curves_png_temporary_is_cleaned(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".curves.png.k1a2b3.tmp").write_bytes(b"half a picture")
    (out / ".keep.txt.k1a2b3.tmp").write_bytes(b"not ours")
    with lock.hold(out):
        pass
    assert sorted(p.name for p in out.iterdir()) == [".keep.txt.k1a2b3.tmp", ".lock"]


# --- 3. HDF5 files that point elsewhere ------------------------------------------------------

SECRET = b"TOPSECRET-1234\n"


def _hostile_data(tmp_path, kind):
    """A data file whose `x` is stored in (or read from) another file, or a broken soft link."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET + np.ones((4, 2), np.float64).tobytes())
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as g:
        g["x"] = np.full((4, 2), 7.0)
    path = tmp_path / f"{kind}.h5"
    with h5py.File(path, "w") as f:
        f["y"] = np.array([0, 1, 0, 1])
        if kind == "external_link":
            f["x"] = h5py.ExternalLink(str(other), "/x")
        elif kind == "external_storage":
            f.create_dataset("x", shape=(4, 2), dtype="f8", external=[(str(secret), len(SECRET), 64)])
        elif kind == "virtual_missing_source":
            layout = h5py.VirtualLayout(shape=(4, 2), dtype="f8")
            layout[:] = h5py.VirtualSource(str(tmp_path / "gone.h5"), "x", shape=(4, 2))
            f.create_virtual_dataset("x", layout, fillvalue=0)
        elif kind == "dangling_soft_link":
            f["x"] = h5py.SoftLink("/nothing")
        elif kind == "looping_soft_link":
            f["x"] = h5py.SoftLink("/z")
            f["z"] = h5py.SoftLink("/x")
        elif kind == "soft_link_through_external":
            f["g"] = h5py.ExternalLink(str(other), "/")
            f["x"] = h5py.SoftLink("/g/x")
    return path


HOSTILE = ["external_link", "external_storage", "virtual_missing_source", "dangling_soft_link",
           "looping_soft_link", "soft_link_through_external"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_data_file_never_reads_other_files(tmp_path, kind):
    path = _hostile_data(tmp_path, kind)
    with pytest.raises(DataError) as info:
        data.read(str(path), "x", "y")
    msg = info.value.message
    assert msg.startswith(f"{path}: 'x'") and "\n" not in msg
    assert "TOPSECRET" not in msg
    # the streamed-training reader (nncli/data/hdf5.py) refuses it too
    with pytest.raises(DataError):
        hdf5.x_info(str(path), "x")


def test_a_soft_link_inside_the_file_is_fine(tmp_path):
    path = tmp_path / "soft.h5"
    with h5py.File(path, "w") as f:
        f["data/inputs"] = np.arange(8.0).reshape(4, 2)
        f["y"] = np.array([0, 1, 0, 1])
        f["x"] = h5py.SoftLink("/data/inputs")
    table = data.read(str(path), "x", "y")
    assert table.x.tolist() == np.arange(8.0).reshape(4, 2).tolist()


def test_train_on_a_virtual_dataset_is_one_line(tmp_path):
    path = _hostile_data(tmp_path, "virtual_missing_source")
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  train: {path}\nlayers:\n  - {{type: dense, units: 2, activation: softmax}}\n"
                      "epochs: 1\n")
    r = invoke("train", config, "-o", tmp_path / "run")
    one_line(r, 1, str(path), "'x' is a virtual dataset")
    assert not (tmp_path / "run" / "model.h5").exists()


def _tamper(src, dst, secret, kind):
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        if kind == "external_storage":
            n = len(f["labels/classes"])
            del f["labels/classes"]
            f.create_dataset("labels/classes", shape=(n,), dtype="S5", external=[(str(secret), 0, 5 * n)])
        elif kind == "external_link":
            del f["labels/classes"]
            f["labels/classes"] = h5py.ExternalLink(str(secret), "/classes")
        elif kind == "dangling_soft_link":
            f["history/extra"] = h5py.SoftLink("/nowhere")
        elif kind == "looping_soft_link":
            f["rng/a"] = h5py.SoftLink("/rng/b")
            f["rng/b"] = h5py.SoftLink("/rng/a")


@pytest.mark.parametrize("kind", ["external_storage", "external_link", "dangling_soft_link",
                                  "looping_soft_link"])
def test_a_checkpoint_never_reads_other_files(model, blobs_csv, tmp_path, kind):
    secret = tmp_path / "secret.h5"
    if kind == "external_link":
        with h5py.File(secret, "w") as g:
            g["classes"] = np.array([b"TOPSECRET-1", b"TOPSECRET-2", b"TOPSECRET-3"])
    else:
        secret.write_bytes(b"TOPSECRET-1TOPSECRET-2TOPSECRET-3")
    bad = tmp_path / "bad.h5"
    _tamper(model / "model.h5", bad, secret, kind)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(bad)
    assert info.value.message.startswith(f"{bad}: '/") and "TOP" not in info.value.message
    for args in (["inspect", bad], ["predict", bad, blobs_csv]):
        r = invoke(*args)
        one_line(r, 1, str(bad))
        assert "TOP" not in r.stdout + r.stderr


# --- 7. nncli plot on odd metrics.csv ---------------------------------------------------------

@pytest.mark.parametrize("make", ["not_utf8", "a_folder"])
def test_plot_on_a_bad_metrics_csv_is_one_line(tmp_path, make):
    run = tmp_path / "run"
    run.mkdir()
    if make == "not_utf8":
        (run / "metrics.csv").write_bytes(b"epoch,loss\n1,\xff\xfe\n")
    else:
        (run / "metrics.csv").mkdir()
    one_line(invoke("plot", run), 2, str(run / "metrics.csv"), "not UTF-8" if make == "not_utf8" else "folder")
    assert not (run / "curves.png").exists()


@pytest.mark.parametrize("values", [("1e308", "0.5", "0.4"), ("1e308", "-1e308", "0.4"), ("inf", "nan", "0.3")])
def test_plot_with_huge_values_draws_what_it_can(tmp_path, values):
    run = tmp_path / "run"
    run.mkdir()
    rows = "".join(f"{i + 1},{v},{v}\n" for i, v in enumerate(values))
    (run / "metrics.csv").write_text("epoch,loss,val_loss\n" + rows)
    r = invoke("plot", run)
    assert r.exit_code == 0, r.stderr
    assert r.stderr == f"wrote {run / 'curves.png'}\n"  # no RuntimeWarning noise either
    assert (run / "curves.png").read_bytes()[:8] == PNG


# --- 8. grad --hessian of many variables -------------------------------------------------------

def _product(n):
    names = [f"v{i}" for i in range(n)]
    text = "*".join("(" + "*".join(names[i:i + 8]) + ")" for i in range(0, n, 8))
    return text, ",".join(f"{v}=1.01" for v in names)


def test_hessian_of_too_many_variables_is_refused_at_once():
    text, at = _product(derivatives.MAX_HESSIAN_VARIABLES + 1)
    start = time.perf_counter()
    r = invoke("grad", text, "--at", at, "--hessian")
    one_line(r, 2, f"--hessian of {derivatives.MAX_HESSIAN_VARIABLES + 1} variables", "--wrt")
    assert time.perf_counter() - start < 5
    big, big_at = _product(128)
    with pytest.raises(ConfigError):
        derivatives.compute(big, [big_at], hessian=True)
    # --wrt chooses few enough
    r = invoke("grad", text, "--at", at, "--hessian", "--wrt", "v0,v1")
    assert r.exit_code == 0 and r.stdout.splitlines()[2] == "hessian:"


def test_gradient_of_a_product_of_128_variables_is_quick():
    text, at = _product(128)
    start = time.perf_counter()
    result = derivatives.compute(text, [at])
    assert time.perf_counter() - start < 30
    assert len(result.derivative) == 128
    assert result.derivative["v5"] == pytest.approx(1.01 ** 127, rel=1e-12)
