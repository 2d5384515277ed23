"""fastcsv, the compiled parse of big plain-number CSVs: every cell it takes is float()'s double,
bit for bit; what it does not take (anything but a plain number, a bad line) it refuses, and
read_chunks then reads the rest of the file as before: the same arrays, the same errors."""

from __future__ import annotations

import numpy as np
import pytest

from nncli.data import csv as csv_reader
from nncli.data import fastcsv
from nncli.errors import DataError


def one(cell: str):
    got = fastcsv.parse_block(cell + "\n", ",", 1, 1)
    return None if got is None else got[0, 0]


def same_double(a: float, b: float) -> bool:
    return np.float64(a).tobytes() == np.float64(b).tobytes()


TAKEN = ["0", "-0", "+0", "1", "-1", "007", "1.", ".5", "+.5", "-.5e-3", "0.000123", "123456789", "1e5", "1E+05",
         "1e-5", "2.5e22", "9007199254740992", " 1.5", "1.5  ", "-0.0e0", "0e999", "3.14159265358979", "0.1",
         "0.2", "0.3", "1e-22", "9.99999999999999e22",
         # beyond the fast path (more digits, larger exponents): float() reads these from the text
         "1234567890123456789e-3", "9.999999999999999e22", "12345678901234567e5", "0.1234567890123456789012",
         "0.00000000000000000000000000001", "1e-23", "1e23", "9007199254740993", "12345678901234567890",
         "1" * 25, "-1.5e-300", "3e38", "1e-400"]
REFUSED = ["", " ", "nan", "NaN", "inf", "-inf", "NA", "?", "1_000", "0x10", "1e", "1e+", ".", "-", "+", "1.2.3",
           "1e5.5", "--1", "1 2", '"1"', "1,", "１", "1d5", "\t1",
           "1e39", "-4e38", "1e400"]  # float32 cannot hold these: csv.py words the error


@pytest.mark.parametrize("cell", TAKEN)
def test_cells_it_takes_are_floats_double(cell):
    got = one(cell)
    assert got is not None, cell
    assert same_double(got, float(cell))


@pytest.mark.parametrize("cell", REFUSED)
def test_cells_it_refuses(cell):
    assert one(cell) is None


