"""Throughput and latency of `nncli serve`, with and without micro-batching.

    python bench/bench_serve.py MODEL.h5 [--requests 2000] [--clients 16] [--rows 1]

Starts `nncli serve MODEL --port 0` twice as a real subprocess on 127.0.0.1:
once with the defaults (--max-batch 256 --max-wait-ms 5) and once with
--max-batch 1 --max-wait-ms 0 (one call of the compiled function per request,
as `ludwig serve` does), sends the same requests from --clients threads
(keep-alive connections, JSON {"inputs": ...} of --rows rows each), and prints
requests/s, rows/s and p50/p99 latency for each. The client threads share the
machine with the server: on few cores the figures include the client's cost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def start(model: str, extra: list[str]):
    proc = subprocess.Popen([sys.executable, "-m", "nncli.cli", "serve", model, "--port", "0", *extra],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if " on http://" in line:
            host, port = line.split(" on http://", 1)[1].split()[0].rsplit(":", 1)
            return proc, host, int(port)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("the server did not start")


def measure(model: str, extra: list[str], bodies: list[bytes], clients: int, rows: int) -> dict:
    proc, host, port = start(model, extra)
    try:
        latencies: list[float] = []
        lock = threading.Lock()
        it = iter(range(len(bodies)))

        def client():
            conn = http.client.HTTPConnection(host, port, timeout=60)
            mine = []
            while True:
                with lock:
                    i = next(it, None)
                if i is None:
                    break
                t0 = time.perf_counter()
                conn.request("POST", "/predict", bodies[i], {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise SystemExit(f"status {r.status}")
                mine.append(time.perf_counter() - t0)
            conn.close()
            with lock:
                latencies.extend(mine)

        # warm-up: the first calls of the compiled function
        warm = http.client.HTTPConnection(host, port, timeout=60)
        for b in bodies[:20]:
            warm.request("POST", "/predict", b, {"Content-Type": "application/json"})
            warm.getresponse().read()
        warm.close()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/health")
        health = json.loads(conn.getresponse().read())
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    lat = np.array(latencies) * 1000
    return {"requests_s": len(bodies) / wall, "rows_s": len(bodies) * rows / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "calls": health["predict_calls"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rows", type=int, default=1, help="rows per request")
    args = ap.parse_args()
    import h5py

    with h5py.File(args.model, "r") as f:
        shape = tuple(int(d) for d in f["model"].attrs["input_shape"])
    rng = np.random.default_rng(0)
    bodies = [json.dumps({"inputs": rng.normal(size=(args.rows, *shape)).round(4).tolist()}).encode()
              for _ in range(args.requests)]
    print(f"{args.model}: {args.requests} requests of {args.rows} row(s), {args.clients} client threads")
    print(f"{'server':<40} {'req/s':>8} {'rows/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'calls':>6}")
    for label, extra in (("micro-batching (--max-batch 256 --max-wait-ms 5)", []),
                         ("none (--max-batch 1 --max-wait-ms 0)", ["--max-batch", "1", "--max-wait-ms", "0"])):
        r = measure(args.model, extra, bodies, args.clients, args.rows)
        print(f"{label:<40} {r['requests_s']:>8.0f} {r['rows_s']:>9.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
              f"{r['calls']:>6}")


if __name__ == "__main__":
    main()
