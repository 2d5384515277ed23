"""simple_rnn, lstm, gru and embedding against numpy references written here.

The references are explicit step loops over time with the same weights
(Keras' gate orders: lstm i, f, c, o; gru z, r, h with reset_after), so they
share no code with nncli. The graphs are compiled with the JAX backend, once
per fixture: forward passes in float32, gradients in float64 (checked
against central finite differences of the numpy references).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from click.testing import CliRunner

from support import CONFIGS, DATA, write_config

B, T, F, H = 3, 5, 4, 3          # batch, time, features, units
KINDS = ("simple_rnn", "lstm", "gru")
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}


# --- numpy references ---------------------------------------------------------

def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_step(kind, x_t, h, c, p):
    """One step of each cell, written out from the textbook equations."""
    n = H
    if kind == "simple_rnn":
        return np.tanh(x_t @ p["W"] + h @ p["U"] + p["b"]), None
    if kind == "lstm":
        Wi, Wf, Wc, Wo = (p["W"][:, k * n:(k + 1) * n] for k in range(4))
        Ui, Uf, Uc, Uo = (p["U"][:, k * n:(k + 1) * n] for k in range(4))
        bi, bf, bc, bo = (p["b"][k * n:(k + 1) * n] for k in range(4))
        i = sigmoid(x_t @ Wi + h @ Ui + bi)
        f = sigmoid(x_t @ Wf + h @ Uf + bf)
        g = np.tanh(x_t @ Wc + h @ Uc + bc)
        o = sigmoid(x_t @ Wo + h @ Uo + bo)
        c = f * c + i * g
        return o * np.tanh(c), c
    # gru, reset_after: the reset gate multiplies (h U_h + recurrent bias)
    Wz, Wr, Wh = (p["W"][:, k * n:(k + 1) * n] for k in range(3))
    Uz, Ur, Uh = (p["U"][:, k * n:(k + 1) * n] for k in range(3))
    bz, br, bh = (p["b"][k * n:(k + 1) * n] for k in range(3))
    rz, rr, rh = (p["b_recurrent"][k * n:(k + 1) * n] for k in range(3))
    z = sigmoid(x_t @ Wz + bz + h @ Uz + rz)
    r = sigmoid(x_t @ Wr + br + h @ Ur + rr)
    cand = np.tanh(x_t @ Wh + bh + r * (h @ Uh + rh))
    return z * h + (1 - z) * cand, None


def np_run(kind, x, p, reverse=False):
    """Hidden states (batch, time, units) in input time order."""
    h = np.zeros((x.shape[0], H), dtype=x.dtype)
    c = np.zeros_like(h)
    out = [None] * x.shape[1]
    steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    for t in steps:
        h, c = np_step(kind, x[:, t], h, c, p)
        out[t] = h
    return np.stack(out, axis=1)


def np_layer(kind, x, params, bidirectional, return_sequences):
    fwd = np_run(kind, x, {k: v for k, v in params.items() if not k.endswith("_reverse")})
    out = fwd if return_sequences else fwd[:, -1]
    if bidirectional:
        bwd = np_run(kind, x, {k[:-8]: v for k, v in params.items() if k.endswith("_reverse")}, reverse=True)
        out = np.concatenate([out, bwd if return_sequences else bwd[:, 0]], axis=-1)
    return out


# --- helpers ------------------------------------------------------------------

@contextlib.contextmanager
def float64_jax():
    """JAX in float64 for a block. PyTensor's JAX dispatch module sets x64 from floatX when it is
    first imported (at the first JAX compile), so it is imported before the switch."""
    import jax
    import pytensor.link.jax.dispatch  # noqa: F401

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def make_layer(kind, **config):
    from nncli.layers import LAYERS
    from nncli.schema import mapping

    cls = LAYERS.get(kind)
    return cls(f"{kind}_1", mapping(config, "", cls.keys))


def random_params(kind, rng, bidirectional=True, dtype="float32"):
    """The layer's own initial parameters, with every bias made non-zero so it is exercised."""
    layer = make_layer(kind, units=H, bidirectional=bidirectional)
    params = layer.init_params((T, F), rng)
    for k in params:
        if k.startswith("b"):
            params[k] = params[k] + rng.normal(0, 0.5, params[k].shape)
        params[k] = np.asarray(params[k], dtype=dtype)
    return params


# --- forward passes, float32, one compiled function ----------------------------

