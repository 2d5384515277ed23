"""`nncli serve`: an HTTP prediction server with micro-batching (standard library only).

Endpoints: ``GET /health``, ``GET /info``, ``POST /predict``. A predict request
holds rows as ``{"instances": [{"col": value, ...}, ...]}`` (by column name, as
a CSV's header names them), ``{"inputs": [[...], ...]}`` (arrays in the
model's input shape) or a ``text/csv`` body with a header row. For a model
trained on typed CSV columns, instances and CSV rows hold the raw cells (words,
dates, nulls or missing tokens), encoded with the checkpoint's /columns as
``nncli predict`` encodes a file; values unseen in training are reported in the
reply's ``warnings`` (header ``X-Nncli-Warnings`` with ``Accept: text/csv``);
``inputs`` are then the encoded arrays. The reply holds
the numbers ``nncli predict`` prints for the same rows: the rows go through
the same normalisation and the same formatter (inference.format_predictions,
%.9g), and the JSON numbers are those printed cells (``Accept: text/csv``
returns the CSV text itself).

Micro-batching: one batcher thread owns the compiled predict function (a
fixed batch size, ``max_batch``; short batches are padded). It takes the first
waiting request, then joins any that arrive within ``max_wait_ms`` into the
same call, up to ``max_batch`` rows; a request with more rows spans calls.

Bad input is a 400 with ``{"error": "<one line>"}`` (the message the CLI would
print), an oversize body or too many rows a 413; a connection that stops
sending is dropped after ``timeout_s`` and never holds up others (one thread
per connection). ``stop()`` (SIGINT/SIGTERM in the CLI): stop accepting,
finish the requests in flight, then return.
"""

from __future__ import annotations

import csv
import io
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np

from nncli import __version__, data, functions, inference
from nncli.data.columns import Notes
from nncli.data.csv import parse_header
from nncli.data.jsonl import cell_text
from nncli.data.table import FLOAT32_MAX, preview
from nncli.errors import ConfigError, DataError, NncliError

SOURCE = "request body"   # how messages name the input, where the CLI names a file


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class _Job:
    x: np.ndarray
    out: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    left: int = 0
    error: BaseException | None = None


class Batcher:
    """Joins concurrent requests into calls of one compiled function of fixed batch size."""

    def __init__(self, fn: Callable, batch: int, input_shape, output_shape, max_wait_s: float):
        self.fn, self.batch, self.max_wait = fn, batch, max_wait_s
        self.output_shape = tuple(output_shape)
        self._buf = np.zeros((batch, *input_shape), np.float32)
        self._q: queue.Queue = queue.Queue()
        self.calls = 0
        self.rows = 0
        self._thread = threading.Thread(target=self._loop, name="nncli-batcher", daemon=True)
        self._thread.start()

    def predict(self, x: np.ndarray) -> np.ndarray:
        job = _Job(x, np.empty((len(x), *self.output_shape), np.float32), left=len(x))
        if len(x) == 0:
            return job.out
        self._q.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.out

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        carry = None   # (job, offset): a request larger than what was left of the last batch
        while True:
            cur = carry if carry is not None else (self._q.get(), 0)
            if cur[0] is None:
                return
            carry, segments, filled = None, [], 0
            deadline = time.monotonic() + self.max_wait
            stop = False
            while True:
                job, off = cur
                take = min(len(job.x) - off, self.batch - filled)
                self._buf[filled:filled + take] = job.x[off:off + take]
                segments.append((job, off, filled, take))
                filled += take
                if off + take < len(job.x):
                    carry = (job, off + take)
                    break
                if filled == self.batch:
                    break
                wait = deadline - time.monotonic()
                try:
                    nxt = self._q.get(timeout=wait) if wait > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                cur = (nxt, 0)
            self._buf[filled:] = 0.0
            try:
                out = np.asarray(self.fn(self._buf))
                error = None
            except Exception as exc:   # reported to the waiting requests (a 500: not their input)
                out, error = None, exc
            self.calls += 1
            self.rows += filled
            for job, off, at, take in segments:
                if error is not None:
                    job.error = error
                else:
                    job.out[off:off + take] = out[at:at + take]
                job.left -= take
                if job.left == 0 or error is not None:
                    job.done.set()
            if stop:
                return


