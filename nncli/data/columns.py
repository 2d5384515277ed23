"""Typed columns of a CSV: infer, impute, encode.

Each input column of a CSV has a type (one small class per type, registered in COLUMN_TYPES):

    number    the value; a missing cell is imputed (mean, median, zero), drops the row or is an
              error; `indicator: true` adds a 0/1 "was missing" input
    category  one-hot over the values seen in training (sorted; rare ones grouped into <other>
              with min_count; a <missing> level when training had missing cells and the policy
              is own_category)
    binary    two values -> one 0/1 input (1 for the second value in sorted order)
    date      parsed (ISO or `format`) into numeric parts: year, month, day, weekday, ...
    ignore    dropped

A column not named in data.columns is inferred from the training rows (see `_Infer.resolve`).
Fitting reads the training file in chunks (data.csv.read_chunks) and keeps per column only
what it needs (sums, counts of distinct values up to a cap; a median keeps the column's
values), so the file may be larger than memory; `Columns.encode` turns a chunk of cells into
float32 inputs with what was fitted, the same at training, predict and evaluate time.

A cell is missing when its stripped text is one of the `missing_values` tokens
(MISSING_VALUES by default).
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from typing import Any, Callable, Sequence

import h5py
import numpy as np

from nncli.data.csv import (MISSING_VALUES, PREDICT_NO_HEADER_HINT, _is_number, _targets, finite_float64, generic_names,
                            model_columns, number_error, read_chunks)
from nncli.data.table import FLOAT32_MAX, Table, preview
from nncli.errors import DataError
from nncli.registry import Registry, did_you_mean
from nncli.schema import Invalid, Key, boolean, choice, integer, list_of, mapping, string, typed, typed_schema

MAX_CATEGORIES = 50
MISSING_LEVEL = "<missing>"
OTHER_LEVEL = "<other>"
DATE_PARTS = ("year", "month", "day", "weekday", "dayofyear", "hour", "minute", "second")
COUNT_CAP = 1_000_000      # distinct values counted for a category with min_count (memory bound)
INFER_CAP = 10_000         # distinct values counted while inferring a column's type

COLUMN_TYPES: Registry[type["Column"]] = Registry("column type", sort=False)


class Notes:
    """Unseen values met while encoding (per column: count, up to 3 examples), reported once
    per column after a whole file, and rows imputed for drop_row columns outside training."""

    def __init__(self):
        self.unknown: dict[str, list] = {}

    def add(self, column: str, values: np.ndarray) -> None:
        entry = self.unknown.setdefault(column, [0, []])
        entry[0] += len(values)
        for v in dict.fromkeys(np.asarray(values).tolist()):   # distinct, in order of appearance
            if len(entry[1]) >= 3:
                break
            if str(v) not in entry[1]:
                entry[1].append(str(v))

    def lines(self, path: str) -> list[str]:
        return [f"Warning: {path}: column '{c}': {n} value(s) not seen in training (e.g. "
                f"{', '.join(repr(v) for v in ex)}), read as missing" for c, (n, ex) in self.unknown.items()]


def _first_line(mask: np.ndarray, lines: np.ndarray) -> int:
    return int(lines[int(np.argmax(mask))])


def parse_numbers(path: str, name: str, cells: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """float64 values of stripped, non-missing cells; the first bad cell named with its line."""
    out = finite_float64(cells)
    if out is not None:
        return out
    for cell, line in zip(cells.tolist(), lines.tolist()):
        error = number_error(path, line, name, cell, " (a number column)")
        if error is not None:
            raise error
    raise DataError(f"{path}: column '{name}': cannot read numbers")  # pragma: no cover


class Column:
    """One input column: its settings, what fitting learned, and its encoding."""

    type = ""
    keys: dict[str, Key] = {}
    missing_policies: tuple[str, ...] = ()

    def __init__(self, name: str, settings: dict[str, Any] | None = None, inferred: bool = False):
        self.name, self.inferred = name, inferred
        self.settings = {k: key.default for k, key in self.keys.items()}
        self.settings.update(settings or {})
        self.n_missing = 0   # missing cells in the training rows

    @property
    def missing(self) -> str:
        return self.settings.get("missing", "")

    # fitting: observe() every chunk of training rows, then finish()
    def observe(self, path: str, cells: np.ndarray, missing: np.ndarray, lines: np.ndarray) -> None:
        self.n_missing += int(missing.sum())
        if self.missing == "error" and missing.any():
            self.missing_error(path, missing, lines)

    def finish(self, path: str, max_categories: int) -> None:
        pass

    def missing_error(self, path: str, missing: np.ndarray, lines: np.ndarray) -> None:
        raise DataError(f"{path}: line {_first_line(missing, lines)}, column '{self.name}': missing cell "
                        f"(missing: error; choose another missing policy in data.columns.{self.name})")

    # encoding
    @property
    def names(self) -> list[str]:
        return []

    @property
    def numeric(self) -> list[bool]:
        """Per encoded input: normalised (numbers, date parts) or not (one-hot, 0/1, indicators)."""
        return []

    @property
    def width(self) -> int:
        return len(self.names)

    def encode(self, path: str, cells: np.ndarray, missing: np.ndarray, lines: np.ndarray, notes: Notes
               ) -> np.ndarray:
        raise NotImplementedError

    def policy(self) -> str:
        return self.missing

    # the checkpoint: attributes and datasets of the column's group
    def store(self, group: h5py.Group) -> None:
        pass

    def restore(self, group: h5py.Group, read_strings: Callable, read_floats: Callable) -> None:
        pass


def register(cls):
    COLUMN_TYPES.add(cls.type, cls)
    return cls


class _Imputed(Column):
    """number and date: numeric inputs, a fill value per input, an optional indicator."""

    def __init__(self, name, settings=None, inferred=False):
        super().__init__(name, settings, inferred)
        self.sum: np.ndarray | None = None
        self.count = 0
        self.kept: list[np.ndarray] = []   # values, for a median
        self.fill: np.ndarray | None = None

    def values(self, path, cells, lines) -> np.ndarray:
        """(rows, parts) float64 values of non-missing stripped cells."""
        raise NotImplementedError

    @property
    def parts(self) -> list[str]:
        return [self.name]

    @property
    def names(self):
        return self.parts + ([f"{self.name}:missing"] if self.settings["indicator"] else [])

    @property
    def numeric(self):
        return [True] * len(self.parts) + [False] * bool(self.settings["indicator"])

    def observe(self, path, cells, missing, lines):
        super().observe(path, cells, missing, lines)
        v = self.values(path, cells[~missing], lines[~missing])
        self.add_values(v)

    def add_values(self, v: np.ndarray) -> None:
        s = v.sum(axis=0)
        self.sum = s if self.sum is None else self.sum + s
        self.count += len(v)
        if self.missing == "median":
            self.kept.append(v.astype(np.float64))

    def finish(self, path, max_categories):
        if self.count == 0:
            raise DataError(f"{path}: column '{self.name}': every cell of the training rows is missing; set "
                            f"data.columns: {{{self.name}: ignore}}")
        if self.missing == "zero":
            self.fill = np.zeros(len(self.parts))
        elif self.missing == "median":
            self.fill = np.median(np.concatenate(self.kept), axis=0).reshape(len(self.parts))
        else:  # mean, and what drop_row / error impute with outside the training rows
            self.fill = (self.sum / self.count).reshape(len(self.parts))
        self.kept = []

    def encode(self, path, cells, missing, lines, notes):
        if self.missing == "error" and missing.any():
            self.missing_error(path, missing, lines)
        out = np.empty((len(cells), self.width), np.float32)
        k = len(self.parts)
        out[:, :k] = self.fill
        out[~missing, :k] = self.values(path, cells[~missing], lines[~missing])
        if self.settings["indicator"]:
            out[:, k] = missing
        return out

    def policy(self):
        fill = ", ".join(f"{v:.6g}" for v in self.fill)
        what = {"drop_row": f"drop_row (elsewhere {fill})", "error": "error"}.get(self.missing,
                                                                                   f"{self.missing} {fill}")
        return what + (", indicator" if self.settings["indicator"] else "")

    def store(self, group):
        group.attrs["indicator"] = bool(self.settings["indicator"])
        group.create_dataset("fill", data=np.asarray(self.fill, np.float64))

    def restore(self, group, read_strings, read_floats):
        self.settings["indicator"] = bool(group.attrs["indicator"])
        self.fill = read_floats(group["fill"], len(self.parts))


@register
class Number(_Imputed):
    type = "number"
    keys = {"missing": Key(choice("mean", "median", "zero", "drop_row", "error"), "mean",
                           "a missing cell: the training mean, median, zero, drop the row (training only) or an error"),
            "indicator": Key(boolean(), False, "add a 0/1 input: the cell was missing")}

    def values(self, path, cells, lines):
        return parse_numbers(path, self.name, cells, lines).reshape(-1, 1)


@register
class Date(_Imputed):
    type = "date"
    keys = {"format": Key(string(), "iso", "strptime format such as '%Y-%m-%d', or iso (ISO 8601 dates and times)"),
            "parts": Key(list_of(choice(*DATE_PARTS), min_len=1), ["year", "month", "day"],
                         "the numeric inputs made from each date"),
            "missing": Key(choice("mean", "median", "zero", "drop_row", "error"), "mean",
                           "a missing cell: each part's training mean, median, zero, drop the row or an error"),
            "indicator": Key(boolean(), False, "add a 0/1 input: the cell was missing")}

    @property
    def parts(self):
        return [f"{self.name}:{p}" for p in self.settings["parts"]]

    def _parse(self, text: str) -> _dt.datetime:
        fmt = self.settings["format"]
        if fmt == "iso":
            d = _dt.datetime.fromisoformat(text)
        else:
            d = _dt.datetime.strptime(text, fmt)
        return d

    def values(self, path, cells, lines):
        uniq, inverse = np.unique(cells, return_inverse=True)
        rows = np.empty((len(uniq), len(self.settings["parts"])), np.float64)
        for i, text in enumerate(uniq.tolist()):
            try:
                d = self._parse(text)
            except ValueError:
                fmt = self.settings["format"]
                want = "an ISO date (YYYY-MM-DD, optionally with a time)" if fmt == "iso" else f"format {fmt!r}"
                line = _first_line(cells == text, lines)
                raise DataError(f"{path}: line {line}, column '{self.name}': date {text[:40]!r} does not parse "
                                f"as {want}") from None
            rows[i] = [_part(d, p) for p in self.settings["parts"]]
        return rows[inverse.reshape(-1)]

    def store(self, group):
        super().store(group)
        group.attrs["format"] = self.settings["format"]
        group.create_dataset("parts", data=np.array(self.settings["parts"], dtype=h5py.string_dtype("utf-8")))

    def restore(self, group, read_strings, read_floats):
        fmt = group.attrs["format"]
        self.settings["format"] = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
        parts = read_strings(group["parts"], len(DATE_PARTS))
        if not parts or any(p not in DATE_PARTS for p in parts):
            raise ValueError(f"{group.name}/parts holds {preview(parts)}, expected some of {', '.join(DATE_PARTS)}")
        self.settings["parts"] = parts
        super().restore(group, read_strings, read_floats)


def _part(d: _dt.datetime, part: str) -> float:
    if part == "weekday":
        return float(d.weekday())
    if part == "dayofyear":
        return float(d.timetuple().tm_yday)
    return float(getattr(d, part))


class _Levels(Column):
    """category and binary: a value -> level index lookup, the level missing cells take."""

    def __init__(self, name, settings=None, inferred=False):
        super().__init__(name, settings, inferred)
        self.counts: Counter = Counter()
        self.levels: list[str] = []
        self.other: list[str] = []        # training values grouped into <other>
        self.impute = -1                  # the level of a missing (or unknown) cell; -1: none (all zeros)
        self.n_real = 0                   # levels that are training values; <other>, <missing> follow

    def cap(self, max_categories: int) -> int:
        return max_categories + 1

    def observe(self, path, cells, missing, lines):
        super().observe(path, cells, missing, lines)
        uniq, n = np.unique(cells[~missing], return_counts=True)
        self.counts.update(dict(zip(uniq.tolist(), n.tolist())))
        if len(self.counts) > self._cap:
            raise DataError(self.too_many(path, f"more than {self._cap - 1}"))

    def too_many(self, path: str, count: str) -> str:
        return (f"{path}: column '{self.name}': {count} distinct values, more than data.max_categories "
                f"({self._max}); set data.columns: {{{self.name}: ignore}} or raise data.max_categories")

    def prepare(self, max_categories: int) -> None:
        self._max, self._cap = max_categories, self.cap(max_categories)

    def most_frequent(self) -> str:
        top = max(self.counts.values())
        return min(v for v, c in self.counts.items() if c == top)

    def lookup(self) -> dict[str, int]:
        """Training value -> level index (rare values -> <other>)."""
        index = {v: i for i, v in enumerate(self.levels[:self.n_real])}
        if self.other:
            o = self.levels.index(OTHER_LEVEL, self.n_real)
            index.update({v: o for v in self.other})
        return index

    def codes(self, path, cells, missing, lines, notes) -> np.ndarray:
        """Level index per row (-1: none); unknown values follow `unknown`, missing ones `missing`."""
        index = self._index
        uniq, inverse = np.unique(cells, return_inverse=True)
        u_codes = np.array([index.get(u, -2) for u in uniq.tolist()], dtype=np.int64)
        codes = u_codes[inverse.reshape(-1)]
        unknown = (codes == -2) & ~missing
        if unknown.any():
            if self.settings["unknown"] == "error":
                line = _first_line(unknown, lines)
                raise DataError(f"{path}: line {line}, column '{self.name}': value {cells[unknown][0][:40]!r} was "
                                f"not seen in training (unknown: error; known: {preview(self.levels)})")
            notes.add(self.name, cells[unknown])
        absent = missing | unknown
        if absent.any():
            if self.missing == "error":
                self.missing_error(path, absent, lines)
            codes[absent] = self.impute
        return codes

    @property
    def _index(self) -> dict[str, int]:
        if getattr(self, "_cached", None) is None:
            self._cached = self.lookup()
        return self._cached

    def store(self, group):
        group.attrs["unknown"] = self.settings["unknown"]
        group.attrs["impute"] = int(self.impute)
        group.attrs["n_real"] = int(self.n_real)
        group.create_dataset("levels", data=np.array(self.levels, dtype=h5py.string_dtype("utf-8")))
        group.create_dataset("other", data=np.array(self.other, dtype=h5py.string_dtype("utf-8")))

    def restore(self, group, read_strings, read_floats):
        unknown = group.attrs["unknown"]
        unknown = unknown.decode() if isinstance(unknown, bytes) else str(unknown)
        if unknown not in ("missing", "error"):
            raise ValueError(f"{group.name} unknown is {unknown!r}, expected missing or error")
        self.settings["unknown"] = unknown
        self.levels = read_strings(group["levels"], COUNT_CAP)
        self.other = read_strings(group["other"], COUNT_CAP)
        impute, n_real = int(group.attrs["impute"]), int(group.attrs["n_real"])
        specials = self.levels[n_real:] if 0 <= n_real <= len(self.levels) else None
        if not -1 <= impute < len(self.levels) or specials not in ([], [OTHER_LEVEL], [MISSING_LEVEL],
                                                                     [OTHER_LEVEL, MISSING_LEVEL]):
            raise ValueError(f"{group.name}: impute {impute} / n_real {n_real} do not fit its {len(self.levels)} levels")
        if len(set(self.levels)) != len(self.levels) or (self.type == "binary" and len(self.levels) != 2):
            raise ValueError(f"{group.name}/levels holds {len(self.levels)} levels with repeats or a wrong count")
        if bool(self.other) != (OTHER_LEVEL in specials):
            raise ValueError(f"{group.name}/other does not match its {OTHER_LEVEL} level")
        self.impute, self.n_real = impute, n_real


@register
class Category(_Levels):
    type = "category"
    keys = {"missing": Key(choice("own_category", "most_frequent", "drop_row", "error"), "own_category",
                           "a missing cell: its own level (<missing>), the most frequent level, drop the row "
                           "(training only) or an error"),
            "unknown": Key(choice("missing", "error"), "missing",
                           "a value not seen in training (predict, evaluate): read as missing (with a warning) "
                           "or an error"),
            "min_count": Key(integer(min=1), 1, "values seen fewer times in training are grouped into <other>")}

    def cap(self, max_categories):
        return COUNT_CAP if self.settings["min_count"] > 1 else max_categories + 1

    def finish(self, path, max_categories):
        if not self.counts:
            raise DataError(f"{path}: column '{self.name}': every cell of the training rows is missing; set "
                            f"data.columns: {{{self.name}: ignore}}")
        k = self.settings["min_count"]
        self.levels = sorted(v for v, c in self.counts.items() if c >= k)
        self.n_real = len(self.levels)
        self.other = sorted(v for v, c in self.counts.items() if c < k)
        if self.other:
            self.levels.append(OTHER_LEVEL)
        if len(self.levels) > max_categories:
            raise DataError(self.too_many(path, str(len(self.levels))))
        top = self.most_frequent()
        top_level = OTHER_LEVEL if top in self.other else top
        if self.missing == "own_category":
            if self.n_missing:
                self.levels.append(MISSING_LEVEL)
                self.impute = len(self.levels) - 1
            else:
                self.impute = -1   # no <missing> level: a missing cell outside training has no level (all zeros)
        else:
            self.impute = self.levels.index(top_level)
        self.counts = Counter()

    @property
    def names(self):
        return [f"{self.name}={v}" for v in self.levels]

    @property
    def numeric(self):
        return [False] * len(self.levels)

    def encode(self, path, cells, missing, lines, notes):
        codes = self.codes(path, cells, missing, lines, notes)
        out = np.zeros((len(cells), len(self.levels)), np.float32)
        rows = np.flatnonzero(codes >= 0)
        out[rows, codes[rows]] = 1.0
        return out

    def policy(self):
        if self.missing == "own_category":
            what = f"own_category{' (' + MISSING_LEVEL + ')' if MISSING_LEVEL in self.levels[self.n_real:] else ' (none in training)'}"
        elif self.missing == "error":
            what = "error"
        else:
            what = f"{self.missing} ({self.levels[self.impute]})"
        other = f", {len(self.other)} rare values in {OTHER_LEVEL}" if self.other else ""
        return f"{what}{other}, unknown: {self.settings['unknown']}"

    def store(self, group):
        super().store(group)
        group.attrs["min_count"] = int(self.settings["min_count"])

    def restore(self, group, read_strings, read_floats):
        super().restore(group, read_strings, read_floats)
        self.settings["min_count"] = int(group.attrs["min_count"])


@register
class Binary(_Levels):
    type = "binary"
    keys = {"missing": Key(choice("most_frequent", "drop_row", "error"), "most_frequent",
                           "a missing cell: the most frequent value, drop the row (training only) or an error"),
            "unknown": Key(choice("missing", "error"), "missing",
                           "a third value (predict, evaluate): read as missing (with a warning) or an error")}

    def cap(self, max_categories):
        return 2

    def too_many(self, path, count):
        return (f"{path}: column '{self.name}' (binary) has more than two values ({preview(sorted(self.counts), 3)}); "
                f"make it a category")

    def finish(self, path, max_categories):
        if len(self.counts) != 2:
            raise DataError(f"{path}: column '{self.name}' (binary) has {len(self.counts)} distinct value(s) in the "
                            f"training rows, expected two")
        self.levels = sorted(self.counts)
        self.n_real = 2
        self.impute = self.levels.index(self.most_frequent())
        self.counts = Counter()

    @property
    def names(self):
        return [f"{self.name}={self.levels[1]}"]

    @property
    def numeric(self):
        return [False]

    def encode(self, path, cells, missing, lines, notes):
        codes = self.codes(path, cells, missing, lines, notes)
        return (codes == 1).astype(np.float32).reshape(-1, 1)

    def policy(self):
        what = "error" if self.missing == "error" else f"{self.missing} ({self.levels[self.impute]})"
        return f"0 = {self.levels[0]}, 1 = {self.levels[1]}; missing: {what}, unknown: {self.settings['unknown']}"


@register
class Ignore(Column):
    type = "ignore"
    keys = {}


class _Infer:
    """What inferring an unspecified column needs from the training rows: whether every
    non-missing cell is a number (with the sums a mean needs), and the distinct values with
    their counts (up to INFER_CAP, or max_categories + 1 once the column is not numeric)."""

    def __init__(self, name: str, max_categories: int):
        self.name, self.max = name, max_categories
        self.numeric, self.sum, self.count = True, 0.0, 0
        self.counts: Counter | None = Counter()
        self.n_missing = self.n_values = 0
        self.bad: tuple[int, str] | None = None   # a cell that parses as a number but not as a float32 one
        self.cap = min(max(max_categories + 1, 10 * max_categories, 1000), INFER_CAP)
        self.all_distinct = True                  # (when counting stopped)
        self.text: tuple[int, str] | None = None  # the first cell that is not a number

    def observe(self, path, cells, missing, lines):
        self.n_missing += int(missing.sum())
        vals = cells[~missing]
        self.n_values += len(vals)
        if self.numeric:
            try:
                v = vals.astype(np.float64)
            except ValueError:
                self.numeric = False
                for cell, line in zip(vals.tolist(), lines[~missing].tolist()):
                    if not _is_number(cell):
                        self.text = (line, cell)
                        break
            else:
                bad = ~np.isfinite(v) | (np.abs(v) > FLOAT32_MAX)
                if bad.any() and self.bad is None:
                    self.bad = (_first_line(bad, lines[~missing]), str(vals[bad][0]))
                self.sum += float(v[~bad].sum())
                self.count += len(v)
        if self.counts is not None:
            uniq, n = np.unique(vals, return_counts=True)
            self.counts.update(dict(zip(uniq.tolist(), n.tolist())))
            if len(self.counts) > self.cap:
                self.all_distinct = sum(self.counts.values()) == len(self.counts)
                self.counts = None

    def resolve(self, path: str) -> Column:
        if self.numeric:
            col = Number(self.name, inferred=True)
            if self.bad is not None:
                line, cell = self.bad
                parse_numbers(path, self.name, np.array([cell]), np.array([line]))
            col.n_missing, col.sum, col.count = self.n_missing, np.array([self.sum]), self.count
            col.finish(path, self.max)
            return col
        fix = f"set data.columns: {{{self.name}: ignore}} to drop it, or give its type"
        numbers = self.count + (sum(1 for v in self.counts if _is_number(v)) if self.counts is not None else 0)
        if numbers:  # numbers and text in one column: a typo, or a code column? refused, not guessed
            line, cell = self.text
            raise DataError(f"{path}: line {line}, column '{self.name}': expected a number, got {cell[:40]!r} (the "
                            f"column holds numbers and text; if it is text, set data.columns: "
                            f"{{{self.name}: category}}, if {cell[:40]!r} means missing, add it to data.missing_values)")
        if self.counts is None:
            idlike = " (all distinct: an ID?)" if self.all_distinct else ""
            raise DataError(f"{path}: column '{self.name}': text with more than {self.cap} distinct values{idlike}, "
                            f"more than data.max_categories ({self.max}); {fix} (or raise data.max_categories)")
        k = len(self.counts)
        if k == 2 and self.n_missing == 0:
            col: _Levels = Binary(self.name, inferred=True)
        elif k > self.max:
            idlike = " (all distinct: an ID?)" if k == self.n_values else ""
            raise DataError(f"{path}: column '{self.name}': text with {k} distinct values{idlike}, more than "
                            f"data.max_categories ({self.max}); {fix} (or raise data.max_categories)")
        elif k >= 3 and k == self.n_values:
            raise DataError(f"{path}: column '{self.name}': every one of its {k} values is distinct (an ID?); {fix} "
                            f"(columns: {{{self.name}: category}})")
        else:
            col = Category(self.name, inferred=True)
        col.n_missing, col.counts = self.n_missing, self.counts
        col.prepare(self.max)
        col.finish(path, self.max)
        return col


def validate_columns(value: Any, path: str) -> dict[str, dict[str, Any]]:
    """data.columns: {name: type word or {type, ...}} -> {name: {type, settings}}."""
    if not isinstance(value, dict):
        raise Invalid(path, f"expected a mapping of column names to types, got {type(value).__name__}")
    out = {}
    for name, item in value.items():
        sub = f"{path}.{name}"
        kind, rest = typed(item, sub, COLUMN_TYPES.names(), "column type")
        out[str(name)] = {"type": kind, **mapping(rest, sub, COLUMN_TYPES.get(kind).keys, f"{kind} column mapping")}
    return out


def _columns_schema() -> dict:
    return {"type": "object", "additionalProperties": typed_schema(
        {n: COLUMN_TYPES.get(n).keys for n in COLUMN_TYPES.names()}, "column type")}


validate_columns.json_schema = _columns_schema  # type: ignore[attr-defined]


class Columns:
    """The typed input columns of a model, in input order, with what training fitted."""

    def __init__(self, columns: list[Column], missing_values: Sequence[str] = MISSING_VALUES):
        self.columns = [c for c in columns if c.type != "ignore"]
        self.missing_values = tuple(missing_values)
        self._tokens = np.array(self.missing_values, dtype=str) if self.missing_values else None

    @property
    def raw_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def names(self) -> list[str]:
        return [n for c in self.columns for n in c.names]

    @property
    def numeric(self) -> np.ndarray:
        return np.array([v for c in self.columns for v in c.numeric], dtype=bool)

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    def plain(self) -> bool:
        """Every column a number without indicator, no missing cell in training: the inputs are
        the cells' values, as an untyped CSV gives them (see also any_missing)."""
        return all(c.type == "number" and not c.settings["indicator"] and c.n_missing == 0 for c in self.columns)

    any_missing = False   # set by training's encoding pass: a missing cell in any kept row

    def missing_mask(self, cells: np.ndarray) -> np.ndarray:
        if self._tokens is None:
            return np.zeros(cells.shape, dtype=bool)
        return np.isin(cells, self._tokens)

    def encode(self, path: str, cells: np.ndarray, lines: np.ndarray, notes: Notes) -> np.ndarray:
        """float32 inputs (rows, width) from stripped cells (rows, one per raw column in order)."""
        missing = self.missing_mask(cells)
        self.any_missing = self.any_missing or bool(missing.any())
        out = np.empty((len(cells), self.width), np.float32)
        at = 0
        for j, col in enumerate(self.columns):
            out[:, at:at + col.width] = col.encode(path, cells[:, j], missing[:, j], lines, notes)
            at += col.width
        return out

    def lines(self) -> list[str]:
        """One compact line per column: name, type, encoding width, missing count and policy."""
        out = []
        for c in self.columns:
            how = " (inferred)" if c.inferred else ""
            out.append(f"column {c.name}: {c.type}{how}, {c.width} input{'s' * (c.width != 1)}, "
                       f"{c.n_missing} missing; {c.policy()}")
        return out

    # --- the checkpoint's /columns group ---

    def store(self, group: h5py.Group) -> None:
        group.create_dataset("missing_values", data=np.array(self.missing_values, dtype=h5py.string_dtype("utf-8")))
        for i, c in enumerate(self.columns):
            g = group.create_group(str(i))
            g.attrs.update({"name": c.name, "type": c.type, "missing": c.missing, "inferred": bool(c.inferred),
                            "n_missing": int(c.n_missing)})
            c.store(g)

    @classmethod
    def load(cls, group: h5py.Group, read_strings: Callable, read_floats: Callable, max_columns: int) -> "Columns":
        """Read /columns (read_strings(ds, max_len), read_floats(ds, length) check sizes before reading)."""
        tokens = read_strings(group["missing_values"], 10_000)
        n = len(group) - 1
        if not 1 <= n <= max_columns or set(group) != {"missing_values", *map(str, range(n))}:
            raise ValueError(f"/columns holds {n} columns (groups 0 .. {n - 1} expected, at most {max_columns})")
        cols = []
        for i in range(n):
            g = group[str(i)]
            text = {k: (v.decode() if isinstance(v := g.attrs[k], bytes) else str(v)) for k in ("name", "type", "missing")}
            kind = text["type"]
            if kind not in COLUMN_TYPES or kind == "ignore":
                raise ValueError(f"{g.name} type is {kind!r}, expected one of number, category, binary, date")
            klass = COLUMN_TYPES.get(kind)
            if "missing" in klass.keys:
                try:
                    klass.keys["missing"].validator(text["missing"], f"{g.name} missing")
                except Invalid as exc:
                    raise ValueError(str(exc)) from None
            col = klass(text["name"], {"missing": text["missing"]} if "missing" in klass.keys else {},
                        bool(g.attrs["inferred"]))
            col.n_missing = int(g.attrs["n_missing"])
            col.restore(g, read_strings, read_floats)
            cols.append(col)
        names = [c.name for c in cols]
        if len(set(names)) != len(names):
            raise ValueError("/columns names a column twice")
        return cls(cols, tokens)