@pytest.fixture(scope="module")
def forward(jax_backend):
    """Outputs of every layer kind in three variants, and an embedding, from one compiled function."""
    import pytensor
    import pytensor.tensor as pt

    from nncli.layers import Context

    rng = np.random.default_rng(42)
    x_val = rng.normal(size=(B, T, F)).astype("float32")
    ids_val = np.array([[0, 1, 2, 9, 4], [5, 3, 3, 8, 1], [-3, 42, 1.6, 2.4, 7]], dtype="float32")
    x = pt.tensor("x", dtype="float32", shape=(B, T, F))
    ids = pt.tensor("ids", dtype="float32", shape=(B, T))
    ctx = Context(training=False)
    variants = {"bi_seq": dict(bidirectional=True, return_sequences=True),
                "bi_last": dict(bidirectional=True, return_sequences=False),
                "uni_last": dict(bidirectional=False, return_sequences=False),
                "uni_seq": dict(bidirectional=False, return_sequences=True)}
    values, outputs, keys, shapes = {}, [], [], {}
    for kind in KINDS:
        values[kind] = random_params(kind, rng)
        shared = {k: pytensor.shared(v, name=k) for k, v in values[kind].items()}
        for name, cfg in variants.items():
            layer = make_layer(kind, units=H, **cfg)
            shapes[kind, name] = layer.output_shape((T, F))
            p = shared if cfg["bidirectional"] else {k: v for k, v in shared.items() if not k.endswith("_reverse")}
            outputs.append(layer.linear(x, p, ctx))
            keys.append((kind, name))
    emb = make_layer("embedding", input_dim=10, output_dim=4)
    emb_w = emb.init_params((T,), rng)["W"]
    outputs.append(emb.linear(ids, {"W": pytensor.shared(emb_w)}, ctx))
    fn = pytensor.function([x, ids], outputs)
    got = fn(x_val, ids_val)
    return {"x": x_val, "params": values, "variants": variants, "shapes": shapes,
            "out": dict(zip(keys, got[:-1])), "emb": (ids_val, emb_w, got[-1], emb.output_shape((T,)))}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["bi_seq", "bi_last", "uni_last", "uni_seq"])
def test_forward_matches_numpy_step_loop(forward, kind, variant):
    cfg = forward["variants"][variant]
    params = forward["params"][kind]
    if not cfg["bidirectional"]:
        params = {k: v for k, v in params.items() if not k.endswith("_reverse")}
    want = np_layer(kind, forward["x"].astype(np.float64), {k: v.astype(np.float64) for k, v in params.items()},
                    **cfg)
    got = forward["out"][kind, variant]
    assert got.dtype == np.float32
    assert got.shape == (B, *forward["shapes"][kind, variant])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bidirectional_halves_are_forward_and_backward_passes(forward):
    x = forward["x"].astype(np.float64)
    for kind in KINDS:
        out = forward["out"][kind, "bi_seq"]
        params = {k: v.astype(np.float64) for k, v in forward["params"][kind].items()}
        assert out.shape == (B, T, 2 * H)
        # the forward half equals the unidirectional layer with the same weights
        np.testing.assert_allclose(out[:, :, :H], forward["out"][kind, "uni_seq"], rtol=1e-6, atol=1e-6)
        # the backward half read the reversed sequence: it equals a forward pass over x[:, ::-1], re-reversed
        back = np_run(kind, x[:, ::-1], {k[:-8]: v for k, v in params.items() if k.endswith("_reverse")})[:, ::-1]
        np.testing.assert_allclose(out[:, :, H:], back, rtol=1e-5, atol=1e-5)
        # without return_sequences: forward's last step, backward's final state (at step 0)
        last = forward["out"][kind, "bi_last"]
        np.testing.assert_allclose(last, np.concatenate([out[:, -1, :H], out[:, 0, H:]], axis=1), rtol=1e-6,
                                   atol=1e-6)


def test_embedding_lookup_rounds_and_clips_ids(forward):
    ids, w, got, shape = forward["emb"]
    assert shape == (T, 4) and got.shape == (B, T, 4)
    want_ids = np.clip(np.rint(ids), 0, 9).astype(int)
    assert want_ids[2].tolist() == [0, 9, 2, 2, 7]   # -3 -> 0, 42 -> 9, 1.6 -> 2, 2.4 -> 2
    np.testing.assert_array_equal(got, w[want_ids])


