"""CSV dialects (data.delimiter: sniffed or given; .tsv; BOM; quoted fields) and missing cells
(data.missing_values, is_missing, one-line errors for a missing number or target). Every
expected cell is written in the test: the same table, spelled in each dialect by hand."""

from __future__ import annotations

import re

import numpy as np
import pytest

from support import error_line, invoke, write_config
from nncli import data, spec as spec_mod
from nncli.data.csv import MISSING_VALUES, read_chunks, read_csv, read_rows, sniff_delimiter
from nncli.errors import ConfigError, DataError

# the table every dialect below spells: a name with the delimiter and a quote in it, a line break
NAMES = ["name", "x", "y"]
CELLS = [["a, b; c|d\te", "1.5", "red"], ['say "hi"', "-2", "blue"], ["two\nlines", "3e2", "red"]]


def spelled(d: str) -> str:
    """The table in dialect `d`, quoted by hand (the quoted fields are the ones csv would quote)."""
    q = d.join
    return "\r\n".join([q(NAMES),
                        q(['"a, b; c|d\te"', "1.5", "red"]),
                        q(['"say ""hi"""', "-2", "blue"]),
                        q(['"two\nlines"', "3e2", "red"])]) + "\r\n"


@pytest.mark.parametrize("d", [",", ";", "\t", "|"])
@pytest.mark.parametrize("bom", [False, True])
def test_each_delimiter_is_sniffed_with_quotes_and_bom(tmp_path, d, bom):
    path = tmp_path / "t.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + spelled(d).encode())
    names, cells, first = read_rows(str(path))
    assert names == NAMES and cells.tolist() == CELLS and first == 2
    # the same with the delimiter given, and read in chunks of one row (the streamed path)
    _, width, chunks = read_chunks(str(path), 1, delimiter=d)
    got = [(line, c.tolist()) for line, c in chunks]
    assert width == 3 and got == [(2, [CELLS[0]]), (3, [CELLS[1]]), (4, [CELLS[2]])]


def test_tsv_means_tab_without_sniffing(tmp_path):
    # a one-column-looking tab file: sniffing alone could not tell; the suffix does
    path = tmp_path / "t.tsv"
    path.write_text("a,b\tc\n1,2\t3\n")
    names, cells, _ = read_rows(str(path))
    assert names == ["a,b", "c"] and cells.tolist() == [["1,2", "3"]]


def test_ambiguous_delimiter_is_refused_naming_both(tmp_path):
    path = tmp_path / "amb.csv"
    path.write_text("a,b;c,d\n1,2;3,4\n5,6;7,8\n")  # 3 fields on ',' and 2 on ';' in every row
    with pytest.raises(DataError) as exc:
        read_rows(str(path))
    msg = exc.value.message
    assert msg.startswith(f"{path}: cannot tell the delimiter") and "',' (3 columns)" in msg \
        and "';' (2 columns)" in msg and "data.delimiter" in msg and "\n" not in msg
    assert read_rows(str(path), delimiter=";")[1].tolist() == [["1,2", "3,4"], ["5,6", "7,8"]]


def test_sniffing_uses_the_header_to_break_ties():
    # European decimals: ',' splits the data rows evenly but not the header
    assert sniff_delimiter("p", "a;b\n1,5;2,5\n3,5;4,5\n", True) == ";"
    # a cut-off last row of the sample is not counted
    assert sniff_delimiter("p", "a|b\n1|2\n3|4\n5", False) == "|"
    # one column: nothing splits; ',' is as good as any
    assert sniff_delimiter("p", "y\n1\n2\n", True) == ","


def test_semicolon_file_read_with_comma_says_so(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("a;b;y\n1;2;3\n")
    with pytest.raises(DataError) as exc:
        read_rows(str(path), delimiter=",")
    assert exc.value.message == (f"{path}: line 1 is one column when split on ',', but it splits on ';'; set "
                                 f"data.delimiter (predict/evaluate: --delimiter) to ';', or auto")


def test_is_missing_mask():
    cells = np.array([["", " NA ", "N/A", "1"], ["nan", "null", "None", "?"], ["na", "0", "NaN", "x"]])
    want = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 0]], dtype=bool)  # "na" is not a token
    np.testing.assert_array_equal(data.is_missing(cells), want)
    np.testing.assert_array_equal(data.is_missing(cells, ["-999", "x"]),
                                  np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=bool))
    assert not data.is_missing(cells, []).any()
    assert list(MISSING_VALUES) == ["", "NA", "N/A", "NaN", "nan", "null", "None", "?"]