# --- fitting on the training rows of a CSV ---

def resolve_specs(path: str, names: Sequence[str], x_names: Sequence[str], y_name: str,
                  columns: dict[str, dict[str, Any]], config_error: Callable[[str, str], Exception]
                  ) -> list[tuple[str, dict[str, Any] | None]]:
    """The input columns in order, each with its data.columns entry (None: inferred). A columns
    entry for a column the file lacks, or for the target, is a config error."""
    present = set(names)
    for name in columns:
        if name not in present:
            raise config_error(f"data.columns.{name}", f"{path} has no column '{name}'"
                                                       f"{did_you_mean(name, list(names))}; columns: {preview(names)}")
        if name == y_name:
            raise config_error(f"data.columns.{name}", f"'{name}' is the target (data.y); the loss decides how "
                                                       f"targets are encoded")
    return [(n, columns.get(n)) for n in x_names if (columns.get(n) or {}).get("type") != "ignore"]


def new_column(name: str, entry: dict[str, Any], max_categories: int) -> Column:
    col = COLUMN_TYPES.get(entry["type"])(name, {k: v for k, v in entry.items() if k != "type"})
    if isinstance(col, _Levels):
        col.prepare(max_categories)
    return col


def fit(path: str, specs: list[tuple[str, dict[str, Any] | None]], chunks, rows: np.ndarray | None,
        max_categories: int, missing_values: Sequence[str]) -> Columns:
    """Fit the columns on the chunks' rows (cells of the spec columns in order, stripped) where
    `rows` (a mask over every row of the chunks; None: all rows) holds."""
    observers: list[Any] = [new_column(n, e, max_categories) if e else _Infer(n, max_categories) for n, e in specs]
    tokens = np.array(tuple(missing_values), dtype=str) if missing_values else None
    for start, lines, cells in chunks:
        if rows is not None:
            keep = rows[start:start + len(cells)]
            cells, lines = cells[keep], lines[keep]
        if not len(cells):
            continue
        missing = np.isin(cells, tokens) if tokens is not None else np.zeros(cells.shape, bool)
        for j, obs in enumerate(observers):
            obs.observe(path, cells[:, j], missing[:, j], lines)
    cols = []
    for obs in observers:
        if isinstance(obs, _Infer):
            cols.append(obs.resolve(path))
        else:
            obs.finish(path, max_categories)
            cols.append(obs)
    return Columns(cols, missing_values)


