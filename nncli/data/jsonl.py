"""Reading JSON-lines files (.jsonl, .ndjson): one JSON object per line, its keys the column names.

Read through the same interface as a CSV (nncli.data.csv.read_chunks hands a .jsonl path to
:func:`read_chunks` here): the same Chunks of string cells, so everything after the reader
(column choice, numbers, targets, missing cells, prediction in chunks) is shared.

The rules:
  - line 1 is an object; its keys, in order, are the columns (none may be empty);
  - every later line is an object whose keys are among line 1's: a key line 1 does not have is
    an error naming the line; a key that is absent is a missing value, as JSON null is;
  - a value is a string, a number or true/false (read as the text a CSV cell would hold:
    numbers as JSON writes them, true/false as "true"/"false"); a list or an object (a nested
    value) is an error naming the line and the key;
  - blank lines may end the file, not come between objects (line numbers are row numbers).
A missing value reads as the empty cell when "" is a missing token (the default), else as the
first of data.missing_values; with no missing tokens at all a null is an error.
"""

from __future__ import annotations

import json
import os
from typing import Iterator, Sequence

import numpy as np

from nncli.data.table import Chunks, preview
from nncli.errors import DataError

SUFFIXES = (".jsonl", ".ndjson")


def is_jsonl(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(SUFFIXES)


def _kind(value) -> str:
    return "a list" if isinstance(value, list) else "an object"


def _object(path: str, raw: bytes, line: int) -> dict:
    try:
        text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: line {line}: not UTF-8 text (bad byte at column {exc.start + 1})") from None
    try:
        obj = json.loads(text, parse_constant=str)  # NaN, Infinity: the text (NaN is a missing token)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {line}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:   # e.g. an integer longer than Python's int-to-str limit (4300 digits)
        raise DataError(f"{path}: line {line}: not valid JSON ({str(exc).splitlines()[0][:80]})") from None
    except RecursionError:
        raise DataError(f"{path}: line {line}: nested too deeply") from None
    if not isinstance(obj, dict):
        what = {list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(type(obj), "a number")
        raise DataError(f"{path}: line {line}: expected a JSON object ({{\"column\": value, ...}}), got {what}")
    return obj


#: the longest cell text, as the csv module's field_size_limit for a CSV: a chunk's array of cells is
#: as wide as its longest cell, so one huge value would otherwise ask for (rows x columns x its length)
MAX_CELL_CHARS = 131_072


def cell_text(where: str, key: str, value, fill: str | None) -> str:
    """A JSON value as a cell's text, as a CSV would hold it: null -> `fill` (a missing token),
    true/false -> "true"/"false", a number as JSON writes it, a string as is; a nested value or
    text over MAX_CELL_CHARS is an error naming `where` (e.g. "file.jsonl: line 3") and the key."""
    text = _text(where, key, value, fill)
    if len(text) > MAX_CELL_CHARS:
        raise DataError(f"{where}, key '{key}': a value of {len(text):,} characters (at most {MAX_CELL_CHARS:,})")
    return text


def _text(where: str, key: str, value, fill: str | None) -> str:
    if value is None:
        if fill is None:
            raise DataError(f"{where}, key '{key}': null, but data.missing_values is empty")
        return fill
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return json.dumps(value)
    raise DataError(f"{where}, key '{key}': a nested value ({_kind(value)}); expected a string, "
                    f"a number, true/false or null")


def read_chunks(path: str, chunk_rows: int | None = None, missing: Sequence[str] = ("",)) -> Chunks:
    """Read a JSON-lines file in chunks of `chunk_rows` rows (None: one chunk), as
    nncli.data.csv.read_chunks reads a CSV; row i is line i + 1."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a .jsonl file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    fill = "" if "" in missing else (missing[0] if missing else None)
    try:
        first = fh.readline()
        if not first.strip() or first.strip() == b"\xef\xbb\xbf":
            rest = fh.read(1 << 16)
            if not rest.strip():
                raise DataError(f"{path}: the file is empty; expected one JSON object per line")
            raise DataError(f"{path}: line 1: blank; expected a JSON object")
        head = _object(path, first, 1)
        names = list(head)
        if not names:
            raise DataError(f"{path}: line 1: an empty object; its keys name the columns")
        if "" in head or any(not k.strip() for k in names):
            raise DataError(f"{path}: line 1: an empty key; its keys name the columns")
    except BaseException:
        fh.close()
        raise
    position = {k: i for i, k in enumerate(names)}
    width = len(names)

    def row(obj: dict, line: int) -> list[str]:
        cells = [fill] * width
        where = f"{path}: line {line}"
        for key, value in obj.items():
            i = position.get(key)
            if i is None:
                raise DataError(f"{path}: line {line}: key '{key}' is not one of line 1's keys "
                                f"({preview(names)}); every line needs the same keys")
            cells[i] = cell_text(where, key, value, fill)
        if fill is None and len(obj) < width:
            gone = next(k for k in names if k not in obj)
            raise DataError(f"{path}: line {line}, key '{gone}': absent, but data.missing_values is empty")
        return cells

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        with fh:
            buf = [row(head, 1)]
            start, line, blank_at = 1, 1, 0
            for raw in fh:
                line += 1
                if not raw.strip():
                    blank_at = blank_at or line
                    continue
                if blank_at:
                    raise DataError(f"{path}: line {blank_at}: blank line between objects; expected one JSON "
                                    f"object per line")
                if chunk_rows is not None and len(buf) >= chunk_rows:
                    yield start, np.array(buf, dtype=str).reshape(len(buf), width)
                    start, buf = line, []
                buf.append(row(_object(path, raw, line), line))
            if buf:
                yield start, np.array(buf, dtype=str).reshape(len(buf), width)

    return Chunks(names, width, chunks())