def test_missing_number_and_missing_targets_are_one_line_errors(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("a,b,y\n1,2,3\n4,NA,5\n")
    with pytest.raises(DataError) as exc:
        read_csv(str(path), None, None)
    assert exc.value.message == (f"{path}: line 3, column 'b': missing value 'NA' (one of data.missing_values) "
                                 f"in a number column; fill it in or drop the row")
    # the same cell with other missing tokens: a plain non-number
    with pytest.raises(DataError, match="line 3, column 'b': expected a number, got 'NA'"):
        read_csv(str(path), None, None, missing=["?"])
    rows = ["a,y"] + [f"{i},{'?' if i in (2, 5, 6, 7, 8, 9, 11) else 'u'}" for i in range(12)]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as exc:
        read_csv(str(path), None, None)
    # data row i is line i + 2: rows 2, 5, 6, 7, 8 first, 7 in all
    assert exc.value.message == (f"{path}: line 4, column 'y': 7 missing target values (lines 4, 7, 8, 9, 10, ...); "
                                 f"every row needs a target: drop those rows")


def test_config_keys(tmp_path):
    (tmp_path / "d.csv").write_text("a,y\n1,2\n")
    base = {"data": {"train": "d.csv"}, "layers": [{"type": "dense", "units": 1}]}

    def load(**d):
        return spec_mod.from_dict({**base, "data": {**base["data"], **d}}, "c.yaml", base=tmp_path)["data"]

    got = load()
    assert got["delimiter"] == "auto" and got["missing_values"] == list(MISSING_VALUES)
    assert load(delimiter="tab")["delimiter"] == "\t" and load(delimiter="|")["delimiter"] == "|"
    assert load(missing_values=[None, -999, " ? "])["missing_values"] == ["null", "-999", "?"]
    for bad, words in [({"delimiter": ";;"}, "data.delimiter: expected auto"),
                       ({"delimiter": '"'}, "data.delimiter"),
                       ({"missing_values": [1.5]}, "data.missing_values[0]: expected the text"),
                       ({"normalize_target": "minmax"}, "data.normalize_target"),
                       ({"class_weight": {"a": 0}}, "data.class_weight.a")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            load(**bad)


@pytest.fixture(scope="module")
def semicolon_run(tmp_path_factory):
    """A tiny regression trained on a semicolon file (3 epochs)."""
    folder = tmp_path_factory.mktemp("semi")
    rows = ["a;b;y"] + [f"{i % 5};{i % 3};{i % 5 + 2 * (i % 3)}" for i in range(30)]
    (folder / "d.csv").write_text("\n".join(rows) + "\n")
    config = write_config(folder, "data: {train: d.csv}\nlayers: [{type: dense, units: 1}]\nepochs: 3\n")
    run = invoke("train", config, "-o", folder / "run", "-q")
    assert run.exit_code == 0, run.stderr
    return folder


def test_predict_and_evaluate_read_any_dialect(semicolon_run, monkeypatch):
    folder = semicolon_run
    model = folder / "run" / "model.h5"
    base = invoke("predict", model, folder / "d.csv")
    assert base.exit_code == 0 and len(base.stdout.splitlines()) == 31, base.stderr
    from nncli import inference   # the streamed path (a big file, read in chunks of rows): the same output
    monkeypatch.setattr(inference, "PREDICT_STREAM_BYTES", 0)
    monkeypatch.setattr(inference, "PREDICT_CHUNK_ROWS", 1)
    monkeypatch.setattr(inference, "PREDICT_BATCH", 4)
    assert inference.streams_csv(folder / "d.csv")
    streamed = invoke("predict", model, folder / "d.csv")
    monkeypatch.undo()
    assert streamed.exit_code == 0 and streamed.stdout == base.stdout, streamed.stderr
    (folder / "d.tsv").write_text((folder / "d.csv").read_text().replace(";", "\t"))
    (folder / "pipe.csv").write_text((folder / "d.csv").read_text().replace(";", "|"))
    for path, extra in [("d.tsv", []), ("pipe.csv", []), ("pipe.csv", ["--delimiter", "|"])]:
        got = invoke("predict", model, folder / path, *extra)
        assert got.exit_code == 0 and got.stdout == base.stdout, got.stderr
    ev = invoke("evaluate", model, folder / "pipe.csv", "--json")
    assert ev.exit_code == 0 and '"examples": 30' in ev.stdout
    # a wrong --delimiter: one line, exit 1 (data); a bad one: exit 2 (usage)
    wrong = invoke("predict", model, folder / "d.csv", "--delimiter", ",")
    assert wrong.exit_code == 1 and "splits on ';'" in error_line(wrong.stderr)
    bad = invoke("evaluate", model, folder / "d.csv", "--delimiter", "ab")
    assert bad.exit_code == 2 and error_line(bad.stderr).startswith("Error: --delimiter: expected auto")


def test_bad_dialect_inputs_exit_codes(tmp_path):
    (tmp_path / "amb.csv").write_text("a,b;c\n1,2;3\n")
    (tmp_path / "na.csv").write_text("a;y\n1;2\nNA;3\n")
    # (NA is a missing cell, read as such in a semicolon file: refused here by missing: error)
    for name, code, words in [("amb.csv", 1, "cannot tell the delimiter"),
                              ("na.csv", 1, "line 3, column 'a': missing cell (missing: error")]:
        config = write_config(tmp_path, f"data: {{train: {name}, columns: {{a: {{type: number, missing: error}}}}}}"
                                        f"\nlayers: [{{type: dense, units: 1}}]\n", "c.yaml")
        run = invoke("train", config, "-o", tmp_path / "run", "-q")
        assert run.exit_code == code and words in error_line(run.stderr), run.stderr
        assert not (tmp_path / "run").exists()
    config = write_config(tmp_path, "data: {train: na.csv, delimiter: ';;'}\nlayers: [{type: dense, units: 1}]\n",
                          "c.yaml")
    run = invoke("train", config, "-q")
    assert run.exit_code == 2 and "data.delimiter (line 1)" in error_line(run.stderr)