# --- output shapes (validation time, nothing compiled) ---------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes(kind):
    assert make_layer(kind, units=7).output_shape((30, 2)) == (7,)
    assert make_layer(kind, units=7, return_sequences=True).output_shape((30, 2)) == (30, 7)
    assert make_layer(kind, units=7, bidirectional=True).output_shape((30, 2)) == (14,)
    assert make_layer(kind, units=7, bidirectional=True, return_sequences=True).output_shape((30, 2)) == (30, 14)


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_shapes_and_initialisation(kind):
    layer = make_layer(kind, units=5, bidirectional=True)
    p = layer.init_params((30, 2), np.random.default_rng(0))
    g = GATES[kind]
    names = ["W", "U", "b"] + (["b_recurrent"] if kind == "gru" else [])
    assert list(p) == names + [f"{n}_reverse" for n in names]
    for suffix in ("", "_reverse"):
        assert p["W" + suffix].shape == (2, g * 5) and p["U" + suffix].shape == (5, g * 5)
        assert p["b" + suffix].shape == (g * 5,)
        assert all(v.dtype == np.float32 for v in p.values())
        for k in range(g):  # each gate's recurrent block is orthogonal
            block = p["U" + suffix][:, k * 5:(k + 1) * 5].astype(np.float64)
            np.testing.assert_allclose(block.T @ block, np.eye(5), atol=1e-5)
    if kind == "lstm":  # unit_forget_bias: the forget gate (second block) starts at 1
        np.testing.assert_array_equal(p["b"], np.r_[np.zeros(5), np.ones(5), np.zeros(10)])
    else:
        assert not p["b"].any()
    assert list(make_layer(kind, units=5, use_bias=False).init_params((30, 2), np.random.default_rng(0))) == ["W", "U"]


# --- gradients, float64, vs central finite differences of the numpy reference ----

@pytest.fixture(scope="module")
def gradients(jax_backend):
    """d loss / d (x, every parameter) for each kind (bidirectional, all steps), computed in float64."""
    import pytensor
    import pytensor.tensor as pt

    from nncli.layers import Context

    rng = np.random.default_rng(7)
    x_val = rng.normal(size=(B, T, F))
    r_val = rng.normal(size=(B, T, 2 * H))           # loss = sum(out * R): every output element matters
    ids_val = np.array([[0, 1, 1, 9, 4], [5, 3, 3, 8, 1], [-3, 42, 1, 2, 7]], dtype=np.float64)
    inputs, outputs, values, index = [], [], {}, []
    x = pt.tensor("x", dtype="float64", shape=(B, T, F))
    ctx = Context(training=True)
    for kind in KINDS:
        values[kind] = random_params(kind, rng, dtype="float64")
        sym = {k: pt.tensor(k, dtype="float64", shape=v.shape) for k, v in values[kind].items()}
        out = make_layer(kind, units=H, bidirectional=True, return_sequences=True).linear(x, sym, ctx)
        loss = pt.sum(out * r_val)
        names = list(sym)
        outputs += [loss, *pytensor.grad(loss, [x, *sym.values()])]
        inputs += list(sym.values())
        index.append((kind, names))
    emb_w = rng.normal(size=(10, 4))
    emb_r = rng.normal(size=(B, T, 4))
    w = pt.tensor("emb_w", dtype="float64", shape=emb_w.shape)
    ids = pt.tensor("ids", dtype="float64", shape=(B, T))
    emb_loss = pt.sum(make_layer("embedding", input_dim=10, output_dim=4).linear(ids, {"W": w}, ctx) * emb_r)
    outputs += [emb_loss, pytensor.grad(emb_loss, w)]
    with float64_jax():   # float64 through JAX for this fixture only
        fn = pytensor.function([x, *inputs, w, ids], outputs)
        args = [x_val] + [values[k][n] for k, names in index for n in names] + [emb_w, ids_val]
        got = [np.asarray(v) for v in fn(*args)]
    result, i = {}, 0
    for kind, names in index:
        result[kind] = {"loss": got[i], "x": got[i + 1], **dict(zip(names, got[i + 2:i + 2 + len(names)]))}
        i += 2 + len(names)
    return {"x": x_val, "r": r_val, "params": values, "grads": result,
            "emb": (ids_val, emb_w, emb_r, got[i], got[i + 1])}


def central_differences(f, value, eps=1e-6):
    grad = np.zeros_like(value)
    flat, g = value.reshape(-1), grad.reshape(-1)
    for j in range(flat.size):
        old = flat[j]
        flat[j] = old + eps
        up = f()
        flat[j] = old - eps
        down = f()
        flat[j] = old
        g[j] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_finite_differences(gradients, kind):
    x = gradients["x"].copy()
    params = {k: v.copy() for k, v in gradients["params"][kind].items()}
    got = gradients["grads"][kind]
    assert got["x"].dtype == np.float64

    def loss():
        return float(np.sum(np_layer(kind, x, params, True, True) * gradients["r"]))

    np.testing.assert_allclose(got["loss"], loss(), rtol=1e-10)
    np.testing.assert_allclose(got["x"], central_differences(loss, x), rtol=1e-6, atol=1e-8)
    for name in params:
        np.testing.assert_allclose(got[name], central_differences(loss, params[name]), rtol=1e-6, atol=1e-8,
                                   err_msg=f"{kind} d/d{name}")