# --- reading a CSV's columns in chunks ---

CHUNK_ROWS = 65_536


def stripped(cells: np.ndarray) -> np.ndarray:
    return np.strings.strip(cells) if hasattr(np, "strings") else np.char.strip(cells)


def compact(cells: np.ndarray) -> np.ndarray:
    """A copy of a string array in the narrowest dtype that holds its longest string."""
    longest = int(np.char.str_len(cells).max()) if cells.size else 1
    return cells.astype(f"<U{max(1, longest)}")


def row_chunks(chunks, idx: Sequence[int]):
    """(index of the chunk's first row, line numbers, stripped cells of the columns `idx`) per chunk."""
    start = 0
    for first, cells in chunks:
        n = len(cells)
        yield start, np.arange(first, first + n), stripped(cells[:, list(idx)])
        start += n


def _names_first_row(path: str, expect: Sequence[str], delimiter: str, missing: Sequence[str]) -> bool:
    """Whether the first row of `path`, in order, starts with the names `expect`."""
    peek = read_chunks(path, 1, False, PREDICT_NO_HEADER_HINT, len(expect), delimiter, missing).chunks
    try:
        first = next(peek, None)
    finally:
        peek.close()
    return first is not None and [c.strip() for c in first[1][0][:len(expect)].tolist()] == list(expect)


