"""Reading CSV files: one chunked reader.

A CSV is read by :func:`read_chunks` in chunks of rows (bounded memory: a big file's
predictions); reading a whole file is the same reader with one chunk (:func:`read_rows`).
Before any row is parsed, one pass of bounded memory checks that the file is UTF-8 text
without NUL bytes, so such a problem anywhere in the file is named before a problem with
its rows.

Dialects: the delimiter is one of DELIMITERS, given (data.delimiter, --delimiter) or "auto":
a .tsv file is tab-separated, any other file is sniffed from its first lines
(:func:`resolve_delimiter`; two candidates that both fit are refused, never guessed).
Quoted fields (embedded delimiters, quotes doubled, line breaks) and a UTF-8 BOM are read as
Python's csv module reads them. A JSON-lines file (.jsonl) goes through the same interface
(nncli.data.jsonl): every caller gets the same Chunks of string cells.

Missing cells: a cell whose stripped text is one of the missing tokens (data.missing_values,
default MISSING_VALUES) is missing; :func:`is_missing` gives the mask of a chunk's cells.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import operator
from typing import Iterator, Sequence

import numpy as np

from nncli.data import fastcsv, jsonl
from nncli.data.table import FLOAT32_MAX, Chunks, Table, preview
from nncli.errors import DataError

# The first row of a CSV names the columns. A first row whose cells are all numbers is
# data, not a header: training refuses it (unless data.header is false: no header row, the
# columns are col1 .. colN), and so does prediction unless the columns are taken by position.
# A trained model reads its input columns by name: every input name must be in the header,
# other columns (the target, an id) are ignored. `--by-position` (predict, evaluate) takes the
# columns in order instead. Header checks use dicts and sets: linear in the number of columns.

NO_HEADER_HINT = "add a header row of column names, or set data.header: false in the config"
PREDICT_NO_HEADER_HINT = "add a header row with the model's input names, or pass --by-position"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def generic_names(width: int) -> list[str]:
    """Column names of a CSV without a header row."""
    return [f"col{i + 1}" for i in range(width)]


def parse_header(path: str, row: list[str], hint: str) -> list[str]:
    """The column names in a CSV's first row, checked: none empty, no duplicates, not all numbers."""
    header = [h.strip() for h in row]
    if header and all(header) and all(_is_number(h) for h in header):
        raise DataError(f"{path}: line 1 is all numbers ({preview(header, 4)}), not a header row of "
                        f"column names; {hint}")
    if not all(header):
        raise DataError(f"{path}: line 1: empty column name in the header (column {header.index('') + 1})")
    if len(set(header)) != len(header):
        seen: set[str] = set()
        dupes = {h for h in header if h in seen or seen.add(h)}
        raise DataError(f"{path}: line 1: duplicate column name '{min(dupes)}' in the header")
    return header


def header_in_position_mode(row: list[str], n_inputs: int) -> bool:
    """With --by-position: is this first row a header (skipped)? Yes when one of its input
    cells is not a number; a first row of numbers is data."""
    return not all(_is_number(c) for c in row[:n_inputs])


SCAN_BYTES = 1 << 20
_BOM = codecs.BOM_UTF8


