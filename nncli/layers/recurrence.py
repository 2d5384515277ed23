"""The time loop of the recurrent layers: ``pytensor.scan`` with a hand-built backward pass.

A recurrent cell is described by three things (see nncli/layers/recurrent.py):

- ``gates`` G: blocks of ``units`` columns in the input projection ``x W + b``
  (computed for all steps outside the loop, one product) and in ``h U``;
- ``pre_parts``: the per-step *pre-activations* P_j the cell reads, each the sum
  of one gate block of ``x W + b`` and/or one gate block of ``h_{t-1} U (+ b_recurrent)``,
  e.g. LSTM ``z_k = xw_k + hu_k`` (4 of them), GRU ``xw_z + hu_z, xw_r + hu_r, xw_h, hu_h``;
- ``cell(P, states_prev) -> states``: elementwise only (no products), h first.

Why not let ``pytensor.grad`` differentiate the scan? Measured here (JAX backend, CPU,
batch 64; the micro-benchmark at the end of bench/bench_rnn.py):

- Scan's own gradient recomputes each step's ``h U`` in the backward loop and
  accumulates ``dU`` there, a small product per step. This backward keeps the
  pre-activations of the forward pass, so it needs one product per step
  (``dh_{t-1} = dP U^T``). ``dU = sum_t h_{t-1}^T dP_t`` is then ONE large product
  after the loop. One LSTM layer, 128 units, 50 steps, forward + backward: 52 -> 23 ms.
- The forward step computes ``h_{t-1} U`` as ONE product for all gates, (batch, H) x (H, G*H),
  and splits it into the gate blocks (``FUSED_GATES``). Measured on the 2-core AMD EPYC
  (JAX 0.10, one LSTM layer forward + backward, batch 64, interleaved, best of 20, busy
  machine): 128 units x 50 steps x 32 features 116 -> 52 ms (PyTorch 1 thread: 53 ms);
  32 units x 30 steps x 2 features 5.5 -> 2.9 ms (PyTorch: 3.7 ms), against one product per
  gate block, which an earlier measurement (XLA's fusions slicing the gate block) had chosen.
  The results are the same to the bit. Over whole epochs of bench/run.py's lstm the gain was
  smaller: 2.54 -> 2.47 s at load 1.5-3.7, 5.90 -> 4.91 s at load 5-14 (bench/results.md). Letting JAX differentiate a ``lax.scan`` LSTM (what a
  JAX-native Op for the whole layer would run) was slower still: 119 / 3.5 ms.

Each forward step saves its pre-activations as ONE (batch, parts * units) array, and each
backward step returns their gradients as one, rather than one array per part: fewer arrays
written per loop iteration. Measured (2026-11-29, 2-core AMD EPYC, the old and new recurrence
timed in turn in one process, 30 calls x 3 rounds, min): adding-lstm's layer (batch 64, 30 steps,
32 units) forward + backward 2.45 -> 2.19 ms, 128 units x 50 steps 24.1-24.4 -> 23.3 ms; the
forward output is the same to the bit, the gradients to float32 rounding (1e-7 relative: XLA
fuses the slices differently).

The input projection ``x W + b`` of all steps is one product before the forward loop, and the
weight gradients ``dW = sum_t x_t^T dP_t`` and ``dU`` are products after the backward loop (one
product for both where every gate block of ``x W`` and ``h U`` is added into the same part: LSTM,
simple_rnn). Under the JAX backend with several CPU devices (nncli/layers/batch_shards.py), the
forward (projection and loop) and the backward (loop and the weight gradients of the slice's
rows) each run on slices of the batch, one per core, and the slices' weight gradients are added.
XLA keeps a loop's small products on one core; the slices put the other cores to work.

The pair is an ``OpFromGraph`` (inlined at compile time) whose ``pullback`` is the
backward scan. The cell's own derivative inside that scan is still
``pytensor.grad`` of the elementwise ``cell`` (any activation works): only the
products are arranged by hand. Checked against finite differences and a numpy
step loop in tests/layers/test_recurrent.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytensor
import pytensor.tensor as pt
from pytensor.compile.builders import OpFromGraph
from pytensor.gradient import DisconnectedType, disconnected_grad

from nncli.layers.batch_shards import split as split_batch

Parts = Sequence[tuple[int | None, int | None]]

# the forward loop's h U: one product for all gates, then split into the gate blocks (True), or
# one product per gate block (False); measured below
FUSED_GATES = True
# dW and dU as one product ([x, h_prev]^T dP) where d(x W) = d(h U), i.e. every part reads gate k of
# both (LSTM, simple_rnn): one LSTM layer (128 units, T=50, batch 64, split in 2) forward + backward
# 17.5-18.1 -> 16.6-17.1 ms (min of 80 calls, 2 runs, 2-core AMD EPYC)
SHARED_PARTS = True


def _blocks(v, units: int, count: int, axis: int) -> list:
    index = [slice(None)] * v.ndim
    out = []
    for k in range(count):
        index[axis] = slice(k * units, (k + 1) * units)
        out.append(v[tuple(index)])
    return out


def _pre(parts: Parts, xs: list, hus: list) -> list:
    pre = []
    for a, b in parts:
        terms = ([xs[a]] if a is not None else []) + ([hus[b]] if b is not None else [])
        pre.append(terms[0] if len(terms) == 1 else terms[0] + terms[1])
    return pre


def _sum_parts(parts: Parts, d_pre: list, which: int, gate: int, like):
    terms = [d for (p, d) in zip(parts, d_pre) if p[which] == gate]
    if not terms:
        return pt.zeros_like(like)
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _sum_over_rows(v):
    """Sum of a (time, batch, n) array over its time and batch axes."""
    return v.sum(axis=(0, 1))


def loop_work(steps: int, batch: int, units: int, gates: int) -> int:
    """Multiply-adds of the loop's products h U over all steps: what a batch split must be worth
    (layers/batch_shards.py, MIN_WORK)."""
    return steps * batch * units * gates * units


def recurrence(x, W, b, U, b_recurrent, init: list, *, units: int, gates: int, parts: Parts,
               cell: Callable[[list, list], list], name: str):
    """Run the recurrence over x (time, batch, features); return every step's states.

    The input projection ``x W + b`` (W (features, gates * units), b None or (gates * units,)) is
    one product for all steps, before the loop. ``init`` holds the initial states (batch, units),
    h first; ``b_recurrent`` is None or (gates * units,), added to ``h U``. Returns a list of
    (time, batch, units) sequences.

    Where layers/batch_shards.py splits the batch (the JAX backend with several CPU devices), the
    forward (projection and loop) and the backward (loop, then the weight gradients summed over
    the slice's rows) each run as one op on every slice at once; the slices' weight gradients
    are then added.
    """
    k = len(init)
    n_pre = len(parts)
    has_b, has_brec = b is not None, b_recurrent is not None
    # the weights' shapes, static (a slice's graph needs every shape known: JAX traces shapes)
    W = pt.specify_shape(W, (x.type.shape[2], gates * units))
    U = pt.specify_shape(U, (units, gates * units))
    b = pt.specify_shape(b, (gates * units,)) if has_b else None
    b_recurrent = pt.specify_shape(b_recurrent, (gates * units,)) if has_brec else None
    inner_in = [x.type(), W.type(), *([b.type()] if has_b else []), U.type(),
                *([b_recurrent.type()] if has_brec else []), *(s.type() for s in init)]
    weight_axes = [None] * (2 + has_b + has_brec)          # x's batch axis is 1, then the weights
    batch, steps = init[0].type.shape[0], x.type.shape[0]
    batch = batch if steps is not None else None        # a slice's scan needs every shape static
    work = loop_work(steps, batch, units, gates) if batch is not None else None

    def project(x_, W_, b_):
        xw = pt.tensordot(x_, W_, axes=[[2], [0]])        # (T, B, G*H), one product for all steps
        return xw + b_ if b_ is not None else xw

    def forward_step(*args):
        xs, states, rest = args[:gates], args[gates:gates + k], args[gates + k:]
        n_u = 1 if FUSED_GATES else gates
        us, brec = rest[:n_u], rest[n_u:]
        if FUSED_GATES:                                 # one product, then the gate blocks
            hus = _blocks(pt.dot(states[0], us[0]), units, gates, 1)
        else:
            hus = [pt.dot(states[0], u) for u in us]   # one product per gate: separate arrays
        if brec:
            hus = [hu + b for hu, b in zip(hus, brec)]
        pre = _pre(parts, list(xs), hus)
        return [*cell(pre, list(states)), pt.concatenate(pre, axis=1)]   # one saved array per step

    def forward(x_, W_, *rest):
        b_ = rest[0] if has_b else None
        U_ = rest[has_b]
        brec_ = rest[has_b + 1] if has_brec else None
        init_ = rest[-k:]
        outs = pytensor.scan(forward_step, sequences=_blocks(project(x_, W_, b_), units, gates, 2),
                             outputs_info=[*init_, None],
                             non_sequences=[*([U_] if FUSED_GATES else _blocks(U_, units, gates, 1)),
                                            *(_blocks(brec_, units, gates, 0) if has_brec else [])],
                             strict=True, return_updates=False, name=f"{name}_forward")
        return list(outs)

    # the loops run on slices of the batch, one per core, where batch_shards says so
    outs = split_batch(forward, inner_in, [1, *weight_axes, *[0] * k], [1] * (k + 1), batch, work)

    def pullback(inputs, outputs, cotangents):
        W_ = inputs[1]
        seqs, pre_all = outputs[:k], outputs[k]
        d_out = [pt.zeros_like(s) if isinstance(c.type, DisconnectedType) else c
                 for s, c in zip(seqs, cotangents[:k])]

        def backward_step(*args):
            p = _blocks(args[0], units, n_pre, 1)
            s_prev = list(args[1:1 + k])
            d_now = args[1 + k:1 + 2 * k]
            carry = args[1 + 2 * k:1 + 3 * k]
            u_t = args[-1]
            new = cell(p, s_prev)
            cost = sum((s * disconnected_grad(d + c)).sum() for s, d, c in zip(new, d_now, carry))
            grads = pytensor.grad(cost, [*p, *s_prev], disconnected_inputs="ignore", return_disconnected="zero")
            d_pre, d_prev = grads[:n_pre], grads[n_pre:]
            d_hu = pt.concatenate([_sum_parts(parts, d_pre, 1, g, s_prev[0]) for g in range(gates)], axis=1)
            return [d_prev[0] + pt.dot(d_hu, u_t), *d_prev[1:], pt.concatenate(d_pre, axis=1)]

        def backward(x_, U_, pre_, *rest):
            seqs_, init_, d_out_ = rest[:k], rest[k:2 * k], rest[2 * k:]
            prev = [pt.concatenate([s0[None], s[:-1]], axis=0) for s0, s in zip(init_, seqs_)]
            rev = [v[::-1] for v in (pre_, *prev, *d_out_)]
            back = pytensor.scan(backward_step, sequences=rev,
                                 outputs_info=[*(pt.zeros_like(s0) for s0 in init_), None],
                                 non_sequences=[U_.T], strict=True, return_updates=False,
                                 name=f"{name}_backward")
            back = list(back)
            d_init = [v[-1] for v in back[:k]]
            d_pre = _blocks(back[k][::-1], units, n_pre, 2)          # (time, batch, units) each
            like = prev[0]
            d_xw = pt.concatenate([_sum_parts(parts, d_pre, 0, g, like) for g in range(gates)], axis=2)
            d_hu = pt.concatenate([_sum_parts(parts, d_pre, 1, g, like) for g in range(gates)], axis=2)
            # the weight gradients: one product over all steps (and this slice's rows) each
            if SHARED_PARTS and all(a == b for a, b in parts):   # d_xw is d_hu: dW and dU in one product
                both = pt.tensordot(pt.concatenate([x_, prev[0]], axis=2), d_xw, axes=[[0, 1], [0, 1]])
                d_w, d_u = both[:x_.type.shape[2]], both[x_.type.shape[2]:]
            else:
                d_w = pt.tensordot(x_, d_xw, axes=[[0, 1], [0, 1]])
                d_u = pt.tensordot(prev[0], d_hu, axes=[[0, 1], [0, 1]])
            sums = [d_w, *([_sum_over_rows(d_xw)] if has_b else []),
                    d_u, *([_sum_over_rows(d_hu)] if has_brec else [])]
            return [d_xw, *d_init, *sums]

        n_sums = 2 + has_b + has_brec
        back = split_batch(backward, [inputs[0], inputs[2 + has_b], pre_all, *seqs, *inputs[-k:], *d_out],
                           [1, None, *[1] * (1 + k), *[0] * k, *[1] * k],
                           [1, *[0] * k, *[None] * n_sums], batch, work)
        d_xw, d_init, sums = back[0], back[1:1 + k], back[1 + k:]
        d_x = pt.tensordot(d_xw, W_, axes=[[2], [1]])                 # (T, B, features), row by row
        return [d_x, *sums, *d_init]                                   # dW, db, dU, db_recurrent

    op = OpFromGraph(inner_in, outs, pullback=pullback, inline=True, name=name)
    results = op(x, W, *([b] if has_b else []), U, *([b_recurrent] if has_brec else []), *init)
    return list(results[:k])
