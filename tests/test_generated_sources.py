"""PyTensor's generated Python sources go to one folder per process, removed at exit
(nncli/generated_sources.py). Without it, every compiled function left files in the system temp
folder: `nncli train configs/xor.yaml` 10 under JAX, a prediction 3 more."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from support import BLOBS_CONFIG, nncli_executable


def test_train_predict_and_evaluate_leave_the_temp_folder_empty(tmp_path, blobs_csv):
    temp = tmp_path / "temp"
    temp.mkdir()
    config = tmp_path / "blobs.yaml"
    config.write_text(BLOBS_CONFIG.format(train=blobs_csv))
    env = {**os.environ, "TMPDIR": str(temp), "NNCLI_BACKEND": "jax"}

    def nncli(*args):
        proc = subprocess.run([nncli_executable(), *args], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc

    nncli("train", str(config), "-o", str(tmp_path / "run"), "-q")
    model = tmp_path / "run" / "model.h5"
    nncli("predict", str(model), str(blobs_csv), "-o", str(tmp_path / "p.csv"))
    nncli("evaluate", str(model), str(blobs_csv))
    assert sorted(p.name for p in temp.iterdir()) == []
    assert len((tmp_path / "p.csv").read_text().splitlines()) == len(blobs_csv.read_text().splitlines())


CHILD = textwrap.dedent("""
    import os, shutil, sys
    from pytensor.link import utils
    from pytensor.link.numba import cache
    from nncli import generated_sources

    generated_sources.keep_private(numba=True)
    f = utils.compile_function_src("def f(x):\\n    return x + 1\\n", "f")
    g = cache.compile_numba_function_src("def g(x):\\n    return x * 2\\n", "g", write_to_disk=True)
    assert f(1) == 2 and g(3) == 6
    first = generated_sources.folder()
    files = [f.__code__.co_filename, g.__code__.co_filename]
    assert all(os.path.dirname(p) == first for p in files), (files, first)
    assert open(files[0]).read() == "def f(x):\\n    return x + 1\\n"
    shutil.rmtree(first)                      # a temp cleaner took it: the next source makes a new one
    h = utils.compile_function_src("def h():\\n    return 5\\n", "h")
    second = generated_sources.folder()
    assert h() == 5 and os.path.dirname(h.__code__.co_filename) == second != first
    print(first)
    print(second)
""")


def test_generated_sources_are_written_to_the_process_folder_and_removed_at_exit(tmp_path):
    temp = tmp_path / "temp"
    temp.mkdir()
    proc = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, "TMPDIR": str(temp)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = (Path(line) for line in proc.stdout.split())
    assert first.parent == second.parent == temp
    assert first.name.startswith("nncli-sources-")
    assert sorted(p.name for p in temp.iterdir()) == []     # both removed when the process exited


def test_a_folder_someone_else_put_in_its_place_is_not_used(tmp_path, monkeypatch):
    from nncli import generated_sources

    monkeypatch.setattr(generated_sources, "_folder", None)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    mine = generated_sources.folder()
    os.rmdir(mine)
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    os.symlink(decoy, mine)                   # the same name, now a link to another folder
    again = generated_sources.folder()
    assert again != mine and Path(again).is_dir() and not Path(again).is_symlink()
    generated_sources._remove(mine, os.getpid())          # a link is not removed, nor what it points to
    assert decoy.is_dir() and Path(mine).is_symlink()
    generated_sources._remove(again, os.getpid())
    assert not Path(again).exists()


def test_folders_of_processes_that_ended_are_removed_by_the_next_one(tmp_path):
    """A process killed with SIGKILL leaves its folder: the next one removes it, and nothing else."""
    from nncli import generated_sources

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, timeout=60)
    dead = int(ended.stdout)
    names = {"dead": f"nncli-sources-{dead}-abc", "alive": f"nncli-sources-{os.getpid()}-abc",
             "huge": "nncli-sources-99999999999999999999-abc", "other": f"not-nncli-{dead}"}
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.py").write_text("x = 1\n")
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.symlink(target, tmp_path / f"nncli-sources-{dead}-link")       # a link is never followed nor removed
    generated_sources._remove_orphans(str(tmp_path))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([names["alive"], names["huge"], names["other"], "elsewhere", f"nncli-sources-{dead}-link"])
    assert (target).is_dir()
