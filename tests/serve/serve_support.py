"""What the serve tests share: `nncli` as a subprocess, a real server started with --port 0 (its
URL read from its own banner) and stopped, and a small HTTP client."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]


def nncli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "nncli.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


class Running:
    def __init__(self, proc, url):
        self.proc, self.url = proc, url
        u = urlparse(url)
        self.host, self.port = u.hostname, u.port

    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.getheader("Content-Type"), r.read()
        finally:
            conn.close()

    def post(self, doc, **kw):
        status, _, body = self.request("POST", "/predict", json.dumps(doc).encode(),
                                       {"Content-Type": "application/json"}, **kw)
        return status, json.loads(body)

    def get(self, path):
        status, _, body = self.request("GET", path)
        return status, json.loads(body)


def start(model, *extra, wait=120) -> Running:
    proc = subprocess.Popen([sys.executable, "-m", "nncli.cli", "serve", str(model), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines = []

    def read():
        for line in proc.stderr:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for line in list(lines):
            if " on http://" in line:
                return Running(proc, line.split(" on ", 1)[1].split()[0])
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not start: {''.join(lines)}")


def stop(server: Running):
    if server.proc.poll() is None:
        server.proc.kill()
    server.proc.wait(timeout=30)