def _check_text(path: str) -> None:
    """The file decodes as UTF-8 (a leading BOM skipped, as encoding utf-8-sig does) and holds no
    NUL byte; one pass over the bytes in blocks of SCAN_BYTES. A bad byte is named by its offset
    after the BOM, as decoding the whole file at once names it."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    nul = False
    with fh:
        try:
            head = fh.read(3)
            if len(head) < 3 and _BOM.startswith(head):  # utf-8-sig reads these as no text at all
                return
            skip = 3 if head == _BOM else 0
            pending, base = head[skip:], skip  # undecoded bytes, and the file offset of the first
            while True:
                block = fh.read(SCAN_BYTES)
                buf = pending + block
                try:
                    _, used = codecs.utf_8_decode(buf, "strict", not block)
                except UnicodeDecodeError as exc:
                    raise DataError(f"{path}: not UTF-8 text (bad byte at offset {base + exc.start - skip})") from None
                nul = nul or b"\x00" in buf[:used]
                if not block:
                    break
                pending, base = buf[used:], base + used
        except OSError as exc:
            raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    if nul:
        raise DataError(f"{path}: contains NUL bytes; expected a CSV text file")


# --- dialects and missing cells -------------------------------------------------------------

DELIMITERS = (",", ";", "\t", "|")
MISSING_VALUES = ("", "NA", "N/A", "NaN", "nan", "null", "None", "?")
SNIFF_BYTES = 64 << 10   # the start of the file the delimiter is sniffed from
SNIFF_ROWS = 50          # at most this many rows of it


def show_delimiter(d: str) -> str:
    return "tab" if d == "\t" else repr(d)


def is_missing(cells: np.ndarray, tokens: Sequence[str] = MISSING_VALUES) -> np.ndarray:
    """A boolean mask, shaped as `cells` (an array of strings, e.g. a chunk of read_chunks):
    True where a cell's stripped text is one of the missing `tokens` (data.missing_values)."""
    cells = np.asarray(cells, dtype=str)
    if not len(tokens) or cells.size == 0:
        return np.zeros(cells.shape, dtype=bool)
    return np.isin(np.char.strip(cells), np.asarray(list(tokens), dtype=str))


def _split_widths(sample: str, delimiter: str, whole: bool) -> list[int]:
    """Fields per row of the sample (blank rows left out; a last row cut by the sample's end too)."""
    try:
        rows = list(itertools.islice(csv.reader(io.StringIO(sample), delimiter=delimiter), SNIFF_ROWS + 1))
    except csv.Error:
        return []
    if not whole and len(rows) > 1 and len(rows) <= SNIFF_ROWS:
        rows = rows[:-1]
    return [len(r) for r in rows[:SNIFF_ROWS] if not _blank(r)]


def sniff_delimiter(path: str, sample: str, whole: bool) -> str:
    """The delimiter of a CSV from its first lines (`sample`; `whole`: it is the whole file).

    A candidate fits when every sampled row splits into the same number (> 1) of fields. One fit:
    that one. Several: refused (DataError naming them). None fits: the one candidate that splits
    the first row at all (the reader then names the row that differs), else ',' (one column)."""
    widths = {d: _split_widths(sample, d, whole) for d in DELIMITERS}
    fits = [d for d, w in widths.items() if w and w[0] > 1 and len(set(w)) == 1]
    if not fits:
        fits = [d for d, w in widths.items() if w and w[0] > 1]
    if len(fits) == 1:
        return fits[0]
    if len(fits) > 1:
        options = " and ".join(f"{show_delimiter(d)} ({widths[d][0]} columns)" for d in fits)
        raise DataError(f"{path}: cannot tell the delimiter from the first lines: they split evenly on "
                        f"{options}; set data.delimiter (predict/evaluate: --delimiter)")
    return ","


def resolve_delimiter(path: str, delimiter: str = "auto") -> str:
    """The delimiter to read `path` with: the one given, tab for a .tsv file, else sniffed."""
    if delimiter != "auto":
        return delimiter
    if str(path).lower().endswith(".tsv"):
        return "\t"
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            sample = fh.read(SNIFF_BYTES)
            whole = fh.read(1) == ""
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    return sniff_delimiter(path, sample, whole)