def encode_file(cols: Columns, path: str, y_name: str | None, with_targets: bool, header: bool | str = True,
                by_position: bool = False, chunk_rows: int | None = CHUNK_ROWS, notes: Notes | None = None,
                delimiter: str = "auto"):
    """A CSV's rows encoded with fitted columns, matched by name (or in order, by_position), in
    chunks: (line numbers, float32 inputs, stripped target cells or None). Checks the header first.
    Missing cells are the training's tokens (cols.missing_values)."""
    expect = cols.raw_names
    # --by-position: a first row is a header only when it names the model's inputs (a typed column's
    # words would make the numeric rule of read_chunks take a data row for a header)
    mode = _names_first_row(path, expect, delimiter, cols.missing_values) if by_position else bool(header)
    names, width, chunks = read_chunks(path, chunk_rows, mode, PREDICT_NO_HEADER_HINT, len(expect), delimiter,
                                       cols.missing_values)
    if names is None and not by_position:
        names = generic_names(width)
    idx, y_idx, _ = model_columns(path, names, width, expect, y_name, with_targets, by_position)
    take = list(idx) + ([y_idx] if with_targets else [])
    notes = notes if notes is not None else Notes()

    def gen():
        for _, lines, cells in row_chunks(chunks, take):
            x = cols.encode(path, cells[:, :len(idx)], lines, notes)
            yield lines, x, (cells[:, -1] if with_targets else None)
    return gen()


def read_file(cols: Columns, path: str, y_name: str | None, with_targets: bool = True, header: bool | str = True,
              by_position: bool = False, delimiter: str = "auto") -> tuple[Table, tuple[str, ...]]:
    """A CSV encoded with fitted columns, read whole (chunk by chunk): the Table (inputs not yet
    normalised; with_targets: the targets as data.csv reads them) and the warning lines."""
    notes = Notes()
    xs, ys, first = [], [], None
    for lines, x, y in encode_file(cols, path, y_name, with_targets, header, by_position, notes=notes,
                                   delimiter=delimiter):
        xs.append(x)
        first = int(lines[0]) if first is None else first
        if y is not None:
            ys.append(y)
    x = np.concatenate(xs)
    y = _targets(path, np.concatenate(ys), y_name, row_offset=first, missing=cols.missing_values) \
        if with_targets else None
    return Table(x, y, path, cols.names, y_name), tuple(notes.lines(path))
