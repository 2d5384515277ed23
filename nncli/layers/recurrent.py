"""Recurrent layers (simple_rnn, lstm, gru) built with ``pytensor.scan``.

Input per example is a sequence, (time, features); the output is the last
hidden state, (units,), or every hidden state, (time, units), with
``return_sequences: true``. ``bidirectional: true`` runs a second,
independent set of weights over the reversed sequence and concatenates
the two outputs on the last axis (2 * units): with ``return_sequences`` the
backward outputs are re-reversed so that step t of both halves belongs to
input step t (Keras' ``Bidirectional``); without it, the backward half is
the backward pass's final state (the one that has read step 0 last).

The input projection ``x W + b`` of ALL time steps is one tensordot outside
the loop; ``scan`` runs only the recurrence ``h_{t-1} U``, with a hand-arranged
backward pass (nncli/layers/recurrence.py: why, and the measurements). The initial
state is zeros with the batch axis taken from the input's *static* shape
(nncli always compiles fixed-size batches), which the JAX backend needs
inside ``lax.scan``.

Equations (rows are examples, ``x_t W`` already includes the input bias b):

simple_rnn   h_t = act(x_t W + h_{t-1} U + b)                   act: tanh
lstm         Keras gate order i, f, c, o in W (F, 4H), U (H, 4H), b (4H):
             i = rec(.), f = rec(.), g = act(.), o = rec(.)   of  x_t W + h_{t-1} U + b
             c_t = f * c_{t-1} + i * g;   h_t = o * act(c_t)
             act: tanh, rec: sigmoid; unit_forget_bias sets b[H:2H] = 1 at init
gru          Keras 2 default / PyTorch convention (reset_after: true), Keras gate
             order z, r, h in W (F, 3H), U (H, 3H), input bias b (3H) and
             recurrent bias b_recurrent (3H):
             xz, xr, xh = split(x_t W + b);  hz, hr, hh = split(h_{t-1} U + b_recurrent)
             z = rec(xz + hz);  r = rec(xr + hr);  n = act(xh + r * hh)
             h_t = z * h_{t-1} + (1 - z) * n
             (PyTorch's nn.GRU is the same function with gates ordered r, z, n.)

Parameters are named W, U, b (and b_recurrent for gru); the backward
direction of a bidirectional layer has the same names with ``_reverse``
appended (PyTorch's suffix).
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.scalar import upcast

from nncli import activations, initializers
from nncli.layers.base import LAYERS, Layer, Shape, ShapeError, initializer_key
from nncli.layers.recurrence import recurrence
from nncli.schema import Key, boolean, integer, name_in


def _sequence_shape(layer_type: str, input_shape: Shape) -> tuple[int, int]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 2:
        return shape
    if len(shape) == 1:
        hint = (f"; reshape it, e.g. {{type: reshape, shape: [{shape[0]}, 1]}} (one feature per step), "
                f"or put an embedding layer first for token ids")
    elif len(shape) == 0:
        hint = "; the data has one value per example, not a sequence"
    else:
        hint = (f"; reshape it, e.g. {{type: reshape, shape: [{shape[0]}, {int(np.prod(shape[1:]))}]}} "
                f"(time = the first axis)")
    raise ShapeError(f"{layer_type} expects 2-D (time, features) input per example, got shape {shape}{hint}")


def _recurrent_keys(activation: str = "tanh", gates: bool = False) -> dict[str, Key]:
    keys = {
        "units": Key(integer(min=1, max=100_000), doc="size of the hidden state"),
        "activation": Key(name_in(activations.ACTIVATIONS), activation,
                          "activation inside the recurrence (applied by the layer itself)"),
    }
    if gates:
        keys["recurrent_activation"] = Key(name_in(activations.ACTIVATIONS), "sigmoid", "activation of the gates")
    keys.update({
        "return_sequences": Key(boolean(), False, "output every step (time, units) instead of the last (units,)"),
        "bidirectional": Key(boolean(), False, "also read the sequence backwards; concatenate (2 * units)"),
        "initializer": initializer_key("glorot_uniform"),
        "recurrent_initializer": Key(name_in(initializers.INITIALIZERS), "orthogonal",
                                     "initializer of the recurrent weights U"),
        "use_bias": Key(boolean(), True),
    })
    return keys


class _Recurrent(Layer):
    """Shared machinery; subclasses define `gates`, `_bias_init` and `_step`."""

    kind = "recurrent"
    type_name = ""          # the YAML word, in messages
    gates = 1               # blocks of `units` columns in W and U
    n_states = 1            # carried tensors (h; lstm: h and c)
    has_activation = False  # the activation lives inside the step

    def output_shape(self, input_shape):
        t, _ = _sequence_shape(self.type_name, input_shape)
        if t < 1:
            raise ShapeError(f"{self.type_name} needs at least one time step, got shape {tuple(input_shape)}")
        units = self.config["units"] * (2 if self.config["bidirectional"] else 1)
        return (t, units) if self.config["return_sequences"] else (units,)

    # -- parameters ------------------------------------------------------------

    def _bias_init(self) -> dict[str, np.ndarray]:
        return {"b": np.zeros(self.gates * self.config["units"], dtype="float32")}

    def _direction_params(self, features: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        h, g = self.config["units"], self.gates
        params = {"W": initializers.make(self.config["initializer"], (features, g * h), rng),
                  # one square block per gate, as Keras does: each gate's U is orthogonal on its own
                  "U": np.concatenate([initializers.make(self.config["recurrent_initializer"], (h, h), rng)
                                       for _ in range(g)], axis=1)}
        if self.config["use_bias"]:
            params.update(self._bias_init())
        return params

    def init_params(self, input_shape, rng):
        _, features = _sequence_shape(self.type_name, input_shape)
        params = self._direction_params(features, rng)
        if self.config["bidirectional"]:
            params.update({f"{k}_reverse": v for k, v in self._direction_params(features, rng).items()})
        return params

    # -- graph -----------------------------------------------------------------

    def _act(self, z):
        return activations.apply(self.config["activation"], z)

    def _rec(self, z):
        return activations.apply(self.config["recurrent_activation"], z)

    def _cell(self, pre: list, states: list) -> list:
        """The new states (h first) from the step's pre-activations (see `parts`); elementwise only."""
        raise NotImplementedError

    def _run(self, x, p: dict, reverse: bool):
        """One direction: returns the hidden states (batch, time, units), in input time order.

        nncli.layers.recurrence projects the input (x W + b, one product for all steps, outside
        the loop) and runs the loop (scan) and its hand-built backward pass.
        """
        h = self.config["units"]
        seq = x.dimshuffle(1, 0, 2)                                  # (T, B, features)
        if reverse:
            seq = seq[::-1]
        batch = x.type.shape[0]
        dtype = upcast(x.dtype, p["W"].dtype, p["U"].dtype)
        # the static batch size when there is one (JAX's lax.scan needs a concrete carry shape)
        h0 = pt.zeros((batch if batch is not None else x.shape[0], h), dtype=dtype)
        states = recurrence(seq, p["W"], p.get("b"), p["U"], p.get("b_recurrent"), [h0] * self.n_states, units=h,
                            gates=self.gates, parts=self.parts, cell=self._cell, name=f"{self.name}_loop")
        hs = states[0]                                               # (T, B, H)
        if reverse:
            hs = hs[::-1]
        return hs.dimshuffle(1, 0, 2)

    def linear(self, x, params, ctx):
        if x.ndim != 3:
            raise ShapeError(f"{self.name}: expects a 3-D (batch, time, features) input, got {x.ndim}-D")
        forward = self._run(x, {k: v for k, v in params.items() if not k.endswith("_reverse")}, False)
        seq = self.config["return_sequences"]
        out = forward if seq else forward[:, -1]
        if self.config["bidirectional"]:
            backward = self._run(x, {k[: -len("_reverse")]: v for k, v in params.items()
                                     if k.endswith("_reverse")}, True)
            # the backward pass's final state is the one that read step 0 last
            out = pt.concatenate([out, backward if seq else backward[:, 0]], axis=-1)
        return out


