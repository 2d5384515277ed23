"""Atomic file writes: a temporary file in the same folder, synced, then os.replace.

A failure at any moment (an exception, a full disk, a kill) leaves the
previous file as it was; the temporary file is removed on errors.

Outputs the user names (``predict -o``, ``plot -o``, ``grad --plot``) go
through :func:`output_target` and :func:`open_output`, with the rules of
coreutils:

- ``-`` is standard output;
- a character device or a FIFO (``/dev/null``, a pipe) is written through as
  a stream: opened for writing, never replaced;
- a symbolic link is followed: to a stream as above; to a regular file, that
  file is replaced atomically and the link stays a link; a dangling link is
  refused (nothing is created at a path the user did not type);
- a regular file is replaced atomically and keeps its permission bits (and,
  where we may, its owner); a new file gets 0666 minus the umask;
- a folder, a block device or a socket is refused, and so is any output that is
  the same file (device and inode) as one of the command's inputs; a picture
  (``picture=True``) never replaces an existing file that is not a PNG.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from nncli.errors import ConfigError, NncliError

STDOUT = "-"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, like: os.stat_result | None = None) -> Iterator[str]:
    """Yield a temporary path next to `path`; on success it replaces `path`.

    The new file gets the permission bits (and, where allowed, the owner) of `like`, the
    file it replaces, or else 0666 minus the umask."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        os.chmod(tmp, stat.S_IMODE(like.st_mode) if like is not None else 0o666 & ~_umask())
        if like is not None and (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.chown(tmp, like.st_uid, like.st_gid)
            except OSError:
                pass  # not allowed: the file becomes ours, as with any editor
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            fh.write(text)


# --- outputs the user names ------------------------------------------------------------

@dataclass(frozen=True)
class OutputTarget:
    """Where an output goes: ``kind`` is "stdout", "stream" (written through) or "file"
    (``real``, the file itself with symlinks resolved, replaced atomically)."""

    path: str
    kind: str
    real: str = ""
    like: os.stat_result | None = None   # the regular file being replaced


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _same_as_input(st: os.stat_result, inputs: Iterable) -> str | None:
    for item in inputs:
        try:
            other = os.stat(item)
        except (OSError, ValueError):
            continue  # an input that is not there cannot be destroyed
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return str(item)
    return None


def _is_png(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(len(PNG_SIGNATURE))
    return head == b"" or head == PNG_SIGNATURE  # an empty file holds nothing to lose


def output_target(path: str | os.PathLike | OutputTarget, inputs: Iterable = (), picture: bool = False,
                  what: str = "output") -> OutputTarget:
    """Check the output path `path` before any work is done (see the module's rules).

    A refusal is a ConfigError (exit 2); an OSError while checking is an NncliError (exit 1).
    Nothing is created or changed here."""
    if isinstance(path, OutputTarget):
        return path
    text = os.fspath(path)
    if text == STDOUT:
        return OutputTarget(text, "stdout")
    try:
        return _check_output(text, list(inputs), picture, what)
    except OSError as exc:
        raise NncliError(f"{text}: cannot write the {what}: {_reason(exc)}") from None


def _check_output(text: str, inputs: list, picture: bool, what: str) -> OutputTarget:
    try:
        lst = os.lstat(text)
    except FileNotFoundError:
        lst = None
    link = lst is not None and stat.S_ISLNK(lst.st_mode)
    if lst is None or link:
        try:
            st = os.stat(text)  # through the link
        except FileNotFoundError:
            st = None
        if st is None:
            if lst is not None:
                raise ConfigError(f"{text}: is a symbolic link to a missing file ({os.readlink(text)}); "
                                  f"give the {what} file itself")
            folder = os.path.dirname(text) or "."
            if not os.path.isdir(folder):
                raise ConfigError(f"cannot write {text}: folder {folder} does not exist")
            return OutputTarget(text, "file", text)
    else:
        st = lst
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise ConfigError(f"{text}: is a folder; give a file name for the {what}")
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        kind = "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file"
        raise ConfigError(f"{text}: is {kind}; nncli writes the {what} only to a file, a character "
                          f"device or a pipe")
    same = _same_as_input(st, inputs)
    if same is not None:
        shown = "" if same == text else f" ({same})"
        raise ConfigError(f"{text}: is also an input of this command{shown}; writing the {what} there "
                          f"would destroy it; choose another file")
    if not stat.S_ISREG(mode):
        return OutputTarget(text, "stream")
    if picture and not _is_png(text):
        raise ConfigError(f"{text}: exists and is not a PNG picture; a plot never replaces another "
                          f"kind of file (remove it or choose another name)")
    return OutputTarget(text, "file", os.path.realpath(text) if link else text, st)


@contextmanager
def open_output(target: OutputTarget, binary: bool = False) -> Iterator[IO]:
    """A file object for `target`: stdout, the stream itself, or a temporary file that replaces
    the file atomically when the block ends without an exception."""
    kw = {} if binary else {"newline": "", "encoding": "utf-8"}
    mode = "wb" if binary else "w"
    if target.kind == "stdout":
        out = sys.stdout.buffer if binary else sys.stdout
        yield out
        out.flush()
    elif target.kind == "stream":
        # no O_CREAT/O_TRUNC: only the device or pipe that was checked is opened
        fd = os.open(target.path, os.O_WRONLY | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
        if not (stat.S_ISCHR(os.fstat(fd).st_mode) or stat.S_ISFIFO(os.fstat(fd).st_mode)):
            os.close(fd)
            raise NncliError(f"{target.path}: changed while nncli was running; nothing was written")
        with open(fd, mode, **kw) as fh:
            yield fh
    else:
        with atomic_path(target.real, target.like) as tmp:
            with open(tmp, mode, **kw) as fh:
                yield fh
