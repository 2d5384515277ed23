"""`nncli serve`: a real server subprocess on 127.0.0.1, checked against `nncli predict`.

Every server is started with --port 0 (the kernel picks a free port; the URL is read
from the server's own banner), every test bounds its time, and every process is
killed in a fixture's finally.
"""

from __future__ import annotations

import csv
import io
import json
import random
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serve_support import ROOT, nncli, start, stop

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An iris model (2 epochs), a 1,100-row input file and `nncli predict`'s answer for it."""
    folder = tmp_path_factory.mktemp("serve")
    r = nncli("train", "configs/iris.yaml", "-o", str(folder / "iris"), "--epochs", "2", "-q")
    assert r.returncode == 0, r.stderr
    rows = [r for r in csv.reader(open(ROOT / "data/iris.csv", newline="")) if r]
    rng = np.random.default_rng(0)
    big = [rows[0]] + [[f"{float(v) + rng.normal(0, 0.3):.3f}" for v in rows[1 + i % (len(rows) - 1)][:4]]
                       + [rows[1 + i % (len(rows) - 1)][4]] for i in range(1100)]
    path = folder / "big.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(big)
    # predict's batch is min(1024, rows): a file this size is predicted in batches of 1024
    r = nncli("predict", str(folder / "iris" / "model.h5"), str(path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    ref = list(csv.reader(io.StringIO(r.stdout)))
    x = [[float(v) for v in row[:4]] for row in big[1:]]
    return {"model": folder / "iris" / "model.h5", "x": x, "lines": lines, "ref": ref[1:], "header": ref[0],
            "folder": folder}


@pytest.fixture(scope="module")
def server(run):
    s = start(run["model"], "--max-body-mb", "1", "--max-rows", "2000", "--timeout-s", "2")
    try:
        yield s
    finally:
        stop(s)


def expect(run, idx):
    rows = [run["ref"][i] for i in idx]
    return [r[0] for r in rows], [[float(v) for v in r[1:]] for r in rows]


def test_health_and_info(server, run):
    status, health = server.get("/health")
    assert status == 200 and health["status"] == "ok"
    status, info = server.get("/info")
    assert status == 200
    import h5py
    from nncli import __version__

    with h5py.File(run["model"], "r") as f:
        created = f.attrs["created"]
    assert [c["name"] for c in info["inputs"]] == NAMES and all(c["type"] == "number" for c in info["inputs"])
    assert info["classes"] == ["setosa", "versicolor", "virginica"] and info["created"] == created
    assert info["nncli_version"] == __version__ and info["output"] == run["header"]
    status, body = server.get("/nothing")
    assert status == 404 and "endpoints" in body["error"]


def test_instances(server, run):
    idx = [0, 7, 1099, 512]
    doc = {"instances": [{**dict(zip(NAMES, run["x"][i])), "species": "ignored", "id": i} for i in idx]}
    status, body = server.post(doc)
    assert status == 200
    labels, probs = expect(run, idx)
    assert body["labels"] == labels and body["probabilities"] == probs   # exactly predict's numbers


def test_inputs(server, run):
    idx = list(range(300, 340))
    status, body = server.post({"inputs": [run["x"][i] for i in idx]})
    assert status == 200 and (body["labels"], body["probabilities"]) == expect(run, idx)


def test_csv_in_csv_out(server, run):
    idx = list(range(20, 30))
    text = "petal_width,species,sepal_length,sepal_width,petal_length\n" + "".join(
        f"{run['x'][i][3]},x,{run['x'][i][0]},{run['x'][i][1]},{run['x'][i][2]}\n" for i in idx)
    status, ctype, body = server.request("POST", "/predict", text.encode(),
                                         {"Content-Type": "text/csv", "Accept": "text/csv"})
    assert status == 200 and ctype.startswith("text/csv")
    assert body.decode().splitlines() == [run["lines"][0]] + [run["lines"][1 + i] for i in idx]


def test_bad_json(server):
    for body in (b"{bad", b"[1, 2]", b'{"instances": [], "inputs": []}', b"\xff\xfe", b'{"inputs": [[NaN, 1, 2, 3]]}'):
        status, _, reply = server.request("POST", "/predict", body, {"Content-Type": "application/json"})
        assert status == 400, body
        msg = json.loads(reply)["error"]
        assert msg.startswith("request body: ") and "\n" not in msg


def test_wrong_columns_same_message_as_cli(server, run, tmp_path):
    text = "sepal_length,sepal_width,petal_len,petal_width\n1,2,3,4\n"
    status, _, reply = server.request("POST", "/predict", text.encode(), {"Content-Type": "text/csv"})
    path = tmp_path / "wrong.csv"
    path.write_text(text)
    cli = nncli("predict", str(run["model"]), str(path))
    assert status == 400 and cli.returncode == 1
    assert "Error: " + json.loads(reply)["error"].replace("request body", str(path)) == cli.stderr.strip()
    status, body = server.post({"instances": [{"sepal_length": 1, "sepal_width": 2}]})
    assert status == 400 and "missing petal_length, petal_width" in body["error"]
    status, body = server.post({"instances": [dict(zip(NAMES, [1, 2, "3", 4]))]})
    assert status == 400 and "column 'petal_length': expected a number" in body["error"]
    status, body = server.post({"inputs": [[1, 2, 3]]})
    assert status == 400 and "expected a list of 4 values" in body["error"]


def test_oversize_body_and_too_many_rows(server):
    sock = socket.create_connection((server.host, server.port), timeout=10)
    try:   # a declared 2 MB body (limit 1 MB): refused before it is read
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2097152\r\n\r\n")
        chunks = []
        while True:   # the server answers, then closes the connection
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        reply = b"".join(chunks).decode()
    finally:
        sock.close()
    assert reply.startswith("HTTP/1.1 413") and "at most 1,048,576" in reply
    status, body = server.post({"inputs": [[1, 2, 3, 4]] * 2001})
    assert status == 413 and "2,001 rows" in body["error"]


def test_slow_client_does_not_block_others(server, run):
    slow = socket.create_connection((server.host, server.port), timeout=20)
    try:
        slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"inputs\": [")
        t0 = time.monotonic()
        status, body = server.post({"inputs": [run["x"][0]]}, timeout=5)
        assert status == 200 and time.monotonic() - t0 < 2
        t0 = time.monotonic()
        assert slow.recv(1024) == b""   # dropped after --timeout-s 2
        assert time.monotonic() - t0 < 10
    finally:
        slow.close()


def _bad_request(rng):
    kind = rng.randrange(5)
    if kind == 0:
        return b"{not json", "application/json"
    if kind == 1:
        return json.dumps({"instances": [{"sepal_length": 1.0}]}).encode(), "application/json"
    if kind == 2:
        return json.dumps({"inputs": [[1.0, 2.0]]}).encode(), "application/json"
    if kind == 3:
        return b"a,b,c,d\n1,2,3,4\n", "text/csv"
    return json.dumps({"inputs": [[1.0, "x", 3.0, 4.0]]}).encode(), "application/json"


def test_load_2000_requests_16_clients(server, run):
    rng = random.Random(0)
    plan = []
    for i in range(2000):
        if rng.random() < 0.25:
            plan.append(("bad", *_bad_request(rng)))
            continue
        idx = rng.sample(range(1100), rng.randint(1, 8))
        if rng.random() < 0.5:
            body = json.dumps({"inputs": [run["x"][j] for j in idx]}).encode()
            plan.append(("good", body, "application/json", idx))
        else:
            body = json.dumps({"instances": [dict(zip(NAMES, run["x"][j])) for j in idx]}).encode()
            plan.append(("good", body, "application/json", idx))
    _, before = server.get("/health")

    def one(item):
        status, _, reply = server.request("POST", "/predict", item[1], {"Content-Type": item[2]}, timeout=60)
        return item, status, json.loads(reply)

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, plan))
    assert time.monotonic() - t0 < 240
    good = bad = 0
    for item, status, reply in results:
        if item[0] == "bad":
            assert status == 400 and "error" in reply
            bad += 1
        else:
            assert status == 200, reply
            assert (reply["labels"], reply["probabilities"]) == expect(run, item[3])
            good += 1
    assert good + bad == 2000 and bad > 300
    _, after = server.get("/health")
    assert after["requests"] - before["requests"] == good
    assert after["predict_calls"] - before["predict_calls"] < good   # requests were joined into batches


