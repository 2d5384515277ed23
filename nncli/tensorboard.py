"""TensorBoard event files for a training run (`tensorboard:` in the config, `nncli train --tensorboard`).

Files go to ``<output>/tensorboard/``, written with tensorboardX (the optional extra
``nncli[tensorboard]``):
  - every history value of each finished epoch (the columns of metrics.csv: losses, metrics,
    learning_rate, seconds) as a scalar with step = the epoch number (1-based, metrics.csv's epoch);
  - the resolved config (what the checkpoint stores) as text, tag ``config``, at the run's first step;
  - with ``{histograms: N}``, a histogram of every parameter (tag ``weights/<layer>/<param>``) at
    the epochs divisible by N.

Records are written synchronously (tensorboardX's ``EventsWriter``, not its ``SummaryWriter``, whose
queue and background thread decide when records reach the file) and flushed at the end of each
epoch, before that epoch's checkpoint is written: the event files never hold less than last.h5.

The resume rule: no (tag, step) pair is ever written twice. ``--resume`` reads back the pairs already
in the folder's event files and skips them. So an epoch logged by a run that was killed before its
checkpoint reached last.h5 is trained again (bit for bit the same, with the same backend and device)
but not logged again, and a resume that turns TensorBoard on logs only the epochs it trains. A fresh
run (not --resume) replaces the previous run's outputs, so it first removes the event files that
run left (``events.out.tfevents.*``; nothing else in the folder is touched).
"""

from __future__ import annotations

import os
import secrets
import stat
import struct
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from nncli.errors import CheckpointError, ConfigError
from nncli.schema import Key, described, integer, mapping, mapping_schema, optional

FOLDER = "tensorboard"
PREFIX = "events.out.tfevents."
PIP = "pip install 'nncli[tensorboard]'"
BINS = 30                      # histogram buckets (TensorFlow 2's default)
MAX_RECORD = 64 << 20          # a longer record is not one of ours: stop reading that file there

KEYS = {
    "histograms": Key(optional(integer(min=1, max=1_000_000)), None,
                      "a histogram of every weight every N epochs (default: none)"),
}


def validate(value: Any, path: str) -> dict | bool:
    """false/null: off (False); true: on without histograms; {histograms: N}: on, histograms every N."""
    if value is False or value is None:
        return False
    if value is True:
        value = {}
    return mapping(value, path, KEYS, "mapping (or true/false)")


described(validate, lambda: {"anyOf": [{"type": ["boolean", "null"]}, mapping_schema(KEYS)]})
DOC = ("TensorBoard event files in <output>/tensorboard: true, or {histograms: N} for weight histograms "
       "every N epochs (default false)")


def _tensorboardx():
    try:
        from tensorboardX import summary
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2
    except ImportError:
        return None
    return summary, EventsWriter, event_pb2


def require(spec) -> None:
    """A config with tensorboard on needs tensorboardX: a one-line config error (exit 2) if missing."""
    if spec["tensorboard"] and _tensorboardx() is None:
        raise spec.error("tensorboard", f"TensorBoard logging needs the tensorboardX package, which is not "
                                        f"installed; install it with: {PIP}")


def folder_of(out: Path) -> Path:
    return Path(out) / FOLDER


