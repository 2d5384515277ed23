"""How training talks to the user; the library prints only through these objects.

``Reporter`` writes plain lines (one per epoch) to a stream; ``BarReporter``
adds a tqdm bar per epoch when the stream is a terminal; ``Silent`` says
nothing. Messages go to stderr so stdout stays free for results (JSON logs).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def fmt_logs(logs: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items())


class Silent:
    def info(self, message: str) -> None:
        pass

    def epoch_start(self, epoch: int, epochs: int, batches: int, start_batch: int = 0) -> None:
        pass

    def learning_rate(self, value: float) -> None:
        """The learning rate of the epoch about to start (called before epoch_start)."""
        pass

    def batch(self, done: int, logs: dict[str, float], samples: int) -> None:
        pass

    def epoch_end(self, epoch: int, epochs: int, logs: dict[str, float], seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


class Reporter(Silent):
    """Plain text: one line per message and per epoch, no bar fragments in log files."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr

    def info(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def epoch_end(self, epoch, epochs, logs, seconds):
        width = len(str(epochs))
        self.info(f"epoch {epoch:>{width}}/{epochs}  {fmt_logs(logs)}  ({seconds:.2f}s)")


class BarReporter(Reporter):
    """A tqdm bar per epoch (loss, running metric, samples/s), then the epoch line."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__(stream)
        self.bar = None
        self.t0 = 0.0

    def epoch_start(self, epoch, epochs, batches, start_batch=0):
        from tqdm import tqdm

        self.bar = tqdm(total=batches, initial=start_batch, desc=f"epoch {epoch}/{epochs}", file=self.stream,
                        leave=False, dynamic_ncols=True, mininterval=0.2, unit="batch")
        self.t0 = time.perf_counter()

    def batch(self, done, logs, samples):
        if self.bar is None:
            return
        self.bar.update(1)
        rate = samples / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{fmt_logs(logs)}  {rate:,.0f} samples/s", refresh=False)

    def epoch_end(self, epoch, epochs, logs, seconds):
        self.close()
        super().epoch_end(epoch, epochs, logs, seconds)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonReporter(Silent):
    """`nncli train --log-json`: one JSON object per epoch on `out` (stdout), for scripts.

    {"epoch": 3, "epochs": 10, "loss": ..., <metrics>, "val_loss": ..., "learning_rate": ..., "seconds": ...}
    Non-finite values are written as null (strict JSON). Messages go to `messages` (a
    reporter on stderr, or Silent with --quiet), so stdout holds nothing but the JSON lines.
    """

    def __init__(self, out: TextIO | None = None, messages: Silent | None = None):
        self.out = out or sys.stdout
        self.messages = messages if messages is not None else Reporter(sys.stderr)
        self.lr: float | None = None

    def info(self, message: str) -> None:
        self.messages.info(message)

    def learning_rate(self, value: float) -> None:
        self.lr = value

    def epoch_end(self, epoch, epochs, logs, seconds):
        import json
        import math

        record = {"epoch": epoch, "epochs": epochs, **logs, "learning_rate": self.lr, "seconds": seconds}
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        print(json.dumps(record), file=self.out, flush=True)


class TrialLines:
    """A sweep's progress: one line per finished trial (log files, pipes)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr

    def trial(self, line: str, done: int, total: int, best: str) -> None:
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class TrialBar(TrialLines):
    """On a terminal: a tqdm bar over the sweep's trials, the best value so far as its postfix,
    and each finished trial's line printed above it."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__(stream)
        self.bar = None

    def trial(self, line: str, done: int, total: int, best: str) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc="trials", unit="trial", file=self.stream, dynamic_ncols=True)
        self.bar.write(line, file=self.stream)
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(best)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def for_trials(stream: TextIO | None = None) -> TrialLines:
    """A tqdm bar over trials when `stream` is a terminal, else one line per trial."""
    stream = stream if stream is not None else sys.stderr
    return TrialBar(stream) if getattr(stream, "isatty", lambda: False)() else TrialLines(stream)


def for_stream(stream: TextIO | None = None, quiet: bool = False) -> Silent:
    stream = stream or sys.stderr
    if quiet:
        return Silent()
    return BarReporter(stream) if getattr(stream, "isatty", lambda: False)() else Reporter(stream)