def test_random_numbers_in_every_form_are_floats_double():
    rng = np.random.default_rng(11)
    values = rng.standard_normal(20_000) * 10.0 ** rng.integers(-30, 30, 20_000)
    forms = ["%.9g", "%.17g", "%r", "%.3f", "%.12e", "%d"]
    cells = [(f % (int(v) if f == "%d" else v)) for v, f in zip(values.tolist(), rng.choice(forms, len(values)))]
    width = 8
    cells = cells[:len(cells) // width * width]
    text = "".join(",".join(cells[i:i + width]) + "\n" for i in range(0, len(cells), width))
    got = fastcsv.parse_block(text, ",", width, len(cells) // width)
    want = np.array([float(c) for c in cells]).reshape(-1, width)
    assert got is not None and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("text,width,rows,taken", [
    ("1,2\n3,4\n", 2, 2, True),
    ("1,2\r\n3,4\r\n", 2, 2, True),
    ("1,2\n3,4", 2, 2, True),                # no line end at the end
    ("1,2\n3\n", 2, 2, False),               # a short line
    ("1,2\n3,4,5\n", 2, 2, False),           # a long line
    ("1,2\n\n3,4\n", 2, 3, False),           # a blank line
    ("1,2\r3,4\n", 2, 2, False),             # a lone \r
    ("1,2,\n", 2, 1, False),                 # a trailing delimiter
    ("1,,2\n", 3, 1, False),                 # an empty cell
    ('1,"2"\n', 2, 1, False),                # a quoted cell
    ("1;2\n", 2, 1, False),                  # another delimiter
    ("1,2\n3,4\n", 2, 3, False),             # fewer lines than promised
    ("1,2\n3,4\n5,6\n", 2, 2, False),        # more lines than promised
    ("1,2\n", 0, 1, False),
])
def test_lines(text, width, rows, taken):
    assert (fastcsv.parse_block(text, ",", width, rows) is not None) == taken


def test_other_delimiters():
    assert fastcsv.parse_block("1\t2\n", "\t", 2, 1).tolist() == [[1.0, 2.0]]
    assert fastcsv.parse_block("1;2\n", ";", 2, 1).tolist() == [[1.0, 2.0]]
    assert fastcsv.parse_block("1|2\n", "|", 2, 1).tolist() == [[1.0, 2.0]]


def test_missing_tokens_that_look_like_numbers_turn_it_off():
    assert csv_reader._number_tokens(["-999", "0", "NA", "nan", "inf", "1e999"]) == ["-999", "0"]
    assert csv_reader._number_tokens(csv_reader.MISSING_VALUES) == []


# --- read_chunks with and without the fast path: the same arrays, the same errors -------------

def _read(path, chunk_rows, fast: bool, monkeypatch, **kw):
    """[(first line, float32 inputs, which reader: 'fastcsv' or 'csv')] of every chunk."""
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(fastcsv, "parse_block", lambda *a: None)
        names, width, chunks = csv_reader.read_chunks(str(path), chunk_rows, raw=True, **kw)
        return [(first, csv_reader.rows_to_float(str(path), rows, range(width), names, first, **kw),
                 "fastcsv" if isinstance(rows, np.ndarray) else "csv") for first, rows in chunks]


def _messages(path, monkeypatch) -> list[str]:
    """The error of reading `path` with the fast path and without it."""
    messages = []
    for fast in (True, False):
        with pytest.raises(DataError) as info:
            _read(path, 300, fast, monkeypatch)
        messages.append(info.value.message)
    return messages


def _write(tmp_path, rows, extra=""):
    path = tmp_path / "big.csv"
    path.write_text("a,b,c\n" + "".join(f"{x:.9g},{y:.17g},{z}\n" for x, y, z in rows) + extra)
    return path


def test_chunks_equal_the_csv_modules(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    rows = [(float(a), float(b), int(c)) for a, b, c in zip(rng.standard_normal(1000), rng.random(1000),
                                                              rng.integers(-99, 99, 1000))]
    path = _write(tmp_path, rows, extra='"7",8,9\n1,2,3\n\n')  # a quoted cell in the last chunk, a blank end
    fast, slow = _read(path, 300, True, monkeypatch), _read(path, 300, False, monkeypatch)
    assert [f for f, _, _ in fast] == [f for f, _, _ in slow] == [2, 302, 602, 902]
    assert [r for _, _, r in fast] == ["fastcsv", "fastcsv", "fastcsv", "csv"]
    assert [r for _, _, r in slow] == ["csv"] * 4
    for (_, a, _), (_, b, _) in zip(fast, slow):
        assert a.dtype == np.float32 and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("bad,expect", [
    ("1,x,3", "line 702, column 'b': expected a number, got 'x'"),
    ("1,2", "line 702: expected 3 columns as in the header, got 2"),
    ("1,inf,3", "line 702, column 'b': non-finite value 'inf'"),
    ("1,1e39,3", "line 702, column 'b': '1e39' is too large for float32"),
])
def test_a_bad_row_after_fast_chunks_is_named_as_before(tmp_path, monkeypatch, bad, expect):
    rows = [(i, i / 7, i) for i in range(1000)]
    path = _write(tmp_path, rows[:700])
    path.write_text(path.read_text() + bad + "\n" + "".join(f"{i},{i},{i}\n" for i in range(300)))
    fast, slow = _messages(path, monkeypatch)
    assert fast == slow == f"{path}: {expect}"


def test_a_bad_byte_after_fast_chunks_names_the_line_as_before(tmp_path, monkeypatch):
    path = tmp_path / "bytes.csv"
    path.write_bytes(b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(650)) + b"1,\xff\n")
    fast, slow = _messages(path, monkeypatch)
    offset = path.read_bytes().index(b"\xff")
    assert fast == slow == f"{path}: not UTF-8 text (bad byte at offset {offset})"


def test_a_numeric_missing_token_keeps_the_csv_module_which_refuses_it(tmp_path, monkeypatch):
    path = _write(tmp_path, [(1, 2, 3), (-999, 5, 6)])
    calls = []
    real = fastcsv.parse_block
    monkeypatch.setattr(fastcsv, "parse_block", lambda *a: calls.append(1) or real(*a))
    names, width, chunks = csv_reader.read_chunks(str(path), 10, raw=True, missing=("NA", "-999"))
    first, rows = next(iter(chunks))
    with pytest.raises(DataError) as info:
        csv_reader.rows_to_float(str(path), rows, [0, 1, 2], names, first, missing=("NA", "-999"))
    assert calls == []
    assert info.value.message == (f"{path}: line 3, column 'a': missing value '-999' (one of data.missing_values) "
                                  "in a number column; fill it in or drop the row")


def test_random_strings_are_refused_or_read_as_float_reads_them():
    """Strings drawn from the characters of numbers: each is refused, or read as float() reads it
    (and then float() reads it too)."""
    rng = np.random.default_rng(2)
    alphabet = np.array(list("0123456789.-+eE 0000111"))
    taken = 0
    for _ in range(20_000):
        cell = "".join(rng.choice(alphabet, rng.integers(1, 12)))
        got = one(cell)
        if got is None:
            continue
        taken += 1
        assert same_double(got, float(cell)), cell
    assert taken > 2000  # enough of them are numbers for this to test something


def test_random_files_read_the_same_with_and_without_the_fast_path(tmp_path, monkeypatch):
    """Files of random lines (plain numbers in many forms, spaces, CRLF, quotes, blank lines, words,
    missing cells, short and long lines): read_chunks + rows_to_float give the same chunks, or the
    same error, with fastcsv and with the csv module alone."""
    rng = np.random.default_rng(13)
    cells = ["1", "-2.5", "3e-7", "+.5", " 4 ", "0.000123456789", "1234567890123456789", "1e-30", "007",
             "6.02214076e23", "-0", "1.", "9007199254740993"]
    odd = ['"7"', "x", "", "NA", "nan", "1e39", " ", "1_0", "inf"]
    taken = fast_chunks = 0
    for case in range(60):
        lines = []
        for _ in range(int(rng.integers(1, 40))):
            row = [str(rng.choice(cells)) for _ in range(3)]
            roll = rng.random()
            if roll < 0.02:
                row[int(rng.integers(3))] = str(rng.choice(odd))
            elif roll < 0.03:
                row = row[:2] if rng.random() < 0.5 else row + ["1"]
            elif roll < 0.035:
                row = [""]
            lines.append(",".join(row) + ("\r\n" if rng.random() < 0.3 else "\n"))
        path = tmp_path / f"f{case}.csv"
        path.write_text("a,b,c\n" + "".join(lines), newline="")
        results = []
        for fast in (True, False):
            try:
                chunks = _read(path, 7, fast, monkeypatch)
                results.append(("ok", [(f, x.tobytes()) for f, x, _ in chunks]))
                if fast:
                    fast_chunks += sum(r == "fastcsv" for _, _, r in chunks)
            except DataError as exc:
                results.append(("error", exc.message))
        assert results[0] == results[1], (case, path.read_text())
        taken += results[0][0] == "ok"
    assert taken > 20 and fast_chunks > 50  # most files are read, many chunks by fastcsv


def test_the_memory_of_a_block_is_bounded_before_it_is_allocated(monkeypatch):
    text = "1,2\n3,4\n"
    assert fastcsv.parse_block(text, ",", 2, 2) is not None
    monkeypatch.setattr(fastcsv, "MAX_CELLS", 3)             # 4 cells: refused, nothing parsed
    assert fastcsv.parse_block(text, ",", 2, 2) is None
    monkeypatch.setattr(fastcsv, "MAX_CELLS", 1 << 24)
    monkeypatch.setattr(fastcsv, "MAX_HARD", 1)              # room for one number for float()
    assert fastcsv.parse_block("1e30,2\n", ",", 2, 1).tolist() == [[1e30, 2.0]]
    assert fastcsv.parse_block("1e30,1e-30\n", ",", 2, 1) is None