@pytest.mark.parametrize("kind, activations", [
    ("simple_rnn", {"activation": "elu"}),
    ("lstm", {"activation": "softplus", "recurrent_activation": "tanh"}),
    ("gru", {"activation": "leaky_relu", "recurrent_activation": "softplus"}),
])
def test_backward_pass_with_other_activations_matches_finite_differences(jax_backend, kind, activations):
    """The hand-arranged backward (nncli/layers/recurrence.py) differentiates any activation: checked against
    central differences of the layer's own compiled forward pass, last state only, float64."""
    import pytensor
    import pytensor.tensor as pt

    from nncli.layers import Context

    rng = np.random.default_rng(3)
    params = random_params(kind, rng, bidirectional=False, dtype="float64")
    x_val = rng.normal(size=(B, T, F))
    r_val = rng.normal(size=(B, H))
    x = pt.tensor("x", dtype="float64", shape=(B, T, F))
    sym = {k: pt.tensor(k, dtype="float64", shape=v.shape) for k, v in params.items()}
    out = make_layer(kind, units=H, **activations).linear(x, sym, Context(training=True))
    loss = pt.sum(out * r_val)
    with float64_jax():
        grad_fn = pytensor.function([x, *sym.values()], pytensor.grad(loss, [x, *sym.values()]))
        loss_fn = pytensor.function([x, *sym.values()], loss)
        got = grad_fn(x_val, *params.values())
        assert got[0].dtype == np.float64
        values = [x_val, *params.values()]
        for i, name in enumerate(["x", *params]):
            want = central_differences(lambda: float(loss_fn(*values)), values[i])
            # atol 1e-6: in about one full-suite run in three, part of this float64 gradient came out at
            # float32 precision (errors up to 6e-8 on gradients of size ~1; never when run alone), a
            # PyTensor/JAX state quirk after the suite's float32 compiles. A wrong backward pass is off
            # by 1e-2 and more (dropping GRU's direct h_{t-1} term fails every element).
            np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-6, err_msg=f"{kind} d/d{name}")


@pytest.mark.parametrize("kind, fused", [("lstm", True), ("gru", True), ("lstm", False)],
                         ids=["lstm", "gru", "lstm-per-gate"])
def test_backward_pass_without_jax_matches_finite_differences(kind, fused, monkeypatch):
    """The same layer graph under PyTensor's own FAST_COMPILE mode (Python/C thunks, no JAX), float64:
    the scan, the OpFromGraph and its pullback run on a second backend; the forward loop's h U as one
    product for all gates (the default) and as one per gate block (recurrence.FUSED_GATES)."""
    import pytensor
    import pytensor.tensor as pt

    from nncli.layers import Context, recurrence

    monkeypatch.setattr(recurrence, "FUSED_GATES", fused)

    rng = np.random.default_rng(11)
    params = random_params(kind, rng, dtype="float64")
    x_val = rng.normal(size=(B, T, F))
    r_val = rng.normal(size=(B, 2 * H))
    x = pt.tensor("x", dtype="float64", shape=(B, T, F))
    sym = {k: pt.tensor(k, dtype="float64", shape=v.shape) for k, v in params.items()}
    out = make_layer(kind, units=H, bidirectional=True).linear(x, sym, Context(training=True))
    loss = pt.sum(out * r_val)
    fn = pytensor.function([x, *sym.values()], [loss, *pytensor.grad(loss, [x, *sym.values()])],
                           mode="FAST_COMPILE")
    got = fn(x_val, *params.values())

    def reference():
        return float(np.sum(np_layer(kind, x_val, params, True, False) * r_val))

    np.testing.assert_allclose(got[0], reference(), rtol=1e-10)
    values = {"x": x_val, **params}
    for g, (name, value) in zip(got[1:], values.items()):
        np.testing.assert_allclose(g, central_differences(reference, value), rtol=1e-6, atol=1e-8,
                                   err_msg=f"{kind} d/d{name}")


def test_embedding_gradient_accumulates_rows(gradients):
    ids, w, r, loss, grad = gradients["emb"]
    rows = np.clip(np.rint(ids), 0, 9).astype(int)
    np.testing.assert_allclose(loss, np.sum(w[rows] * r), rtol=1e-12)
    want = np.zeros_like(w)
    np.add.at(want, rows.reshape(-1), r.reshape(-1, 4))   # repeated ids add up; unused rows stay 0
    np.testing.assert_allclose(grad, want, rtol=1e-12, atol=1e-12)


