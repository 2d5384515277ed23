"""Several training steps per compiled call (nncli/steps.py: compile_steps/compile_several):
the same updates as one call per minibatch, on both implementations (PyTensor's scan of the step
graph, and the JAX backend's lax.scan of the compiled step)."""

from __future__ import annotations

import numpy as np
import pytest

from nncli import functions, network, optimizers, spec, steps

# PyTensor's JAX dispatch asks for 64-bit index types that JAX (x64 off) truncates: expected here
pytestmark = pytest.mark.filterwarnings("ignore:Explicitly requested dtype")

BATCH = 8
N_BATCHES = 5


@pytest.fixture(scope="module")
def setup(jax_backend, tmp_path_factory):
    train_file = tmp_path_factory.mktemp("steps") / "unused.h5"   # the spec wants a data file name
    train_file.touch()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * N_BATCHES - 3, 4)).astype(np.float32)       # the last batch is padded
    t = np.eye(3, dtype=np.float32)[rng.integers(0, 3, len(x))]
    s = spec.from_dict({"data": {"train": str(train_file)}, "batch_size": BATCH, "optimizer": "adam",
                        "layers": [{"type": "dense", "units": 5, "activation": "tanh"},
                                   {"type": "dropout", "rate": 0.3},
                                   {"type": "dense", "units": 3, "activation": "softmax"}]}, "steps")
    return s, x, t


def train(setup, how: str, k: int):
    """Fresh shared variables from the same initial values; one epoch of minibatches through
    `k` steps per call; returns (final parameters and optimizer state, per-batch output rows)."""
    import pytensor

    from nncli import data

    s, x, t = setup
    net = network.build(s, x.shape[1:])
    params, state = net.initial_values(np.random.default_rng(1))
    net.create_shared(params, state)
    iterations = optimizers.iterations_variable()
    lr = pytensor.shared(np.asarray(0.05, dtype="float32"))
    graph, opt_state = functions.train_graph(net, "categorical_crossentropy", ["accuracy"],
                                         optimizers.create("adam", {}), lr, BATCH, iterations, seed=3)
    compiled = {"single": lambda: functions.compile_step(graph),
                "pytensor-scan": lambda: steps.compile_steps(graph, k),
                "jax-scan": lambda: steps.compile_several(graph, k, "jax")}[how]()
    rows = []
    for b0, count, out in steps.calls(compiled, data.batches(x, t, BATCH)):
        rows.extend(np.asarray(out, dtype=np.float64).reshape(-1, 2)[:count])
    values = {key: np.asarray(v.get_value()) for key, v in {**net.params, **opt_state.named()}.items()}
    return values, np.asarray(rows)


@pytest.fixture(scope="module")
def reference(setup):
    return train(setup, "single", 1)


@pytest.mark.parametrize("how", ["pytensor-scan", "jax-scan"])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_several_steps_per_call_equal_single_steps(setup, reference, how, k):
    values, rows = train(setup, how, k)
    ref_values, ref_rows = reference
    assert values["iterations"] == ref_values["iterations"] == N_BATCHES
    assert rows.shape == ref_rows.shape == (N_BATCHES, 2)
    np.testing.assert_allclose(rows, ref_rows, rtol=1e-5, atol=1e-6)
    for key in ref_values:
        np.testing.assert_allclose(values[key], ref_values[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_the_last_minibatches_of_an_epoch_run_one_by_one(setup):
    """5 minibatches in calls of 3: one call of 3, then 2 single steps."""
    calls = []

    class Fake:
        steps = 3

        def fn(*arrays):
            calls.append(("fn", arrays[0].shape))
            return np.zeros((3, 2))

        def single(*arrays):
            calls.append(("single", arrays[0].shape))
            return np.zeros(2)

    from nncli import data

    _, x, t = setup
    got = [(b0, count) for b0, count, _ in steps.calls(Fake, data.batches(x, t, BATCH))]
    assert got == [(0, 3), (3, 1), (4, 1)]
    assert calls == [("fn", (3, BATCH, 4)), ("single", (BATCH, 4)), ("single", (BATCH, 4))]
    got = [(b0, count) for b0, count, _ in steps.calls(Fake, data.batches(x, t, BATCH), first=1)]
    assert got == [(1, 3), (4, 1)]                         # a resumed epoch: calls count from there
