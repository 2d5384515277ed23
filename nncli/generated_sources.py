"""Where PyTensor's generated Python sources go: one folder per process, removed when it exits.

PyTensor's JAX and NUMBA linkers turn every graph they compile (the whole function, and each
elementwise op's scalar function) into Python source, and write each source to a
``NamedTemporaryFile(delete=False)`` in the system temp folder so that tracebacks can show it
(``pytensor.link.utils.compile_function_src``, ``pytensor.link.numba.cache``). Nothing ever removes
those files: every ``nncli train``, ``predict`` or ``evaluate`` left files in /tmp (configs/xor.yaml:
10 for training, 3 for a prediction), a sweep or a test run thousands (247,000 on this project's
development machine). A folder with that many entries also slows every ``importlib.metadata``
lookup made from it (PyTensor's dependencies make some on import): ``python -X importtime -c
"import pytensor"`` took 1.07 s with that /tmp as the working folder, 0.28-0.33 s in the project's.

``keep_private()`` (called by ``backend.activate``, before anything compiles) points those two
modules' ``NamedTemporaryFile`` at one folder of this process, ``nncli-sources-*`` in the system
temp folder, and removes the folder when the interpreter exits. The generated files still exist
while the process runs (tracebacks still show the code). Only PyTensor's two modules change: the
rest of the process, and the caller's own temp files, keep the system temp folder.

A process killed with SIGKILL (a sweep's trial when its Dask worker is lost) cannot remove its
folder. The folder's name holds its process id, ``nncli-sources-<pid>-*``: the next process that
makes a folder removes those of this user whose process no longer exists.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import stat
import tempfile

#: the PyTensor modules that write a generated source per compiled function
WRITERS = ("pytensor.link.utils", "pytensor.link.numba.cache")
PREFIX = "nncli-sources-"

_folder: str | None = None


def folder() -> str:
    """This process's folder for generated sources, made on first use, and made anew if it is gone or
    is no longer a folder of this user (a temp cleaner removed it, and something else took the name).

    A forked child writes into its parent's folder; only the process that made a folder removes it."""
    global _folder
    if _folder is None or not _ours(_folder):
        _remove_orphans(tempfile.gettempdir())
        _folder = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        atexit.register(_remove, _folder, os.getpid())
    return _folder


def _remove_orphans(parent: str) -> None:
    """Remove this user's source folders in `parent` whose process has ended (killed before its exit)."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(PREFIX):].split("-", 1)[0]
        if entry.name.startswith(PREFIX) and pid.isdigit() and len(pid) <= 9 and not _alive(int(pid)) \
                and _ours(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:               # exists, another user's
        return True
    return True


def _ours(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def _remove(path: str, owner: int) -> None:
    if os.getpid() == owner and _ours(path):
        shutil.rmtree(path, ignore_errors=True)


def _named_temporary_file(*args, **kwargs):
    if kwargs.get("dir") is None:
        kwargs["dir"] = folder()
    return tempfile.NamedTemporaryFile(*args, **kwargs)


def keep_private(numba: bool = False) -> None:
    """Send the generated sources of PyTensor's writers (``WRITERS``; the NUMBA one only with ``numba``,
    as importing it imports numba) to ``folder()``."""
    for name in (WRITERS if numba else WRITERS[:1]):
        module = importlib.import_module(name)
        if getattr(module, "NamedTemporaryFile", None) is not _named_temporary_file:
            module.NamedTemporaryFile = _named_temporary_file
