"""The one CSV reader (nncli.data.csv): reading a whole file is reading it as one chunk."""

from __future__ import annotations

import numpy as np
import pytest

from nncli.data import csv as csv_reader
from nncli.data.csv import read_chunks, read_csv, read_rows
from nncli.errors import DataError


def message(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return info.value.message


def chunked(path, n, **kw):
    names, width, chunks = read_chunks(str(path), n, **kw)
    return names, width, list(chunks)


def test_the_whole_file_is_the_chunks_concatenated(tmp_path):
    src = tmp_path / "a.csv"
    src.write_text("a,b,y\n" + "".join(f"{i},{2 * i},{i % 3}\n" for i in range(11)))
    names, cells, first = read_rows(str(src))
    assert names == ["a", "b", "y"] and first == 2 and cells.shape == (11, 3)
    _, width, chunks = chunked(src, 4)
    assert width == 3 and [f for f, _ in chunks] == [2, 6, 10]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), cells)


def test_blank_rows_at_the_end_are_ignored_and_before_data_are_rows(tmp_path):
    src = tmp_path / "b.csv"
    src.write_text("a,y\n1,2\n\n  \n")
    _, cells, _ = read_rows(str(src))
    assert cells.tolist() == [["1", "2"]]
    src.write_text("a,y\n1,2\n\n3,4\n")
    for n in (None, 1):
        assert message(chunked, src, n).endswith("line 3: expected 2 columns as in the header, got 0")
    src.write_text("a,y\n1,2\n , \n3,4\n")  # a blank row as wide as the header is a row of empty cells
    assert message(read_csv, str(src), None, None).endswith("line 3, column 'a': missing value '' (one of data.missing_values) in a number column; fill it in or drop the row")
    src.write_text("\n\n \n")
    assert message(read_rows, str(src)).endswith("the file is empty; expected a header row and data rows")
    src.write_text("a,y\n\n")
    assert message(read_rows, str(src)).endswith("no data rows after the header")


@pytest.mark.parametrize("scan", [1, 2, 3, 1 << 20])
def test_a_bad_byte_is_named_by_its_offset_as_decoding_the_whole_file_would(tmp_path, monkeypatch, scan):
    monkeypatch.setattr(csv_reader, "SCAN_BYTES", scan)  # blocks smaller than a character
    src = tmp_path / "c.csv"
    body = "a,y\n\u00e9\u20ac,1\n".encode()
    src.write_bytes(body + b"\xff,2\n")
    assert message(read_rows, str(src)).endswith(f"not UTF-8 text (bad byte at offset {len(body)})")
    src.write_bytes(b"\xef\xbb\xbf" + body + b"\xff,2\n")  # utf-8-sig counts after the BOM
    assert message(read_rows, str(src)).endswith(f"not UTF-8 text (bad byte at offset {len(body)})")
    src.write_bytes(body + "\u20ac".encode()[:2])  # a character cut at the end
    assert message(read_rows, str(src)).endswith(f"not UTF-8 text (bad byte at offset {len(body)})")
    src.write_bytes(b"\xef\xbb\xbf" + body)
    assert read_rows(str(src))[0] == ["a", "y"]


def test_a_whole_file_problem_comes_before_a_problem_with_rows(tmp_path):
    """UTF-8 and NUL bytes are checked over the whole file before any row is parsed."""
    src = tmp_path / "d.csv"
    src.write_bytes(b'a,y\n"1,2\n' + b"x" * 100 + b"\x00\n")  # an unclosed quote, then a NUL
    for n in (None, 1):
        assert message(chunked, src, n).endswith("contains NUL bytes; expected a CSV text file")
    src.write_bytes(b"a,y\n1\n\x00\n\xff\n")
    assert "not UTF-8 text" in message(chunked, src, 1)