def _parsed(path: str, fh, delimiter: str = ",", lines_before: int = 0) -> Iterator[list[str]]:
    """The rows of an open CSV file (\\r-only line ends too), problems as DataErrors; the file's
    first `lines_before` lines were read elsewhere."""
    reader = csv.reader(fh, strict=True, delimiter=delimiter)
    try:
        yield from reader
    except UnicodeDecodeError:  # the file changed since _check_text
        raise DataError(f"{path}: not UTF-8 text (a bad byte after line {lines_before + reader.line_num})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _lines(path: str, fh, count: int, line: int) -> list[str]:
    """The next `count` physical lines of an open text file (fewer at its end), from row `line`."""
    try:
        return list(itertools.islice(fh, count))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (a bad byte after line {line - 1})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _blank(row: list[str]) -> bool:
    return not "".join(row).strip()  # every cell whitespace (one C-level join: the reader's hot path)


def read_chunks(path: str, chunk_rows: int | None = None, header: bool | str = True, hint: str = NO_HEADER_HINT,
                n_inputs: int = 0, delimiter: str = "auto", missing: Sequence[str] = MISSING_VALUES,
                raw: bool = False) -> Chunks:
    """Read a CSV in chunks of `chunk_rows` rows (None: the whole file as one chunk).

    header: True (the first row names the columns), False (no header row: names are None),
    or "position" (a header row is skipped when there is one, see header_in_position_mode).
    The header is read and checked here; the rows when the chunks are iterated. Line numbers
    count rows: data row i is line i + 2 (i + 1 without a header). Blank rows at the end are
    ignored; a blank row before data is a row like any other (of its own width).
    delimiter: "auto" (see resolve_delimiter) or one character. A .jsonl file is read by
    nncli.data.jsonl (names from its keys; `missing`: what a null or absent key reads as).
    raw: each chunk is the list of its rows (lists of cells, widths checked) rather than an
    array of strings (for rows_to_float, which parses numbers without that array); or, for a file
    with a header row read in chunks, a float64 array of every column when fastcsv parsed the
    chunk (only plain numbers, so only when no missing token reads as a number)."""
    if jsonl.is_jsonl(path):
        read = jsonl.read_chunks(path, chunk_rows, missing)
        if not raw:
            return read
        return Chunks(read.names, read.width, ((first, cells.tolist()) for first, cells in read.chunks))
    _check_text(path)
    delimiter = resolve_delimiter(path, delimiter)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    rows = _parsed(path, fh, delimiter)
    try:
        first_row = next(rows, None)
        ahead: list[list[str]] = []  # after a blank first row: the rows up to the first non-blank one
        if first_row is not None and _blank(first_row):
            for row in rows:
                ahead.append(row)
                if not _blank(row):
                    break
            else:
                first_row = None  # only blank rows
        if first_row is None:
            raise DataError(f"{path}: the file is empty; expected a header row and data rows")
        if len(first_row) == 1 and header:  # e.g. a ';' file read with delimiter ',': say so, not "no column 'y'"
            other = [d for d in DELIMITERS if d != delimiter and len(next(csv.reader([first_row[0]], delimiter=d))) > 1]
            if other:
                raise DataError(f"{path}: line 1 is one column when split on {show_delimiter(delimiter)}, but it "
                                f"splits on {show_delimiter(other[0])}; set data.delimiter (predict/evaluate: "
                                f"--delimiter) to {show_delimiter(other[0])}, or auto")
        if header == "position":  # a header row's names are not used, so not checked
            header = header_in_position_mode(first_row, n_inputs)
            names = [h.strip() for h in first_row] if header else None
        elif header:
            names = parse_header(path, first_row, hint)
        else:
            names = None
    except BaseException:
        fh.close()
        raise
    body = itertools.chain(ahead, rows) if header else itertools.chain([first_row], ahead, rows)
    width = len(first_row)
    width_of = "the header" if header else "line 1"
    first = 2 if header else 1

    # Big numeric files skip the csv module: blocks of plain numbers are parsed by fastcsv until
    # the first block it does not take; that block and the rest go the csv module's way.
    plain = (raw and names is not None and not ahead and chunk_rows is not None
             and not _number_tokens(missing))

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        with fh:
            start = line = first
            rows_left = body
            while plain:
                lines = _lines(path, fh, chunk_rows, line)
                block = fastcsv.parse_block("".join(lines), delimiter, width, len(lines)) if lines else None
                if block is None:
                    rows_left = _parsed(path, itertools.chain(lines, fh), delimiter, line - 1)
                    break
                yield start, block
                start = line = line + len(lines)
            buf: list[list[str]] = []
            blanks: list[list[str]] = []  # blank rows: data if a row follows, else the ignored end
            for row in rows_left:
                if _blank(row):
                    blanks.append(row)
                    continue
                blanks.append(row)
                for r in blanks:
                    if len(r) != width:
                        raise DataError(f"{path}: line {line}: expected {width} columns as in {width_of}, "
                                        f"got {len(r)}")
                    buf.append(r)
                    line += 1
                    if chunk_rows is not None and len(buf) >= chunk_rows:
                        yield start, buf if raw else np.array(buf, dtype=str)
                        start, buf = line, []
                blanks = []
            if buf:
                yield start, buf if raw else np.array(buf, dtype=str)
            if line == first:
                raise DataError(f"{path}: no data rows after the header")

    return Chunks(names, width, chunks())


def read_rows(path: str, header: bool | str = True, hint: str = NO_HEADER_HINT, n_inputs: int = 0,
              delimiter: str = "auto", missing: Sequence[str] = MISSING_VALUES
              ) -> tuple[list[str] | None, np.ndarray, int]:
    """(column names, the cells of every data row, line number of the first data row): the whole
    file, as the one chunk of read_chunks."""
    names, _, chunks = read_chunks(path, None, header, hint, n_inputs, delimiter, missing)
    (first, cells), = list(chunks)
    return names, cells, first


def finite_float64(cells) -> np.ndarray | None:
    """The cells as float64 (float()'s parse, which skips surrounding whitespace itself) when every
    one is a finite number float32 can hold; else None (then number_error names the first bad one)."""
    try:
        out = np.asarray(cells).astype(np.float64)
    except ValueError:
        return None
    return out if np.isfinite(out).all() and (np.abs(out) <= FLOAT32_MAX).all() else None


def number_error(path: str, line: int, name: str, cell: str, note: str = "") -> DataError | None:
    """The one-line error for a cell that is not a finite float32 number (None when it is one);
    `note` follows "expected a number, got ..."."""
    text = cell.strip()
    try:
        v = float(text)
    except ValueError:
        return DataError(f"{path}: line {line}, column '{name}': expected a number, got {text[:40]!r}{note}")
    if not np.isfinite(v):
        return DataError(f"{path}: line {line}, column '{name}': non-finite value {text!r}")
    if abs(v) > FLOAT32_MAX:
        return DataError(f"{path}: line {line}, column '{name}': {text[:40]!r} is too large for float32")
    return None


def _number_tokens(missing: Sequence[str]) -> list[str]:
    """The missing tokens that read as finite numbers (e.g. -999: a number to float(), missing to
    the user). NaN tokens need no check: a non-finite cell goes to the error path anyway."""
    out = []
    for t in missing:
        try:
            if np.isfinite(float(t)):
                out.append(t)
        except ValueError:
            pass
    return out


def to_float(path: str, cells: np.ndarray, names: Sequence[str], row_offset: int = 2,
             missing: Sequence[str] = MISSING_VALUES) -> np.ndarray:
    """Convert a (rows, cols) array of strings to float32, naming the first bad cell (a missing
    one, see is_missing, as missing: the columns read here are numbers without imputation)."""
    out = finite_float64(cells)
    numeric = _number_tokens(missing)
    if out is not None and not (numeric and np.isin(np.char.strip(np.asarray(cells, dtype=str)), numeric).any()):
        return out.astype(np.float32)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            if cell.strip() in missing:
                raise DataError(f"{path}: line {r + row_offset}, column '{names[c]}': missing value "
                                f"{cell.strip()[:40]!r} (one of data.missing_values) in a number column; fill it "
                                f"in or drop the row")
            error = number_error(path, r + row_offset, names[c], cell)
            if error is not None:
                raise error
    raise DataError(f"{path}: cannot read numbers")  # pragma: no cover


def rows_to_float(path: str, rows: list[list[str]] | np.ndarray, idx: Sequence[int], names: Sequence[str], row_offset: int = 2,
                  missing: Sequence[str] = MISSING_VALUES) -> np.ndarray:
    """The columns `idx` of a raw chunk of read_chunks (lists of cells) as float32: numpy parses the
    cells straight from the row lists (float()'s parse, as to_float's; about 2.6x faster than an
    array of strings first). Anything that is not a finite float32 number goes through to_float,
    which words the error for the first bad cell exactly as for any other read. A chunk that
    fastcsv parsed (a float64 array of plain numbers, finite and within float32) is only sliced."""
    if isinstance(rows, np.ndarray):
        return rows[:, list(idx)].astype(np.float32)
    if _number_tokens(missing):  # to_float checks the cells for those tokens
        return to_float(path, np.array(rows, dtype=str)[:, list(idx)], names, row_offset, missing)
    width = len(rows[0]) if rows else 0
    pick = None if list(idx) == list(range(width)) else operator.itemgetter(*idx) if len(idx) > 1 else (
        lambda r, i=idx[0]: (r[i],))
    try:
        out = np.array(rows if pick is None else [pick(r) for r in rows], dtype=np.float64)
    except (ValueError, TypeError):
        out = None
    if out is not None and out.shape == (len(rows), len(idx)) and finite_float64(out) is not None:
        return out.astype(np.float32)
    return to_float(path, np.array(rows, dtype=str)[:, list(idx)], names, row_offset, missing)


def training_columns(path: str, names: Sequence[str], x_cols: Sequence[str] | str | None, y_col: str | None
                     ) -> tuple[list[str], str, list[int], int]:
    """The columns a training config reads (data.x, data.y): (input names, target name, input
    indices, target index). The target defaults to the last column, the inputs to every other."""
    position = {h: i for i, h in enumerate(names)}
    y_name = y_col if y_col is not None else names[-1]
    if y_name not in position:
        raise DataError(f"{path}: no column '{y_name}' for the target; columns: {preview(names)}")
    if isinstance(x_cols, str):
        x_cols = [x_cols]
    x_cols = list(x_cols) if x_cols is not None else [h for h in names if h != y_name]
    for c in x_cols:
        if c not in position:
            raise DataError(f"{path}: no input column '{c}'; columns: {preview(names)}")
    if not x_cols:
        raise DataError(f"{path}: no input columns besides the target column '{y_name}'")
    return x_cols, y_name, [position[c] for c in x_cols], position[y_name]


def read_csv(path: str, x_cols: Sequence[str] | str | None, y_col: str | None, *,
             with_targets: bool = True, expect_x: Sequence[str] | None = None,
             header: bool = True, by_position: bool = False, delimiter: str = "auto",
             missing: Sequence[str] = MISSING_VALUES) -> Table:
    """Read a CSV.

    Training (`with_targets`): the target is `y_col` (default: the last column);
    inputs are `x_cols` (default: every other column). Without a header row
    (`header` false) the columns are named col1 .. colN.
    Prediction (`expect_x` given): see model_columns; `header` false (a test file of a run
    with data.header false) names the columns col1 .. colN, as in training.
    """
    if expect_x is not None:
        mode = "position" if by_position else bool(header)
        names, cells, first = read_rows(path, mode, PREDICT_NO_HEADER_HINT, len(expect_x), delimiter, missing)
        if names is None and not by_position:
            names = generic_names(cells.shape[1])
        return _csv_for_model(path, names, cells, first, expect_x, y_col, with_targets, by_position, missing)
    names, cells, first = read_rows(path, bool(header), delimiter=delimiter, missing=missing)
    header_names = names
    names = names if names is not None else generic_names(cells.shape[1])
    x_cols, y_name, idx, y_idx = training_columns(path, names, x_cols, y_col)
    y_cells = cells[:, y_idx]
    check_header_is_names(path, header_names, x_cols, y_name in set(np.char.strip(y_cells).tolist()))
    x = to_float(path, cells[:, idx], list(x_cols), row_offset=first, missing=missing)
    y = _targets(path, y_cells, y_name, row_offset=first, missing=missing) if with_targets else None
    return Table(x, y, path, list(x_cols), y_name)


def check_header_is_names(path: str, header_names: Sequence[str] | None, x_cols: Sequence[str],
                          target_name_is_a_label: bool) -> None:
    """Refuse a header row that is a data row: numbers for every input's name, and a target name that
    is also one of the target's values (e.g. "5.1,3.5,1.4,0.2,setosa")."""
    if header_names is not None and target_name_is_a_label and all(_is_number(c) for c in x_cols):
        raise DataError(f"{path}: line 1 ({preview(header_names, 4)}) looks like a data row, not a header row "
                        f"of column names; {NO_HEADER_HINT}")


def model_columns(path: str, names: list[str] | None, width: int, expect_x: Sequence[str], y_col: str | None,
                  with_targets: bool, by_position: bool) -> tuple[list[int], int | None, list[str]]:
    """The columns a trained model reads from a CSV: (input column indices, target column index
    or None, the names of all columns for messages).

    By name (the default): every input name must be in the header; other columns are ignored;
    the target is the column named `y_col`. A header that lacks any input name is an error that
    lists the missing names and the header's unused ones.
    By position: exactly the inputs, in order, then (evaluate: required; predict: optional,
    ignored) one target column."""
    n = len(expect_x)
    shown = names if names is not None else generic_names(width)
    if by_position:
        if width == n + 1 or (width == n and not with_targets):
            return list(range(n)), (n if width == n + 1 else None), shown
        want = f"{n + 1} ({n} inputs, then the target)" if with_targets else f"{n} (the inputs) or {n + 1} (the inputs, then the target)"
        raise DataError(f"{path}: --by-position: expected {want} columns, got {width}")
    position = {h: i for i, h in enumerate(names)}
    missing = [c for c in expect_x if c not in position]
    if missing:
        inputs = set(expect_x)
        unused = [h for h in names if h not in inputs and h != y_col]
        raise DataError(f"{path}: line 1: the header does not match the model's input columns: missing "
                        f"{preview(missing)}; not model inputs: {preview(unused) or 'none'} (name the columns as "
                        f"the model's inputs, or pass --by-position to take them in order)")
    y_idx = position.get(y_col) if y_col is not None else None
    if with_targets and y_idx is None:
        raise DataError(f"{path}: no target column '{y_col}' to evaluate against")
    return [position[c] for c in expect_x], y_idx, shown


def _csv_for_model(path: str, names: list[str] | None, cells: np.ndarray, first: int, expect_x: Sequence[str],
                   y_col: str | None, with_targets: bool, by_position: bool,
                   missing: Sequence[str] = MISSING_VALUES) -> Table:
    """Inputs (and, with_targets, the targets) for a trained model: see model_columns."""
    idx, y_idx, shown = model_columns(path, names, cells.shape[1], expect_x, y_col, with_targets, by_position)
    x_names = [shown[i] for i in idx]
    x = to_float(path, cells[:, idx], x_names, row_offset=first, missing=missing)
    y = _targets(path, cells[:, y_idx], shown[y_idx], row_offset=first, missing=missing) if with_targets else None
    return Table(x, y, path, x_names, shown[y_idx] if y_idx is not None else y_col)


def _targets(path: str, column: np.ndarray, name: str, row_offset: int = 2,
             missing: Sequence[str] = MISSING_VALUES, lines: np.ndarray | None = None) -> np.ndarray:
    """A CSV target column: numbers when every cell is one, else the (stripped) strings. A missing
    cell (an empty one, or one of the missing tokens) is an error saying how many and where.
    `lines`: each cell's line number (default: consecutive lines from `row_offset`)."""
    y = np.char.strip(column)
    line_of = lines if lines is not None else np.arange(len(y)) + row_offset
    gone = is_missing(y, missing) | (y == "")
    if gone.any():
        lines = line_of[gone][:5].tolist()
        n = int(gone.sum())
        more = ", ..." if n > len(lines) else ""
        raise DataError(f"{path}: line {lines[0]}, column '{name}': {n} missing target value{'s' * (n > 1)} "
                        f"(line{'s' * (n > 1)} {', '.join(map(str, lines))}{more}); every row needs a target: "
                        f"drop those rows")
    try:
        values = y.astype(np.float64)
    except ValueError:
        return y
    if not np.isfinite(values).all():
        raise DataError(f"{path}: line {int(line_of[int(np.argmax(~np.isfinite(values)))])}, column '{name}': "
                        f"non-finite target")
    return values
