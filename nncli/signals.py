"""SIGINT and SIGTERM as a flag that a loop checks at its own safe points, never as an exception
raised in the middle of a write (an HDF5 checkpoint, or Optuna's journal lock, which a
KeyboardInterrupt between its rename and unlink leaves broken)."""

from __future__ import annotations

import signal
from contextlib import contextmanager


@contextmanager
def signals_to_flag(flag: dict):
    """While inside, SIGINT/SIGTERM set ``flag["signal"]`` to the signal's number. Outside the
    main thread, signals are left alone (Python delivers them to the main thread only)."""
    def handler(signum, frame):
        flag["signal"] = signum

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def exit_code(signum: int) -> int:
    """The shell's code for a process stopped by this signal: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)