def test_header_modes(tmp_path):
    src = tmp_path / "e.csv"
    src.write_text("1,2\n3,4\n")
    assert "line 1 is all numbers" in message(read_rows, str(src))
    names, cells, first = read_rows(str(src), header=False)
    assert names is None and first == 1 and len(cells) == 2
    names, cells, first = read_rows(str(src), header="position", n_inputs=2)
    assert names is None and first == 1  # a first row of numbers is data
    src.write_text("p,q\n3,4\n")
    names, cells, first = read_rows(str(src), header="position", n_inputs=2)
    assert names == ["p", "q"] and first == 2 and cells.tolist() == [["3", "4"]]


# --- rows_to_float: numbers parsed from raw chunks (the streamed predict path) -------------------

CELLS = ["1.5", " 2 ", "-3e2", "+.25", "1_000", "\t7\n", "0", "٣"]


@pytest.mark.parametrize("idx", [[0, 1, 2], [2, 0], [1]])
def test_rows_to_float_equals_float_of_each_cell(idx):
    rng = np.random.default_rng(0)
    rows = [[CELLS[k] for k in rng.integers(0, len(CELLS), 3)] for _ in range(50)]
    got = csv_reader.rows_to_float("f.csv", rows, idx, ["a", "b", "c"])
    want = np.array([[float(r[i]) for i in idx] for r in rows], dtype=np.float32)  # Python's own parse
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, csv_reader.to_float("f.csv", np.array(rows, dtype=str)[:, idx],
                                                            [["a", "b", "c"][i] for i in idx]))


@pytest.mark.parametrize("bad", ["NA", "", "x1", "nan", "inf", "1e39", "0x10"])
def test_rows_to_float_words_a_bad_cell_as_to_float_does(bad):
    rows = [["1", "2"], ["3", bad], ["5", "6"]]
    with pytest.raises(DataError) as fast:
        csv_reader.rows_to_float("f.csv", rows, [0, 1], ["a", "b"], row_offset=10)
    with pytest.raises(DataError) as slow:
        csv_reader.to_float("f.csv", np.array(rows, dtype=str), ["a", "b"], row_offset=10)
    assert fast.value.message == slow.value.message
    assert fast.value.message.startswith("f.csv: line 11, column 'b': ")


def test_raw_chunks_are_the_rows_of_the_string_chunks(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(25)) + "\n")
    plain = list(read_chunks(str(path), 10).chunks)
    raw = list(read_chunks(str(path), 10, raw=True).chunks)
    assert [s for s, _ in raw] == [s for s, _ in plain] == [2, 12, 22]
    # the first two chunks are plain numbers (fastcsv's arrays); the last holds the blank end line,
    # so it and what follows go through the csv module (lists of cells)
    assert [type(rows) for _, rows in raw] == [np.ndarray, np.ndarray, list]
    for (_, rows), (_, cells) in zip(raw, plain):
        if isinstance(rows, list):
            assert rows == cells.tolist()
        else:
            assert rows.dtype == np.float64 and np.array_equal(rows, cells.astype(np.float64))


def test_a_missing_token_that_reads_as_a_number_is_missing_not_the_number():
    cells = np.array([["1", "2"], [" -999 ", "3"]])
    with pytest.raises(DataError) as info:
        csv_reader.to_float("f.csv", cells, ["a", "b"], missing=("NA", "-999"))
    assert info.value.message == ("f.csv: line 3, column 'a': missing value '-999' (one of data.missing_values) in "
                                  "a number column; fill it in or drop the row")
    assert csv_reader.to_float("f.csv", cells, ["a", "b"]).tolist() == [[1, 2], [-999, 3]]  # not a token: a number


def test_nan_tokens_keep_rows_to_float_on_its_fast_route(monkeypatch):
    """The default tokens include nan and NaN, which float() reads: a NaN cell is refused anyway, so
    only finite-number tokens send the rows to to_float's per-cell check."""
    def refuse(*a, **k):
        raise AssertionError("to_float called")
    monkeypatch.setattr(csv_reader, "to_float", refuse)
    rows = [["1", "2"], ["3", "4"]]
    assert csv_reader.rows_to_float("f.csv", rows, [0, 1], ["a", "b"]).tolist() == [[1, 2], [3, 4]]
    with pytest.raises(AssertionError):
        csv_reader.rows_to_float("f.csv", rows, [0, 1], ["a", "b"], missing=("-999",))