def test_no_micro_batching_one_call_per_request(run):
    s = start(run["model"], "--max-batch", "1", "--max-wait-ms", "0")
    try:
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda i: s.post({"inputs": [run["x"][i]]}), range(40)))
        # a compiled batch of 1 rounds differently from predict's batches of 1,024 (XLA picks
        # another kernel): the same numbers to float32 precision, not to the last printed digit
        for i, (st, b) in enumerate(replies):
            labels, probs = expect(run, [i])
            assert st == 200 and b["labels"] == labels
            assert np.max(np.abs(np.array(b["probabilities"]) - probs)) <= 1e-6
        _, health = s.get("/health")
        assert health["predict_calls"] == 40 and health["rows"] == 40
    finally:
        stop(s)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_in_flight_then_exits_0(run, sig):
    s = start(run["model"], "--max-wait-ms", "1500")   # a request waits 1.5 s for company: it is in flight
    try:
        result = {}
        t = threading.Thread(target=lambda: result.update(r=s.post({"inputs": run["x"][:5]}, timeout=30)))
        t.start()
        time.sleep(0.5)
        s.proc.send_signal(sig)
        t.join(timeout=30)
        assert s.proc.wait(timeout=30) == 0
        status, body = result["r"]
        assert status == 200 and (body["labels"], body["probabilities"]) == expect(run, range(5))
        with pytest.raises(OSError):
            s.request("GET", "/health", timeout=2)
    finally:
        stop(s)


def test_binds_loopback_by_default_and_bad_model(run, tmp_path):
    s = start(run["model"])
    try:
        assert s.host == "127.0.0.1"
    finally:
        stop(s)
    r = nncli("serve", str(tmp_path / "missing.h5"), "--port", "0", timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "not found" in r.stderr
