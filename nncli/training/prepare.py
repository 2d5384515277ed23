"""Everything loaded and validated before compiling: one `prepare` for a training file read
into memory and for one streamed from disk (HDF5 inputs bigger than data.memory_budget_mb).

The steps are the same for both: read the training file (in memory: the whole table; streamed:
the targets, and the inputs as an XStream of blocks), build the network, encode the targets,
split off the validation set (rows, stratified; streamed: whole blocks), fit the normaliser on
the training part (the one accumulator: one update, or one per block) and read a validation file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nncli import data, network
from nncli import spec as spec_mod
from nncli.errors import DataError
from nncli.registry import did_you_mean


@dataclass
class Prepared:
    """Everything loaded and validated before compiling. The inputs are arrays (in memory) or
    XStreams (on disk); the trainer sees both as a data.Source."""

    spec: spec_mod.Spec
    net: network.Network
    encoding: data.Encoding
    normalizer: data.Normalizer
    x_train: np.ndarray | data.XStream
    t_train: np.ndarray
    x_val: np.ndarray | data.XStream | None
    t_val: np.ndarray | None
    x_names: list[str]
    y_name: str | None
    target_scaler: data.Normalizer = field(default_factory=lambda: data.Normalizer("none"))
    class_weights: np.ndarray | None = None   # one per class (data.class_weight), None: unweighted


def read_table(spec: spec_mod.Spec, path: str, key: str) -> data.Table:
    """A data file of the config, read whole; errors name the config key (data.train, ...)."""
    d = spec["data"]
    try:
        return data.read(path, d["x"], d["y"], header=d["header"], delimiter=d["delimiter"],
                         missing=d["missing_values"])
    except DataError as exc:
        raise DataError(f"{exc.message} (from {spec.source}: data.{key})") from None


def _streamed_source(spec: spec_mod.Spec) -> tuple[data.XStream, data.Table]:
    """The inputs of the training file as a stream of blocks, and its targets (in memory)."""
    d = spec["data"]
    path = d["train"]
    where = f" (from {spec.source}: data.train)"
    try:
        x_name, y_name, shape, y = data.open_targets(path, d["x"], d["y"], where, data.budget_bytes(spec))
    except DataError as exc:
        if exc.message.endswith(where):
            raise
        raise DataError(f"{exc.message}{where}") from None
    n, input_shape = shape[0], tuple(shape[1:])
    blocks = data.block_ranges(n, 4 * int(np.prod(input_shape, dtype=np.int64)))
    table = data.Table(np.zeros((0, *input_shape), np.float32), y, path, [x_name], y_name)
    return data.XStream(path, x_name, blocks, input_shape), table


def _split_rows(spec: spec_mod.Spec, x_all: np.ndarray, t_all: np.ndarray, enc: data.Encoding, val: float):
    """A seeded validation split of the rows, stratified by class."""
    strata = np.argmax(t_all.reshape(len(t_all), -1), axis=1) if enc.kind == "categorical" else (
        t_all.reshape(-1) if enc.kind == "binary" else None)
    tr_idx, va_idx = data.split(len(x_all), val, np.random.default_rng([spec["seed"], 1]), strata)
    if len(tr_idx) == 0 or len(va_idx) == 0:
        raise spec.error("data.validation", f"a fraction of {val} of {len(x_all)} examples leaves an empty "
                                            f"{'training' if len(tr_idx) == 0 else 'validation'} set")
    return x_all[tr_idx], t_all[tr_idx], x_all[va_idx], t_all[va_idx]


def _split_blocks(spec: spec_mod.Spec, x_all: data.XStream, t_all: np.ndarray, val: float):
    """A seeded validation split of a stream's blocks (whole blocks)."""
    n_blocks = len(x_all.blocks)
    k = int(round(val * n_blocks))
    if k == 0 or k == n_blocks:
        raise spec.error("data.validation", f"a fraction of {val} of {n_blocks} blocks of {len(x_all)} examples "
                                            f"(streamed from disk) leaves an empty "
                                            f"{'validation' if k == 0 else 'training'} set")
    chosen = set(np.random.default_rng([spec["seed"], 1]).permutation(n_blocks)[:k].tolist())
    x_tr = x_all.subset([i for i in range(n_blocks) if i not in chosen])
    x_va = x_all.subset([i for i in range(n_blocks) if i in chosen])
    return x_tr, np.ascontiguousarray(x_tr.targets_of(t_all)), x_va, np.ascontiguousarray(x_va.targets_of(t_all))


def target_scaling(spec: spec_mod.Spec, enc: data.Encoding, t_tr: np.ndarray) -> data.Normalizer:
    """data.normalize_target: the standardisation of a regression target (mean and std of the
    training split, per output), or none (classification, normalize_target: none, or auto with a
    bounded output activation such as a sigmoid: its targets keep their range)."""
    mode = spec["data"]["normalize_target"]
    if enc.kind != "values" or spec.task != "regression" or mode == "none" or (
            mode == "auto" and spec_mod.output_activation(spec.layers) != "linear"):
        return data.Normalizer("none")
    return data.Normalizer.fit("standard", t_tr)


