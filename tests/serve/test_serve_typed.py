"""`nncli serve` for a model trained on typed CSV columns (configs/penguins.yaml: words, NA
cells, an ignored column): requests hold the raw cells, and the reply is exactly what `nncli
predict` prints for the same rows of a file. A real server subprocess on 127.0.0.1, stopped in
the fixture's finally."""

from __future__ import annotations

import csv
import io
import json

import pytest

from serve_support import ROOT, nncli, start, stop

RAW = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"]


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_typed")
    r = nncli("train", "configs/penguins.yaml", "-o", str(folder / "p"), "--epochs", "2", "-q")
    assert r.returncode == 0, r.stderr
    model = folder / "p" / "model.h5"
    rows = list(csv.DictReader(open(ROOT / "data/penguins.csv", newline="")))
    # rows with NA cells in numbers and in sex (lines 5, 10, 11 of the file), words, and an unseen island
    pick = [rows[i] for i in (0, 3, 8, 9, 150, 300)]
    pick.append({**rows[20], "island": "Atlantis"})
    text = ",".join(RAW) + "\n" + "".join(",".join(r[c] for c in RAW) + "\n" for r in pick)
    (folder / "rows.csv").write_text(text)
    r = nncli("predict", str(model), str(folder / "rows.csv"))
    assert r.returncode == 0, r.stderr
    assert "Atlantis" in r.stderr  # predict's warning for the unseen value
    # the compiled batch of predict for a 7-row file is 7 rows: the same shape, the same bits
    s = start(model, "--max-batch", str(len(pick)))
    try:
        yield {"server": s, "rows": pick, "csv": text, "stdout": r.stdout}
    finally:
        stop(s)


def _cell(v: str):
    """A penguins cell as a JSON client would send it: null for NA, numbers as numbers."""
    if v == "NA":
        return None
    try:
        return float(v) if "." in v else int(v)
    except ValueError:
        return v


def test_info_names_the_raw_columns_and_their_types(typed):
    status, info = typed["server"].get("/info")
    assert status == 200
    assert [(c["name"], c["type"]) for c in info["inputs"]] == [
        ("island", "category"), ("bill_length_mm", "number"), ("bill_depth_mm", "number"),
        ("flipper_length_mm", "number"), ("body_mass_g", "number"), ("sex", "category")]


def test_instances_of_raw_cells_give_predicts_numbers(typed):
    ref = list(csv.reader(io.StringIO(typed["stdout"])))[1:]
    doc = {"instances": [{c: _cell(r[c]) for c in RAW} | {"species": "x", "year": 2007} for r in typed["rows"]]}
    status, body = typed["server"].post(doc)
    assert status == 200, body
    assert body["labels"] == [r[0] for r in ref]
    assert body["probabilities"] == [[float(v) for v in r[1:]] for r in ref]
    assert len(body["warnings"]) == 1 and "column 'island'" in body["warnings"][0] and "'Atlantis'" in body["warnings"][0]


def test_a_csv_body_of_raw_cells_gives_predicts_text_and_the_warning_in_a_header(typed):
    server = typed["server"]
    conn_status, ctype, body = server.request("POST", "/predict", typed["csv"].encode(),
                                              {"Content-Type": "text/csv", "Accept": "text/csv"})
    assert conn_status == 200 and ctype.startswith("text/csv")
    assert body.decode() == typed["stdout"]
    import http.client

    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("POST", "/predict", typed["csv"].encode(), {"Content-Type": "text/csv", "Accept": "text/csv"})
        r = conn.getresponse()
        r.read()
        assert "Atlantis" in r.getheader("X-Nncli-Warnings")
    finally:
        conn.close()


def test_known_values_give_no_warnings(typed):
    doc = {"instances": [{c: _cell(typed["rows"][0][c]) for c in RAW}]}
    status, body = typed["server"].post(doc)
    assert status == 200 and "warnings" not in body


@pytest.mark.parametrize("value, words", [
    ("heavy", ["instance 1", "'body_mass_g'", "heavy"]),
    ([1, 2], ["instance 1", "key 'body_mass_g'", "nested value"]),
])
def test_a_bad_cell_is_a_400_naming_the_instance_and_column(typed, value, words):
    rows = [{c: _cell(r[c]) for c in RAW} for r in typed["rows"][:2]]
    rows[1]["body_mass_g"] = value
    status, body = typed["server"].post({"instances": rows})
    assert status == 400 and "\n" not in body["error"]
    for w in words:
        assert w in body["error"], body["error"]


def test_a_hostile_unseen_value_cannot_break_the_warning_header(typed):
    server = typed["server"]
    text = ",".join(RAW) + "\n" + "Zanzibar\u00e9\u2028,39.1,18.7,181,3750,male\n"
    status, _, body = server.request("POST", "/predict", text.encode(), {"Content-Type": "text/csv",
                                                                          "Accept": "text/csv"})
    assert status == 200 and len(body.decode().splitlines()) == 2
    status, body = server.post({"instances": [dict(zip(RAW, ["x\r\nSet-Cookie: a=b", 39.1, 18.7, 181, 3750,
                                                             "male"]))]})
    assert status == 200 and body["warnings"]
    assert json.dumps(body)  # a JSON reply, whole