class Service:
    """The model, its batcher and the request parsing; no HTTP here (tests call it directly too)."""

    def __init__(self, model_path: str, max_batch: int = 256, max_wait_ms: float = 5.0, max_rows: int = 100_000):
        if not 1 <= max_batch <= 65536:
            raise ConfigError(f"--max-batch {max_batch}: expected 1 to 65536")
        if not 0 <= max_wait_ms <= 10_000:
            raise ConfigError(f"--max-wait-ms {max_wait_ms}: expected 0 to 10000")
        self.model = inference.load_model(model_path)
        ck = self.model.ck
        self.columns = ck.columns   # typed CSV columns: requests hold raw cells (None: numbers)
        self.names = self.columns.raw_names if self.columns is not None else inference.input_names(ck, model_path)
        self.max_rows = max_rows
        compiled = functions.compile_predict(self.model.net, max_batch)
        self.batcher = Batcher(compiled.fn, max_batch, ck.input_shape, self.model.net.output_shape,
                               max_wait_ms / 1000.0)
        self.requests = 0

    # -- what the model takes -----------------------------------------------------

    def info(self) -> dict[str, Any]:
        ck = self.model.ck
        return {"model": self.model.path, "nncli_version": __version__, "checkpoint_nncli_version": ck.nncli_version,
                "created": ck.created, "epoch": ck.epoch, "task": ck.task, "loss": ck.loss,
                "input_shape": list(ck.input_shape),
                "inputs": ([{"name": c.name, "type": c.type} for c in self.columns.columns]
                           if self.columns is not None else [{"name": n, "type": "number"} for n in self.names]),
                "normalization": ck.normalizer.kind,
                "classes": ck.encoding.classes if ck.encoding.kind != "values" else None,
                "output": self._header(),
                "max_batch": self.batcher.batch, "max_wait_ms": self.batcher.max_wait * 1000.0,
                "max_rows": self.max_rows}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "requests": self.requests, "predict_calls": self.batcher.calls,
                "rows": self.batcher.rows}

    def _header(self) -> list[str]:
        text = inference.format_predictions(self.model, np.zeros((1, *self.model.net.output_shape), np.float32), True)
        return next(csv.reader(io.StringIO(text)))

    # -- parsing requests ---------------------------------------------------------

    def rows_from_json(self, body: bytes) -> tuple[np.ndarray, list[str]]:
        """The request's rows, normalised, and the warnings for the reply (unseen values)."""
        try:
            doc = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
        except UnicodeDecodeError as exc:
            raise DataError(f"{SOURCE}: not UTF-8 text (bad byte at offset {exc.start})") from None
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{SOURCE}: not valid JSON: {str(exc).splitlines()[0]}") from None
        if not isinstance(doc, dict) or len({"instances", "inputs"} & set(doc)) != 1:
            raise DataError(f'{SOURCE}: expected a JSON object with "instances" (rows by column name) or '
                            f'"inputs" (arrays of shape {list(self.model.ck.input_shape)}), not both')
        if "instances" in doc:
            return self._instances(doc["instances"])
        return self._arrays(doc["inputs"]), []

    def _check_count(self, n: int) -> None:
        if n > self.max_rows:
            raise RequestError(413, f"{SOURCE}: {n:,} rows; at most {self.max_rows:,} per request")

    def _instances(self, items: Any) -> tuple[np.ndarray, list[str]]:
        if not isinstance(items, list):
            raise DataError(f'{SOURCE}: "instances" must be a list of objects (one per row)')
        self._check_count(len(items))
        typed = self.columns is not None
        x = np.empty((len(items), len(self.names)), object if typed else np.float64)
        wanted = set(self.names)
        fill = self._fill() if typed else None
        for r, item in enumerate(items):
            if not isinstance(item, dict):
                raise DataError(f"{SOURCE}: instance {r}: expected an object of column: value, got {_kind(item)}")
            missing = [n for n in self.names if n not in item]
            if missing:
                unused = [k for k in item if k not in wanted and k != self.model.ck.y_name]
                raise DataError(f"{SOURCE}: instance {r}: the columns do not match the model's input columns: "
                                f"missing {preview(missing)}; not model inputs: "
                                f"{preview([str(u) for u in unused]) or 'none'}")
            for c, name in enumerate(self.names):
                x[r, c] = (cell_text(f"{SOURCE}: instance {r}", name, item[name], fill) if typed
                           else _number(item[name], f"instance {r}, column '{name}'"))
        if typed:
            return self._encoded(x, np.arange(len(items)), "instance")
        return self._finish(x.reshape((len(items), *self.model.ck.input_shape))), []

    def _fill(self) -> str | None:
        """The cell a JSON null stands for: a missing token of the training (as JSON lines read it)."""
        tokens = self.columns.missing_values
        return "" if "" in tokens else (tokens[0] if tokens else None)

    def _encoded(self, cells: np.ndarray, lines: np.ndarray, unit: str) -> tuple[np.ndarray, list[str]]:
        """Raw cells (rows, raw columns in the model's order) through the typed columns; errors
        and warnings name the row as `unit` N (an instance, or a CSV body's line)."""
        if len(cells) == 0:
            raise DataError(f"{SOURCE}: no rows")
        cells = np.char.strip(np.asarray(cells, dtype=str).reshape(len(cells), len(self.names)))
        notes = Notes()
        try:
            x = self.columns.encode(SOURCE, cells, lines, notes)
        except DataError as exc:
            raise DataError(exc.message.replace(f"{SOURCE}: line ", f"{SOURCE}: {unit} ", 1)) from None
        return self._finish(x), notes.lines(SOURCE)

    def _arrays(self, items: Any) -> np.ndarray:
        shape = tuple(self.model.ck.input_shape)
        if not isinstance(items, list):
            raise DataError(f'{SOURCE}: "inputs" must be a list of arrays of shape {list(shape)}')
        self._check_count(len(items))
        flat = int(np.prod(shape))
        x = np.empty((len(items), flat), np.float64)
        for r, item in enumerate(items):
            values = _flatten(item, shape, f"input {r}")
            x[r] = values
        return self._finish(x.reshape((len(items), *shape)))

    def rows_from_csv(self, body: bytes) -> tuple[np.ndarray, list[str]]:
        """The request's rows, normalised, and the warnings for the reply (unseen values)."""
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{SOURCE}: not UTF-8 text (bad byte at offset {exc.start})") from None
        if "\x00" in text:
            raise DataError(f"{SOURCE}: contains NUL bytes; expected CSV text")
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
        except csv.Error as exc:
            raise DataError(f"{SOURCE}: malformed CSV: {exc}") from None
        while rows and not any(c.strip() for c in rows[-1]):
            rows.pop()
        if not rows:
            raise DataError(f"{SOURCE}: empty; expected a header row and data rows")
        names = parse_header(SOURCE, rows[0], "add a header row with the model's input names")
        body_rows = rows[1:]
        self._check_count(len(body_rows))
        for i, row in enumerate(body_rows):
            if len(row) != len(names):
                raise DataError(f"{SOURCE}: line {i + 2}: expected {len(names)} columns as in the header, got {len(row)}")
        cells = np.array(body_rows, dtype=str).reshape(len(body_rows), len(names))
        idx, _, shown = data.model_columns(SOURCE, names, len(names), self.names, self.model.ck.y_name,
                                           with_targets=False, by_position=False)
        if self.columns is not None:
            return self._encoded(cells[:, idx], np.arange(len(body_rows)) + 2, "line")
        x = data.to_float(SOURCE, cells[:, idx], [shown[i] for i in idx], row_offset=2)
        return self._finish(x.reshape((len(body_rows), *self.model.ck.input_shape))), []

    def _finish(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            raise DataError(f"{SOURCE}: no rows")
        return self.model.ck.normalizer.apply(x.astype(np.float32))

    # -- answering ----------------------------------------------------------------

    def predict(self, x: np.ndarray) -> str:
        """Normalised rows -> the CSV text `nncli predict` prints for them."""
        self.requests += 1
        return inference.format_predictions(self.model, self.batcher.predict(x), True)

    def as_json(self, text: str) -> dict[str, Any]:
        rows = list(csv.reader(io.StringIO(text)))
        body = rows[1:]
        enc = self.model.ck.encoding
        if enc.kind != "values":
            return {"classes": list(enc.classes), "labels": [r[0] for r in body],
                    "probabilities": [[float(v) for v in r[1:]] for r in body]}
        return {"columns": rows[0], "values": [[float(v) for v in r] for r in body]}


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), type(value).__name__)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{SOURCE}: {where}: expected a number, got {_kind(value)}")
    v = float(value)
    if not np.isfinite(v) or abs(v) > FLOAT32_MAX:
        raise DataError(f"{SOURCE}: {where}: {value!r} is not a finite float32 number")
    return v


