"""inference.outputs_ahead: predict's pipeline runs the next piece of input in a worker thread
while the caller writes this one. The outputs are those of the whole input run in one go, in
order and in whole batches, and an error of the reader surfaces in the caller, after the outputs
before it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from nncli import inference
from nncli.errors import DataError


@pytest.fixture
def fake_run(monkeypatch):
    """A _runner whose 'network' doubles its input, noting the thread and the rows of each call."""
    calls = []

    def runner(model):
        def run(x):
            calls.append((threading.current_thread().name, len(x)))
            return 2 * x
        return run
    monkeypatch.setattr(inference, "_runner", runner)
    monkeypatch.setattr(inference, "PREDICT_BATCH", 1024)
    monkeypatch.setattr(inference, "PREDICT_CHUNK_ROWS", 3000)   # pieces of 2 batches, 2048 rows
    return calls


def test_outputs_are_the_whole_inputs_run_in_order_in_whole_batches(fake_run):
    rng = np.random.default_rng(0)
    chunks = [rng.random((5000, 3)), rng.random((7, 3)), rng.random((2048, 3))]
    outs = list(inference.outputs_ahead(None, iter(chunks)))
    np.testing.assert_array_equal(np.concatenate(outs), 2 * np.concatenate(chunks))
    assert [n for _, n in fake_run] == [2048, 2048, 904, 7, 2048]
    assert all(name.startswith("nncli-predict") for name, _ in fake_run)


def test_a_reader_error_comes_after_the_outputs_before_it(fake_run):
    def chunks():
        yield np.ones((10, 2))
        yield np.ones((20, 2))
        raise DataError("in.csv: line 33, column 'a': expected a number, got 'x'")

    got = []
    with pytest.raises(DataError, match="line 33"):
        for out in inference.outputs_ahead(None, chunks()):
            got.append(len(out))
    assert got == [10, 20]


def test_a_writer_stopping_early_stops_the_worker(fake_run):
    pieces = (np.ones((10, 2)) for _ in range(100))
    ahead = inference.outputs_ahead(None, pieces)
    next(ahead)
    ahead.close()  # as when writing fails: the pool is shut down, at most one piece ahead was run
    assert len(fake_run) <= 2