def class_weights(spec: spec_mod.Spec, enc: data.Encoding, t_tr: np.ndarray) -> np.ndarray | None:
    """data.class_weight as one weight per class (enc.classes' order), or None (none).
    balanced: n_samples / (n_classes * count_c) over the training split, as scikit-learn's
    compute_class_weight (a class absent from the split counts 1); a mapping: the weights it
    names, 1 for the classes it does not."""
    cw = spec["data"]["class_weight"]
    if cw == "none":
        return None
    if enc.kind not in ("categorical", "binary"):
        raise spec.error("data.class_weight", "class weights need one class label per row (a softmax or a "
                                              "single sigmoid output), not multi-label targets")
    classes = list(enc.classes)
    if cw == "balanced":
        flat = t_tr.reshape(len(t_tr), -1).astype(np.float64)
        counts = flat.sum(axis=0) if enc.kind == "categorical" else np.array([len(flat) - flat.sum(), flat.sum()])
        return (len(flat) / (len(classes) * np.maximum(counts, 1.0))).astype(np.float32)
    unknown = [k for k in cw if k not in classes]
    if unknown:
        raise spec.error(f"data.class_weight.{unknown[0]}", f"no class '{unknown[0]}' in the targets"
                                                            f"{did_you_mean(unknown[0], classes)}; the classes: "
                                                            f"{', '.join(classes[:8])}{' ...' if len(classes) > 8 else ''}")
    return np.array([cw.get(c, 1.0) for c in classes], dtype=np.float32)


def prepare(spec: spec_mod.Spec) -> Prepared:
    d = spec["data"]
    streamed = data.should_stream(spec)  # inputs bigger than data.memory_budget_mb: read from disk in blocks
    if streamed:
        x_all, table = _streamed_source(spec)
    else:
        table = read_table(spec, d["train"], "train")
        if len(table.x) < 1:
            raise DataError(f"{d['train']}: no examples")
        x_all = table.x
    input_shape = tuple(x_all.shape[1:])
    net = network.build(spec, input_shape)
    try:
        enc = data.fit_encoding(table, spec["loss"], net.output_shape[-1])
        t_all = data.encode_targets(table, enc, net.output_shape)
    except data.UnitsMismatch as exc:
        raise spec.error(spec.layers[-1].path, exc.message) from None
    x_names, y_name = table.x_names or [], table.y_name
    del table
    val = d["validation"]
    x_tr, t_tr, x_va, t_va = x_all, t_all, None, None
    if val and not isinstance(val, str):
        x_tr, t_tr, x_va, t_va = (_split_blocks(spec, x_all, t_all, val) if streamed
                                  else _split_rows(spec, x_all, t_all, enc, val))
    elif streamed:
        t_tr = np.ascontiguousarray(x_all.targets_of(t_all))
    del t_all
    # the normalisation statistics of the training part: one accumulator, updated once in
    # memory, once per block when streamed (a pass that also refuses a non-finite input)
    if streamed:
        moments = data.Moments()
        for rows in x_tr.checked_blocks(d["train"]):
            if d["normalize"] != "none":
                moments.update(rows)
        normalizer = data.Normalizer.from_moments(d["normalize"], moments)
    else:
        normalizer = data.Normalizer.fit(d["normalize"], x_tr)
    if isinstance(val, str):
        vt = read_table(spec, val, "validation")
        if vt.x.shape[1:] != input_shape:
            raise DataError(f"{val}: inputs of shape {vt.x.shape[1:]} but the training data has {input_shape}")
        x_va, t_va = vt.x, data.encode_targets(vt, enc, net.output_shape)
    target_scaler = target_scaling(spec, enc, t_tr)  # fitted on the training split only
    weights = class_weights(spec, enc, t_tr)
    t_tr = target_scaler.apply(t_tr)
    t_va = target_scaler.apply(t_va) if t_va is not None else None
    if streamed:
        x_tr = x_tr.normalized(normalizer)
        if isinstance(x_va, data.XStream):
            for _ in x_va.checked_blocks(d["train"]):
                pass
            x_va = x_va.normalized(normalizer)
        elif x_va is not None:
            x_va = normalizer.apply(x_va)
    else:
        x_tr = np.ascontiguousarray(normalizer.apply(x_tr))
        x_va = normalizer.apply(x_va) if x_va is not None else None
        t_tr = np.ascontiguousarray(t_tr)
    return Prepared(spec, net, enc, normalizer, x_tr, t_tr, x_va, t_va, x_names, y_name, target_scaler, weights)