def _flatten(item: Any, shape: tuple[int, ...], where: str) -> list[float]:
    """A nested list of the exact `shape`, flattened, each value checked."""
    out: list[float] = []

    def walk(v, depth, path):
        if depth == len(shape):
            out.append(_number(v, f"{where}{path}"))
            return
        if not isinstance(v, list) or len(v) != shape[depth]:
            got = f"{len(v)} values" if isinstance(v, list) else _kind(v)
            raise DataError(f"{SOURCE}: {where}{path}: expected a list of {shape[depth]} values "
                            f"(input shape {list(shape)}), got {got}")
        for i, e in enumerate(v):
            walk(e, depth + 1, f"{path}[{i}]")

    walk(item, 0, "")
    return out


# --- HTTP --------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    server_version = f"nncli/{__version__}"
    service: Service
    max_body: int
    timeout = 10.0          # seconds a connection may stay silent (socket timeout)
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002  (quiet: no line per request)
        pass

    def _send(self, status: int, payload: Any, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        body = payload.encode("utf-8") if isinstance(payload, str) else \
            json.dumps(payload, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():  # ASCII, one line: a client's text can neither
            text = value.encode("ascii", "backslashreplace").decode("ascii")  # break nor add a header
            self.send_header(name, "".join(ch if " " <= ch <= "~" else "?" for ch in text)[:8192])
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def do_GET(self):  # noqa: N802
        try:
            self._get()
        except Exception as exc:   # an nncli bug: still an answer
            self._error(500, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def _get(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._send(200, self.service.health())
        elif path == "/info":
            self._send(200, self.service.info())
        elif path == "/predict":
            self._error(405, "use POST /predict")
        else:
            self._error(404, f"no endpoint {path[:100]}; endpoints: GET /health, GET /info, POST /predict")

    def do_POST(self):  # noqa: N802
        path = self.path.split("?", 1)[0]
        length = self.headers.get("Content-Length")
        if path != "/predict":
            self.close_connection = True
            self._error(404, f"no endpoint POST {path[:100]}; predictions: POST /predict")
            return
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._error(411, "send the body with a Content-Length (no chunked transfer encoding)")
            return
        try:
            n = int(length) if length is not None else -1
        except ValueError:
            n = -1
        if n < 0:
            self.close_connection = True
            self._error(411, "a POST /predict needs a Content-Length header")
            return
        if n > self.max_body:
            self.close_connection = True   # the body is not read
            self._error(413, f"request body of {n:,} bytes; at most {self.max_body:,} (--max-body-mb)")
            return
        try:
            body = self.rfile.read(n)
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if len(body) < n:   # the client went away
            self.close_connection = True
            return
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        try:
            # text/csv: CSV; anything else (application/json, curl -d's form type) is read as JSON
            x, warnings = (self.service.rows_from_csv(body) if ctype == "text/csv"
                           else self.service.rows_from_json(body))
            text = self.service.predict(x)
        except RequestError as exc:
            self._error(exc.status, exc.message)
            return
        except NncliError as exc:
            self._error(400, exc.message)
            return
        except MemoryError:
            self._error(413, f"{SOURCE}: too large for this server's memory")
            return
        except Exception as exc:   # an nncli bug, not the client's input
            self._error(500, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return
        if "text/csv" in (self.headers.get("Accept") or ""):
            self._send(200, text, "text/csv", {"X-Nncli-Warnings": " | ".join(warnings)} if warnings else None)
        else:
            self._send(200, {**self.service.as_json(text), **({"warnings": warnings} if warnings else {})})


class Server(ThreadingHTTPServer):
    daemon_threads = False       # server_close() waits for the requests in flight
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128     # listen backlog (the default 5 resets bursts of clients)


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8000, max_body_mb: float = 10.0,
                timeout_s: float = 10.0) -> Server:
    if not 0 < max_body_mb <= 4096:
        raise ConfigError(f"--max-body-mb {max_body_mb}: expected more than 0, at most 4096")
    if not 0 < timeout_s <= 3600:
        raise ConfigError(f"--timeout-s {timeout_s}: expected more than 0, at most 3600")
    handler = type("BoundHandler", (Handler,), {"service": service, "max_body": int(max_body_mb * 1024 * 1024),
                                                "timeout": float(timeout_s)})
    try:
        return Server((host, port), handler)
    except OSError as exc:
        raise NncliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def url(server: Server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}"


def run(server: Server, service: Service, stop: threading.Event) -> None:
    """Serve until `stop` is set; then stop accepting, finish the requests in flight, stop the batcher."""
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="nncli-http")
    loop.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()       # no new connections
        loop.join()
        server.server_close()   # joins the request threads (the requests in flight finish)
        service.batcher.close()
