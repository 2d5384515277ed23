"""JSON-lines input (.jsonl): the same Chunks of string cells as a CSV, its rules for missing keys
and nested values, one-line errors naming the line; train, predict and evaluate on .jsonl.
Expected cells are written in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from support import error_line, invoke, write_config
from nncli import data
from nncli.data.csv import read_chunks, read_rows
from nncli.errors import DataError


def write_lines(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


def test_cells_are_the_text_a_csv_would_hold(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [
        {"a": 1, "b": "x, \"y\"", "c": True, "d": 2.5},
        {"b": "z", "a": -3, "d": None},            # keys in any order; c absent, d null: missing
        {"a": 1e20, "b": "", "c": False, "d": "7"},
        "", "  "])                                  # blank lines may end the file
    names, cells, first = read_rows(str(path))
    assert names == ["a", "b", "c", "d"] and first == 1
    assert cells.tolist() == [["1", 'x, "y"', "true", "2.5"], ["-3", "z", "", ""], ["1e+20", "", "false", "7"]]
    np.testing.assert_array_equal(data.is_missing(cells), [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0]])
    # in chunks of two rows: the same cells, each chunk with its first line
    _, width, chunks = read_chunks(str(path), 2)
    assert width == 4 and [(line, c.tolist()) for line, c in chunks] == [(1, cells[:2].tolist()), (3, cells[2:].tolist())]
    # without "" among the missing tokens, a missing value reads as the first token
    assert read_rows(str(path), missing=["NA"])[1][1].tolist() == ["-3", "z", "NA", "NA"]


def test_a_bom_and_a_table(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"x1": 0.5, "x2": 2, "y": "cat"}\n{"x1": 1, "x2": -1, "y": "dog"}\n')
    table = data.read(str(path), None, "y")
    np.testing.assert_array_equal(table.x, np.array([[0.5, 2], [1, -1]], np.float32))
    assert table.y.tolist() == ["cat", "dog"] and table.x_names == ["x1", "x2"]


@pytest.mark.parametrize("lines, where, words", [
    (['[1, 2]'], "line 1", "expected a JSON object ({\"column\": value, ...}), got a list"),
    ([{"a": 1}, '"text"'], "line 2", "expected a JSON object"),
    ([{"a": 1}, '{"a": 1,'], "line 2", "not valid JSON"),
    ([{"a": 1}, {"a": 2, "b": 3}], "line 2", "key 'b' is not one of line 1's keys (a); every line needs the same keys"),
    ([{"a": 1}, {"a": [1, 2]}], "line 2, key 'a'", "a nested value (a list); expected a string, a number, "
                                                  "true/false or null"),
    ([{"a": {"b": 1}}], "line 1, key 'a'", "a nested value (an object)"),
    ([{"a": 1}, "", {"a": 2}], "line 2", "blank line between objects"),
    ([{}], "line 1", "an empty object; its keys name the columns"),
    (["", {"a": 1}], "line 1", "blank; expected a JSON object"),
])
def test_bad_lines_are_one_line_errors(tmp_path, lines, where, words):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError) as exc:
        read_rows(str(path))
    assert exc.value.message.startswith(f"{path}: {where}: ") and words in exc.value.message
    assert "\n" not in exc.value.message


def test_empty_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="the file is empty; expected one JSON object per line"):
        read_rows(str(tmp_path / "e.jsonl"))


@pytest.fixture(scope="module")
def jsonl_run(tmp_path_factory):
    """A tiny classifier trained on a .jsonl file (5 epochs), and the same rows as a CSV."""
    folder = tmp_path_factory.mktemp("jsonl")
    rng = np.random.default_rng(0)
    rows = [{"u": round(float(v), 4), "v": round(float(w), 4), "kind": "big" if v + w > 0 else "small"}
            for v, w in rng.normal(size=(40, 2))]
    write_lines(folder / "d.jsonl", rows)
    (folder / "d.csv").write_text("u,v,kind\n" + "".join(f"{r['u']},{r['v']},{r['kind']}\n" for r in rows))
    config = write_config(folder, "data: {train: d.jsonl}\nlayers: [{type: dense, units: 2, activation: softmax}]\n"
                                  "epochs: 5\n")
    run = invoke("train", config, "-o", folder / "run", "-q")
    assert run.exit_code == 0, run.stderr
    return folder


def test_train_predict_evaluate_on_jsonl(jsonl_run):
    folder = jsonl_run
    model = folder / "run" / "model.h5"
    from_jsonl, from_csv = invoke("predict", model, folder / "d.jsonl"), invoke("predict", model, folder / "d.csv")
    assert from_jsonl.exit_code == 0 and from_jsonl.stdout == from_csv.stdout, from_jsonl.stderr
    assert len(from_jsonl.stdout.splitlines()) == 41
    ev_j, ev_c = invoke("evaluate", model, folder / "d.jsonl", "--json"), invoke("evaluate", model, folder / "d.csv", "--json")
    assert ev_j.exit_code == 0 and ev_j.stdout == ev_c.stdout


def test_bad_jsonl_exit_codes(jsonl_run, tmp_path):
    model = jsonl_run / "run" / "model.h5"
    write_lines(tmp_path / "p.jsonl", [{"u": 1, "v": 2}, {"u": 1, "v": {"deep": 1}}])
    r = invoke("predict", model, tmp_path / "p.jsonl")
    assert r.exit_code == 1 and error_line(r.stderr) == (f"Error: {tmp_path / 'p.jsonl'}: line 2, key 'v': a nested "
                                                         f"value (an object); expected a string, a number, "
                                                         f"true/false or null")
    write_lines(tmp_path / "p.jsonl", [{"u": 1, "v": 2, "kind": "big"}, {"u": None, "v": 1, "kind": "big"}])
    r = invoke("evaluate", model, tmp_path / "p.jsonl")
    assert r.exit_code == 1 and "line 2, column 'u': missing value ''" in error_line(r.stderr)
    write_lines(tmp_path / "t.jsonl", [{"u": 1, "v": 2, "kind": "big"}, {"u": 2, "v": 1}])
    config = write_config(tmp_path, "data: {train: t.jsonl}\nlayers: [{type: dense, units: 2, activation: softmax}]\n")
    r = invoke("train", config, "-o", tmp_path / "run", "-q")
    assert r.exit_code == 1 and "line 2, column 'kind': 1 missing target value (line 2)" in error_line(r.stderr)
    assert not (tmp_path / "run").exists()