@LAYERS.register("simple_rnn")
class SimpleRNN(_Recurrent):
    """h_t = activation(x_t W + h_{t-1} U + b), the Theano tutorial's Elman network."""

    type_name = "simple_rnn"
    keys = _recurrent_keys()
    parts = ((0, 0),)          # z = x_t W + b + h_{t-1} U

    def _cell(self, pre, states):
        return [self._act(pre[0])]


@LAYERS.register("lstm")
class LSTM(_Recurrent):
    """Long short-term memory, Keras gate order i, f, c, o."""

    type_name = "lstm"
    gates = 4
    n_states = 2
    keys = {**_recurrent_keys(gates=True),
            "unit_forget_bias": Key(boolean(), True, "initialise the forget gate's bias to 1")}

    def _bias_init(self):
        h = self.config["units"]
        b = np.zeros(4 * h, dtype="float32")
        if self.config["unit_forget_bias"]:
            b[h:2 * h] = 1.0
        return {"b": b}

    parts = ((0, 0), (1, 1), (2, 2), (3, 3))   # z_k = (x_t W + b)_k + (h_{t-1} U)_k, k = i, f, c, o

    def _cell(self, pre, states):
        i, f, g, o = self._rec(pre[0]), self._rec(pre[1]), self._act(pre[2]), self._rec(pre[3])
        c = f * states[1] + i * g
        return [o * self._act(c), c]


@LAYERS.register("gru")
class GRU(_Recurrent):
    """Gated recurrent unit, reset_after convention (Keras 2 default, PyTorch), Keras gate order z, r, h."""

    type_name = "gru"
    gates = 3
    keys = _recurrent_keys(gates=True)

    def _bias_init(self):
        h = self.config["units"]
        return {"b": np.zeros(3 * h, dtype="float32"), "b_recurrent": np.zeros(3 * h, dtype="float32")}

    # xz + hz, xr + hr, xh, hh (hu includes b_recurrent): r multiplies hh alone (reset_after)
    parts = ((0, 0), (1, 1), (2, None), (None, 2))

    def _cell(self, pre, states):
        z, r = self._rec(pre[0]), self._rec(pre[1])
        cand = self._act(pre[2] + r * pre[3])
        return [z * states[0] + (1.0 - z) * cand]
