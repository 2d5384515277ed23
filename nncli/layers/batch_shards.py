"""Run a piece of graph on equal slices of the batch, one slice per CPU core (JAX backend only).

XLA on the CPU runs a loop's small matrix products on ONE core: a 50-step ``lax.scan`` of
(64 x 128) x (128 x 512) products took 5.6 ms pinned to one core and 5.8 ms on two (2-core AMD
EPYC, JAX 0.10), so a recurrent layer left the other cores idle. The examples of a batch are
independent in a recurrence, so ``BatchShards`` cuts the batch axis into ``n`` equal slices and
runs the inner graph on each slice on its own XLA CPU device (``jax.shard_map`` over ``n``
devices; ``backend.activate`` asks JAX for one CPU device per usable core). The slices run at the
same time, one per core. An output is either per row (the slices' parts are concatenated: each
row's arithmetic is unchanged) or a sum over rows, such as a weight gradient (each slice sums its
own rows, then the slices' sums are added with one all-reduce: the same sum to float32 rounding).
Measured on one LSTM layer (128 units, T=50, batch 64) forward + backward: 25.8 -> 17.3 ms
(bench/results.md, "fourth session").

Only the JAX backend on the CPU uses it (``shard_count``); every other backend, one device, or a
batch that does not split into slices of at least ``MIN_ROWS`` rows (a guard against tiny slices,
not tuned) builds the plain graph. The op has no ``perform``: a graph holding it compiles only
under JAX. The inner graph is built for one slice's shapes, and every shape in it is static.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.op import Op
from pytensor.tensor.basic import infer_static_shape

#: "auto": as many slices as CPU devices (backend.cpu_device_count), where the
#: batch divides; an int: at most that many (1 turns the split off; bench/run.py's variants)
SHARDS: str | int = "auto"
MIN_ROWS = 8          # rows per slice, at least
#: the split costs about 0.4 ms a training step (the devices meet at its all-reduce): a loop whose
#: products make fewer multiply-adds than this over the whole batch stays in one piece. Measured
#: (training, interleaved with PyTorch): sequence-rnn (0.5M: batch 32, 15 steps, 32 units) 32 -> 86 ms
#: an epoch when split; adding-lstm (7.9M) 0.86-0.91 -> 0.76-0.77 of PyTorch; bench/run.py's
#: lstm (210M) 1.27-1.40 -> 0.85-0.96. The bound sits between the first two (not measured nearer).
MIN_WORK = 2_000_000


def _cpu_devices() -> list:
    if str(pytensor.config.mode).upper() != "JAX":
        return []
    import jax

    default = jax.config.jax_default_device
    if default is not None and getattr(default, "platform", "cpu") != "cpu":
        return []
    try:
        return list(jax.devices("cpu"))
    except RuntimeError:
        return []


def shard_count(batch: int | None, work: int | None = None) -> int:
    """Slices to cut a batch of ``batch`` rows into here (``work``: the multiply-adds of the piece's
    products for the whole batch, None: not counted): 1 means build the plain graph."""
    if batch is None or SHARDS == 1 or (work is not None and work < MIN_WORK):
        return 1
    devices = len(_cpu_devices())
    if SHARDS != "auto":
        devices = min(devices, int(SHARDS))
    for n in range(min(devices, batch // MIN_ROWS), 1, -1):
        if batch % n == 0:
            return n
    return 1


def _with_dim(t, axis: int | None, size: int):
    if axis is None:
        return t.type
    shape = list(t.type.shape)
    shape[axis] = size
    return t.type.clone(shape=tuple(shape))


class BatchShards(Op):
    """The inner graph (built for one slice's shapes) run on ``n`` slices of the batch axis.

    ``in_axes[i]``: input i's batch axis, or None for an input every slice reads whole (weights);
    ``out_axes[j]``: output j's batch axis (the slices' outputs are concatenated on it), or None
    for a sum over rows (a weight gradient): the slices' outputs are added.
    """

    def __init__(self, inputs, outputs, in_axes: Sequence[int | None], out_axes: Sequence[int | None], n: int):
        self.fgraph = FunctionGraph(inputs, outputs, clone=True)
        self.in_axes, self.out_axes, self.n = tuple(in_axes), tuple(out_axes), int(n)

    def make_node(self, *inputs):
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        for x, inner, axis in zip(inputs, self.fgraph.inputs, self.in_axes, strict=True):
            if axis is not None and x.type.shape[axis] != inner.type.shape[axis] * self.n:
                raise ValueError(f"BatchShards: input of shape {x.type.shape} on axis {axis} is not "
                                 f"{self.n} x {inner.type.shape[axis]}")
        outs = [(o.type() if a is None else _with_dim(o, a, o.type.shape[a] * self.n)())
                for o, a in zip(self.fgraph.outputs, self.out_axes)]
        return Apply(self, inputs, outs)

    def perform(self, node, inputs, outputs):
        raise NotImplementedError("BatchShards runs only under the JAX backend")

    def infer_shape(self, fgraph, node, input_shapes):
        return [tuple(d * self.n if i == a else d for i, d in enumerate(o.type.shape))
                for o, a in zip(self.fgraph.outputs, self.out_axes)]


def split(build: Callable[..., list], inputs: Sequence, in_axes: Sequence[int | None],
          out_axes: Sequence[int | None], batch: int | None, work: int | None = None) -> list:
    """``build(*inputs)`` (a list of outputs), as a BatchShards op when ``shard_count(batch, work) > 1``."""
    n = shard_count(batch, work)
    if n == 1:
        return list(build(*inputs))
    _register_jax()
    inputs = [pt.as_tensor_variable(x) for x in inputs]
    inner = [_with_dim(x, a, batch // n)() if a is not None else x.type() for x, a in zip(inputs, in_axes)]
    outs = list(build(*inner))
    # every output shape static (JAX traces shapes; an unknown one would be a traced value outside)
    shapes = [infer_static_shape(o.shape)[1] for o in outs]
    if any(d is None for shape in shapes for d in shape):
        return list(build(*inputs))
    outs = [pt.specify_shape(o, shape) for o, shape in zip(outs, shapes)]
    op = BatchShards(inner, outs, in_axes, out_axes, n)
    out = op(*inputs)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def slices(fgraph) -> list[int]:
    """How many slices each BatchShards op of a compiled function's graph cuts its batch into, in
    graph order: [] when nothing is split. The checkpoint keeps it (training/trainer.py): a run
    resumed with other slices matches an uninterrupted one to float32 rounding, not to the bit."""
    return [node.op.n for node in fgraph.toposort() if isinstance(node.op, BatchShards)]


def describe(counts: Sequence[int]) -> str:
    """`slices`' list in words: "2 slices", "one piece" (no split)."""
    if not counts:
        return "one piece"
    kinds = sorted(set(counts))
    return f"{', '.join(map(str, kinds))} slices"


