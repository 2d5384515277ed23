"""One training run per output folder: an advisory lock file, ``<output>/.lock``.

``hold(folder)`` creates the folder if needed, opens ``.lock`` and takes an
exclusive ``fcntl.flock`` on it without waiting. A second run on the same
folder (from another process, or the same one) gets an ``OutputLocked``
error naming the pid that holds it. The kernel drops the lock when the file
is closed, so a process that is killed (even with SIGKILL) never leaves a
lock that blocks the next run; the file itself stays and holds the pid of
the last run that wrote it.

The lock file is opened with ``O_NOFOLLOW`` and written (truncated, our pid)
only when it is a regular file with one name, owned by us: a symbolic or hard
link named ``.lock`` is an error naming it, and no other file is ever touched.

While it holds the lock a run also removes the temporary files that an
earlier, killed run may have left behind (``.last.h5.*.tmp``, ``.curves.png.*.tmp`` and the like,
see :mod:`nncli.fileio`): nobody else can be writing them.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from nncli.errors import CheckpointError, NncliError

LOCK_NAME = ".lock"
# the files the trainer writes atomically; their temporaries are ".<name>.<random>.tmp"
OUTPUT_FILES = ("last.h5", "model.h5", "metrics.csv", "curves.png")

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None


class OutputLocked(NncliError):
    """Another run is writing to the same output folder (exit 1)."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CheckpointError(f"{folder}: cannot use as the output folder: a file of that name exists") from None
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot create the output folder: {_reason(exc)}") from None
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: cannot use as the output folder: not a folder")


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f" (pid {text})" if text.isdigit() else ""


def clean_temporaries(folder: Path) -> list[str]:
    """Remove temporaries of OUTPUT_FILES left by a killed run; return their names."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in OUTPUT_FILES):
            try:
                os.unlink(entry.path)
                removed.append(name)
            except OSError:
                pass
    return removed


def _check_lock_file(fd: int, path: Path) -> None:
    """The lock is written (truncated, our pid) only when it is a plain file of ours: a regular
    file with no other name (a hard link would make us overwrite another file), owned by us."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        problem = "not a regular file"
    elif st.st_nlink != 1:
        problem = f"a hard link ({st.st_nlink} names for one file)"
    elif st.st_uid != os.geteuid():
        problem = f"owned by another user (uid {st.st_uid})"
    else:
        return
    raise CheckpointError(f"{path}: the lock file is {problem}; nncli never writes to it (remove it)")


@contextmanager
def hold(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<folder>/.lock`` for the duration of the block (creating the folder)."""
    folder = Path(folder)
    _make_folder(folder)
    path = folder / LOCK_NAME
    if fcntl is None:  # pragma: no cover
        yield path
        return
    try:
        # O_NOFOLLOW: a symlink named .lock is refused, never followed to the file it names
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                     0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CheckpointError(f"{path}: the lock file is a symbolic link; nncli never writes through "
                                  f"it (remove it)") from None
        raise CheckpointError(f"{folder}: cannot write to the output folder ({LOCK_NAME}: {_reason(exc)})") from None
    try:
        _check_lock_file(fd, path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputLocked(f"{folder}: another nncli train{_holder(fd)} is writing to this output "
                                   f"folder; wait for it to finish or choose another --output") from None
            raise CheckpointError(f"{path}: cannot lock the output folder: {_reason(exc)}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is for messages only; the flock is what counts
        clean_temporaries(folder)
        yield path
    finally:
        os.close(fd)  # releases the flock