def _event_files(folder: Path) -> list[Path]:
    """Our event files in `folder`: regular files (not links) named events.out.tfevents.*."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot list: {exc.strerror or exc}") from None
    out = []
    for name in names:
        if name.startswith(PREFIX):
            try:
                if stat.S_ISREG(os.lstat(folder / name).st_mode):
                    out.append(folder / name)
            except OSError:
                continue
    return out


def _check_folder(folder: Path) -> None:
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{folder}: exists and is not a folder (a link or a file); TensorBoard files go "
                              f"there: move it away")


def clear(out: Path) -> list[str]:
    """Remove the event files of a previous run in <out>/tensorboard (a fresh run replaces that run)."""
    folder = folder_of(out)
    if not folder.is_dir() or folder.is_symlink():  # not ours (Log refuses to write there)
        return []
    removed = []
    for path in _event_files(folder):
        try:
            path.unlink()
            removed.append(path.name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot remove the previous run's TensorBoard file: "
                                  f"{exc.strerror or exc}") from None
    return removed


def logged(out: Path) -> set[tuple[str, int]]:
    """The (tag, step) pairs in the event files of <out>/tensorboard, read back record by record.

    A record whose length or checksum does not hold (the torn end of a file whose writer was killed)
    ends the reading of that file."""
    mods = _tensorboardx()
    if mods is None:
        return set()
    event_pb2 = mods[2]
    from google.protobuf.message import DecodeError
    from tensorboardX.record_writer import masked_crc32c

    pairs: set[tuple[str, int]] = set()
    for path in _event_files(folder_of(out)):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
        pos = 0
        while pos + 12 <= len(data):
            header = data[pos:pos + 8]
            (length,) = struct.unpack("<Q", header)
            if struct.unpack("<I", data[pos + 8:pos + 12])[0] != masked_crc32c(header) or length > MAX_RECORD \
                    or pos + 16 + length > len(data):
                break
            body = data[pos + 12:pos + 12 + length]
            if struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] != masked_crc32c(body):
                break
            pos += 16 + length
            try:
                event = event_pb2.Event.FromString(body)
            except DecodeError:
                break
            for value in event.summary.value:
                pairs.add((value.tag, int(event.step)))
    return pairs


class Log:
    """An open event stream: `epoch` at each epoch's end, `close` at the end of training."""

    def __init__(self, out: Path, setting: Mapping[str, Any], config_yaml: str, start: int, resume: bool):
        mods = _tensorboardx()
        if mods is None:
            raise ConfigError(f"tensorboard: TensorBoard logging needs the tensorboardX package, which is not "
                              f"installed; install it with: {PIP}")
        self.summary, events_writer, self.event_pb2 = mods
        self.histograms = setting.get("histograms")
        folder = folder_of(out)
        _check_folder(folder)
        self.done = logged(out) if resume else set()
        try:
            folder.mkdir(exist_ok=True)
            # a random suffix: two runs in the same second never share (and truncate) a file
            self.writer = events_writer(str(folder / "events"), f".{os.getpid()}.{secrets.token_hex(4)}")
        except OSError as exc:
            raise CheckpointError(f"{folder}: cannot write TensorBoard files: {exc.strerror or exc}") from None
        if not any(tag == "config/text_summary" for tag, _ in self.done):
            text = "\n".join("    " + line for line in config_yaml.splitlines())  # a Markdown code block
            self._write(start, [v for v in self.summary.text("config", text).value])
        self.writer.flush()

    def _write(self, step: int, values: list) -> None:
        values = [v for v in values if (v.tag, step) not in self.done]
        if not values:
            return
        summary = self.summary.Summary(value=values)
        self.writer.write_event(self.event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        self.done.update((v.tag, step) for v in values)

    def epoch(self, epoch: int, history: Mapping[str, list[float]],
              weights: Callable[[], Mapping[str, np.ndarray]]) -> None:
        """Log finished epoch `epoch` (1-based): its history values and, when due, the weights' histograms."""
        values = [v for k, series in history.items() if len(series) >= epoch
                  for v in self.summary.scalar(k, float(series[epoch - 1])).value]
        if self.histograms and epoch % self.histograms == 0:
            values += [v for name, w in weights().items() if np.size(w)
                       for v in self.summary.histogram(f"weights/{name}", np.asarray(w), BINS).value]
        self._write(epoch, values)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_log(setting: Mapping[str, Any] | bool, out: Path, config_yaml: str, start: int,
             resume: bool) -> Log | None:
    """The run's event stream (None when tensorboard is off: False). A fresh run first removes the event
    files of the run it replaces, whether or not it logs itself: stale steps would be skipped later."""
    if not resume:
        clear(out)
    return Log(out, setting, config_yaml, start, resume) if setting else None