_registered = False


def _register_jax() -> None:
    """Teach PyTensor's JAX linker the op (importing pytensor.link.jax imports jax: only when used)."""
    global _registered
    if not _registered:
        from pytensor.link.jax.dispatch import jax_funcify

        jax_funcify.register(BatchShards)(_jax_batch_shards)
        _registered = True


def _jax_batch_shards(op: BatchShards, node=None, **kwargs):
    import jax
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec
    from pytensor.compile.mode import JAX
    from pytensor.link.jax.dispatch import jax_funcify

    kwargs.pop("storage_map", None)
    fgraph = op.fgraph.clone()
    JAX.optimizer(fgraph)
    inner = jax_funcify(fgraph, **kwargs)
    mesh = Mesh(np.array(_cpu_devices()[:op.n]), ("batch",))

    def spec(axis):
        return PartitionSpec() if axis is None else PartitionSpec(*([None] * axis), "batch")

    in_specs = tuple(spec(a) for a in op.in_axes)
    out_specs = tuple(spec(a) for a in op.out_axes)

    summed = [a is None for a in op.out_axes]

    def body(*args):
        return tuple(jax.lax.psum(v, "batch") if s else v for v, s in zip(inner(*args), summed))

    sharded = jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    if len(out_specs) == 1:
        return lambda *args: sharded(*args)[0]
    return sharded