# --- shape validation -------------------------------------------------------------

def spec_for(layers, loss="mse"):
    from nncli import spec

    return spec.from_dict({"data": {"train": str(DATA / "adding.h5")}, "layers": layers, "loss": loss},
                          "test.yaml")


@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_layer_on_1d_input_is_a_config_error_naming_the_layer(kind):
    from nncli import network
    from nncli.errors import ConfigError

    s = spec_for([{"type": "dense", "units": 4}, {"type": kind, "units": 8}, {"type": "dense", "units": 1}])
    with pytest.raises(ConfigError) as info:
        network.build(s, (64,))
    msg = str(info.value)
    assert f"layers[1]: {kind} '{kind}_2'" in msg
    assert "expects 2-D (time, features) input per example, got shape (4,)" in msg
    assert "{type: reshape, shape: [4, 1]}" in msg


def test_recurrent_layer_on_3d_input_suggests_a_reshape():
    from nncli import network
    from nncli.errors import ConfigError

    with pytest.raises(ConfigError, match=r"got shape \(1, 8, 8\).*shape: \[1, 64\]"):
        network.build(spec_for([{"type": "lstm", "units": 8}]), (1, 8, 8))


def test_stacked_and_embedded_networks_validate():
    from nncli import network

    net = network.build(spec_for([{"type": "embedding", "input_dim": 20, "output_dim": 6},
                                  {"type": "gru", "units": 8, "return_sequences": True, "bidirectional": True},
                                  {"type": "lstm", "units": 5},
                                  {"type": "dense", "units": 1}]), (12,))
    assert net.shapes == [(12, 6), (12, 16), (5,), (1,)]
    params, _ = net.initial_values(np.random.default_rng(0))
    assert params["gru_2/W"].shape == (6, 24) and params["gru_2/U_reverse"].shape == (8, 24)
    assert params["lstm_3/W"].shape == (16, 20)
    # the recurrent layer ends the search for the network's output activation
    net = network.build(spec_for([{"type": "simple_rnn", "units": 3, "activation": "sigmoid"}]), (4, 2))
    assert net.last_activation is None


def test_cli_rejects_an_lstm_on_flat_csv_data(tmp_path):
    from nncli.cli import main

    csv = tmp_path / "flat.csv"
    csv.write_text("a,b,c,y\n" + "".join(f"{i},{i + 1},{i + 2},{i % 2}\n" for i in range(8)))
    config = write_config(tmp_path, f"data: {{train: {csv}}}\n"
                                    "layers:\n  - {type: lstm, units: 4}\n  - {type: dense, units: 1}\n")
    r = CliRunner().invoke(main, ["train", str(config), "-o", str(tmp_path / "out"), "-q"])
    assert r.exit_code == 2
    assert "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("Error:") and "layers[0]" in line and "lstm 'lstm_1'" in line
    assert "got shape (3,)" in line and "shape: [3, 1]" in line
    assert not (tmp_path / "out" / "model.h5").exists()


# --- the shipped examples (accuracy checks) -----------------------------------------

@pytest.mark.accuracy
def test_adding_lstm_reaches_test_mse_below_001(tmp_path, jax_backend):
    from nncli import inference
    from nncli.training import trainer

    # 5 of the config's 10 epochs already reach test MSE ~0.001 (predicting the mean: ~0.167)
    result = trainer.train(CONFIGS / "adding-lstm.yaml", output=str(tmp_path / "run"), epochs=5,
                           backend_name="jax")
    assert result.test is not None and result.test["loss"] < 0.01
    ev = inference.evaluate(tmp_path / "run" / "model.h5", str(DATA / "adding-test.h5"))
    assert ev.examples == 1000
    assert ev.metrics["loss"] < 0.01
    assert ev.metrics["loss"] == pytest.approx(result.test["loss"])


@pytest.mark.accuracy
def test_sequence_rnn_reaches_095_on_the_majority_test_set(tmp_path, jax_backend):
    from nncli import inference
    from nncli.training import trainer

    # 15 of the config's 60 epochs reach ~0.99 (the full config: 0.999)
    trainer.train(CONFIGS / "sequence-rnn.yaml", output=str(tmp_path / "run"), epochs=15, backend_name="jax")
    ev = inference.evaluate(tmp_path / "run" / "model.h5", str(DATA / "majority-test.h5"))
    assert ev.metrics["accuracy"] >= 0.95
