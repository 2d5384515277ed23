"""The compiled functions (nncli/functions.py), each number against a numpy forward pass: the
predict function over an array of any length (padding removed), and the exact mean of run_sums
over the real examples of padded batches."""

from __future__ import annotations

import numpy as np
import pytest

from nncli import data, functions, network, spec

# PyTensor's JAX dispatch asks for 64-bit index types that JAX (x64 off) truncates: expected here
pytestmark = pytest.mark.filterwarnings("ignore:Explicitly requested dtype")


@pytest.fixture(scope="module")
def dense(jax_backend, tmp_path_factory):
    """A softmax layer with known weights: (net, W, b)."""
    train_file = tmp_path_factory.mktemp("functions") / "unused.h5"   # the spec wants a data file name
    train_file.touch()
    s = spec.from_dict({"data": {"train": str(train_file)},
                        "layers": [{"type": "dense", "units": 3, "activation": "softmax"}]}, "functions")
    net = network.build(s, (4,))
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    net.create_shared({"dense_1/W": W, "dense_1/b": b}, {})
    return net, W, b


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("rows", [1, 7, 8, 21])
def test_predict_array_gives_every_row_once(dense, rows):
    net, W, b = dense
    x = np.random.default_rng(rows).normal(size=(rows, 4)).astype(np.float32)
    fn = functions.compile_predict(net, 8)   # 21 rows: two full batches and one padded with 3 rows
    out = functions.predict_array(fn, x)
    assert out.shape == (rows, 3)
    np.testing.assert_allclose(out, softmax(x @ W + b), rtol=1e-5, atol=1e-6)


def test_predict_array_of_no_rows_has_the_output_shape(dense):
    net, _, _ = dense
    out = functions.predict_array(functions.compile_predict(net, 4), np.zeros((0, 4), np.float32))
    assert out.shape == (0, 3)


def test_run_sums_is_the_mean_over_real_examples(dense):
    net, W, b = dense
    rng = np.random.default_rng(5)
    x = rng.normal(size=(13, 4)).astype(np.float32)          # batches of 5: the last holds 3 real rows
    t = np.eye(3, dtype=np.float32)[rng.integers(0, 3, len(x))]
    fn = functions.compile_eval(net, "categorical_crossentropy", ["accuracy", "mse"], 5)
    got = functions.run_sums(fn, data.batches(x, t, 5))
    p = softmax((x @ W + b).astype(np.float64))
    want = {"loss": float(np.mean(-np.log((p * t).sum(axis=1)))),
            "accuracy": float(np.mean(p.argmax(axis=1) == t.argmax(axis=1))),
            "mse": float(np.mean((p - t) ** 2))}
    assert got == pytest.approx(want, rel=1e-5)
