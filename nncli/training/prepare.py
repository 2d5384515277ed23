"""Everything loaded and validated before compiling: one `prepare` for a training file read
into memory and for one streamed from disk (HDF5 inputs bigger than data.memory_budget_mb).

The steps are the same for both: read the training file (in memory: the whole table; streamed:
the targets, and the inputs as an XStream of blocks), build the network, encode the targets,
split off the validation set (rows, stratified; streamed: whole blocks), fit the normaliser on
the training part (the one accumulator: one update, or one per block) and read a validation file.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import h5py
import numpy as np

from nncli import data, network
from nncli import spec as spec_mod
from nncli.data import columns as columns_mod
from nncli.data.csv import check_header_is_names, generic_names, read_chunks, training_columns
from nncli.data.target_column import TargetColumn
from nncli.data.targets import _label_strings, _sort_classes
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
    columns: columns_mod.Columns | None = None    # typed CSV columns (None: plain numeric inputs)
    notes: tuple[str, ...] = ()                   # lines for the reporter: resolved columns, warnings


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


def scaled_targets(spec: spec_mod.Spec, enc: data.Encoding, t_tr: np.ndarray, t_va: np.ndarray | None):
    """(target scaler, class weights, scaled training targets, scaled validation targets): both
    fitted on the training split only."""
    target_scaler = target_scaling(spec, enc, t_tr)
    weights = class_weights(spec, enc, t_tr)
    return (target_scaler, weights, target_scaler.apply(t_tr),
            target_scaler.apply(t_va) if t_va is not None else None)


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


def missing_values(spec: spec_mod.Spec) -> tuple[str, ...]:
    """The cells read as missing (data.missing_values where the config has it)."""
    given = spec["data"].get("missing_values")
    return tuple(given) if given is not None else columns_mod.MISSING_VALUES


def _label_strata(y: np.ndarray, loss: str) -> np.ndarray | None:
    """The class of each target, numbered in the Encoding's class order (what _split_rows
    stratifies by), or None for regression."""
    if loss not in ("categorical_crossentropy", "binary_crossentropy"):
        return None
    try:
        labels, numeric = _label_strings(y)
    except ValueError:
        return None
    rank = {c: i for i, c in enumerate(_sort_classes(labels, numeric))}
    uniq, inverse = np.unique(labels, return_inverse=True)
    return np.array([rank[str(u)] for u in uniq.tolist()], dtype=np.int64)[inverse.reshape(-1)]


def _typed_csv(spec: spec_mod.Spec, encode: bool = True):
    """A training CSV through typed columns, in chunked passes over the file: (1) the targets and
    the rows drop_row removes, then the validation split; (2) inference and fitting on the
    training rows (in pass 1 when there is no validation fraction); (3) every kept row encoded. Returns (inputs, Table of the targets, the
    Columns, train and validation row indices or None, warnings)."""
    d = spec["data"]
    path, header = d["train"], bool(d["header"])
    where = f" (from {spec.source}: data.train)"
    tokens = missing_values(spec)
    delimiter = d["delimiter"]
    names, width, _ = read_chunks(path, 1, header, delimiter=delimiter, missing=tokens)
    header_names, names = names, names if names is not None else generic_names(width)
    x_cols, y_name, _, y_idx = training_columns(path, names, d["x"], d["y"])
    position = {n: i for i, n in enumerate(names)}
    entries = d.get("columns") or {}
    for c in x_cols:
        if (entries.get(c) or {}).get("type") == "ignore" and d["x"] is not None:
            raise spec.error(f"data.columns.{c}", f"'{c}' is listed in data.x and typed ignore; keep one")
    specs = columns_mod.resolve_specs(path, names, x_cols, y_name, entries, spec.error)
    if not specs:
        raise DataError(f"{path}: no input columns (every one is ignored){where}")
    idx = [position[n] for n, _ in specs]
    drop_cols = [j for j, (_, e) in enumerate(specs) if e and e.get("missing") == "drop_row"]
    token_arr = np.array(tokens, dtype=str) if tokens else None

    def passes():
        return columns_mod.row_chunks(read_chunks(path, columns_mod.CHUNK_ROWS, header, delimiter=delimiter,
                                                  missing=tokens).chunks, idx + [y_idx])

    val = d["validation"]
    fraction = bool(val) and not isinstance(val, str)
    max_cat = d.get("max_categories") or columns_mod.MAX_CATEGORIES
    # pass 1: targets (as codes or values, see data/target_column.py), dropped rows (and, without
    # a validation fraction, the fitting: every kept row is a training row)
    target = TargetColumn(path, y_name, spec["loss"], tokens)
    keeps, n_drop_col, n_rows = [], np.zeros(len(drop_cols), np.int64), [0]

    def first_pass():
        for start, lines, cells in passes():
            n_rows[0] += len(cells)
            if drop_cols and token_arr is not None:
                m = np.isin(cells[:, drop_cols], token_arr)
                n_drop_col[:] += m.sum(axis=0)
                keeps.append(~m.any(axis=1))
                lines, cells = lines[keeps[-1]], cells[keeps[-1]]
            target.observe(cells[:, -1], lines)
            yield start, lines, cells[:, :-1]

    cols = None
    if fraction:
        for _ in first_pass():
            pass
    else:
        try:
            cols = columns_mod.fit(path, specs, first_pass(), None, max_cat, tokens)
        except DataError:
            # fitting saw no row when drop_row removed them all (that error, below, comes first)
            if not (keeps and not np.concatenate(keeps).any()):
                raise
    n_all = n_rows[0]
    keep = np.concatenate(keeps) if keeps else None
    keeps.clear()
    n_kept = int(keep.sum()) if keep is not None else n_all
    if not n_kept:
        what = ", ".join(f"'{specs[j][0]}' ({int(k)} missing)" for j, k in zip(drop_cols, n_drop_col))
        raise DataError(f"{path}: missing: drop_row on column {what} leaves no rows of {n_all}; choose another "
                        f"missing policy{where}")
    check_header_is_names(path, header_names, x_cols, target.has_name)
    targets = Targets(*target.finish(), path, y_name)
    in_val = None
    if fraction:
        in_val = data.validation_mask(n_kept, val, np.random.default_rng([spec["seed"], 1]),
                                      targets.strata(spec["loss"]))
        n_val = int(in_val.sum())
        if n_val == 0 or n_val == n_kept:
            raise spec.error("data.validation", f"a fraction of {val} of {n_kept} examples leaves an empty "
                                                f"{'training' if n_val == n_kept else 'validation'} set")
        if keep is None:
            train_rows = ~in_val
        else:
            train_rows = keep.copy()
            train_rows[keep] = ~in_val
        # pass 2: infer and fit on the training rows
        cols = columns_mod.fit(path, specs, ((s, l, c[:, :-1]) for s, l, c in passes()), train_rows, max_cat,
                               tokens)
        del train_rows
    for j, k in zip(drop_cols, n_drop_col):  # their missing cells are the rows dropped, not training cells
        cols.columns[j].n_missing = int(k)
    if not encode:  # (nncli config --check: the fitted columns are enough)
        return None, None, cols, in_val, ()
    # pass 3: encode every kept row, into the training and validation arrays in memory (Held) or,
    # bigger than data.memory_budget_mb, into a temporary HDF5 file that training streams (Spill)
    notes = columns_mod.Notes()
    at = 0
    n_val = int(in_val.sum()) if in_val is not None else 0
    spilled = 4.0 * n_kept * cols.width > data.budget_bytes(spec)
    x = (Spill if spilled else Held)(n_kept - n_val, n_val, cols.width)
    for start, lines, cells in passes():
        if keep is not None:
            k = keep[start:start + len(cells)]
            cells, lines = cells[k], lines[k]
        enc = cols.encode(path, cells[:, :-1], lines, notes)
        x.write(enc, ~in_val[at:at + len(enc)] if in_val is not None else np.ones(len(enc), bool))
        at += len(enc)
    x.close()
    return x, targets, cols, in_val, tuple(notes.lines(path))


@dataclass
class Targets:
    """A training CSV's targets as pass 1 keeps them (data/target_column.py): `y` the typed
    vocabulary of class labels and `codes` one int32 per row indexing it, or `y` the float32
    values of a regression target and `codes` None."""

    y: np.ndarray
    codes: np.ndarray | None
    path: str
    name: str

    def __len__(self) -> int:
        return len(self.codes) if self.codes is not None else len(self.y)

    def strata(self, loss: str) -> np.ndarray | None:
        """Each row's class, numbered in the Encoding's class order (what the split stratifies
        by), or None for regression."""
        if self.codes is None:
            return None
        rank = _label_strata(self.y, loss)
        return rank.astype(np.int32)[self.codes] if rank is not None else None

    def table(self, names: list[str], width: int) -> data.Table:
        """A Table whose y fits the Encoding: the vocabulary (one row per distinct label) or the values."""
        return data.Table(np.zeros((0, width), np.float32), self.y, self.path, names, self.name)

    def encoded(self, table: data.Table, enc: data.Encoding, output_shape: tuple[int, ...],
                rows: np.ndarray | None) -> np.ndarray:
        """The float32 targets of the rows where the mask `rows` holds (None: every row): class
        labels encoded once per distinct label, then indexed by the codes."""
        encoded = data.encode_targets(table, enc, output_shape)
        if self.codes is None:
            return encoded if rows is None else encoded[rows]
        return encoded[self.codes if rows is None else self.codes[rows]]


def _parts(rows: np.ndarray, in_train: np.ndarray):
    """(key, rows) for the training and the validation rows of an encoded chunk."""
    return ("train", rows[in_train]), ("validation", rows[~in_train])


class Held:
    """Encoded training and validation-split inputs written straight into their two arrays (no
    array of every row to split afterwards)."""

    def __init__(self, n_train: int, n_val: int, width: int):
        self.x = {"train": np.empty((n_train, width), np.float32), "validation": np.empty((n_val, width), np.float32)}
        self.at = {"train": 0, "validation": 0}

    def write(self, rows: np.ndarray, in_train: np.ndarray) -> None:
        for key, part in _parts(rows, in_train):
            a = self.at[key]
            self.x[key][a:a + len(part)] = part
            self.at[key] = a + len(part)

    def close(self) -> None:
        pass

    def stream(self, key: str) -> np.ndarray:
        return self.x[key]


class Spill:
    """Encoded training (and validation-split) inputs written to a temporary HDF5 file, datasets
    `train` and `validation`, which training streams as data.XStream; the folder is removed
    when the process exits."""

    def __init__(self, n_train: int, n_val: int, width: int):
        self.folder = tempfile.mkdtemp(prefix="nncli-typed-")
        atexit.register(shutil.rmtree, self.folder, True)
        self.path = os.path.join(self.folder, "inputs.h5")
        self.width, self.n = width, {"train": n_train, "validation": n_val}
        self.at = {"train": 0, "validation": 0}
        rows = max(1, (1 << 20) // (4 * width))
        try:
            self.f = h5py.File(self.path, "w")
            self.ds = {k: self.f.create_dataset(k, (n, width), "f4", chunks=(min(rows, n), width))
                       for k, n in self.n.items() if n}
        except OSError as exc:
            raise DataError(f"{self.path}: cannot write the encoded inputs: {exc}") from None

    def write(self, rows: np.ndarray, in_train: np.ndarray) -> None:
        for key, part in _parts(rows, in_train):
            if len(part):
                a = self.at[key]
                try:
                    self.ds[key][a:a + len(part)] = part
                except OSError as exc:
                    raise DataError(f"{self.path}: cannot write the encoded inputs: {exc}") from None
                self.at[key] = a + len(part)

    def close(self) -> None:
        self.f.close()

    def stream(self, key: str) -> data.XStream:
        n = self.n[key]
        return data.XStream(self.path, key, data.block_ranges(n, 4 * self.width), (self.width,))


def prepare(spec: spec_mod.Spec) -> Prepared:
    d = spec["data"]
    if not data.is_hdf5(d["train"]):
        return _prepare_csv(spec)
    if d.get("columns"):
        raise spec.error("data.columns", f"typed columns are a CSV feature; {d['train']} is an HDF5 file, whose "
                                         f"inputs are numeric arrays")
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
    normalizer = (_streamed_normalizer(d["normalize"], x_tr, d["train"]) if streamed
                  else data.Normalizer.fit(d["normalize"], x_tr))
    if isinstance(val, str):
        vt = read_table(spec, val, "validation")
        if vt.x.shape[1:] != input_shape:
            raise DataError(f"{val}: inputs of shape {vt.x.shape[1:]} but the training data has {input_shape}")
        x_va, t_va = vt.x, data.encode_targets(vt, enc, net.output_shape)
    target_scaler, weights, t_tr, t_va = scaled_targets(spec, enc, t_tr, t_va)
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


def _streamed_normalizer(kind: str, x: data.XStream, where: str) -> data.Normalizer:
    """The normaliser of a stream's rows: the one accumulator, one update per block (a pass that
    also refuses a non-finite input, whatever the kind)."""
    moments = data.Moments()
    for rows in x.checked_blocks(where):
        if kind != "none":
            moments.update(rows)
    return data.Normalizer.from_moments(kind, moments)


def _numeric_only(norm: data.Normalizer, numeric: np.ndarray) -> None:
    """Typed columns: only numeric inputs (numbers, date parts) are normalised; one-hot, 0/1 and
    indicator inputs pass unchanged (shift 0, scale 1)."""
    if norm.kind != "none":
        norm.shift[~numeric] = 0.0
        norm.scale[~numeric] = 1.0


def _prepare_csv(spec: spec_mod.Spec) -> Prepared:
    """A training CSV: typed columns (every column a number without missing cells: plain inputs,
    exactly as an untyped CSV)."""
    d = spec["data"]
    try:
        x_all, targets, cols, in_val, notes = _typed_csv(spec)
    except DataError as exc:
        if "(from " in exc.message:
            raise
        raise DataError(f"{exc.message} (from {spec.source}: data.train)") from None
    net = network.build(spec, (cols.width,))
    table = targets.table(cols.names, cols.width)
    try:
        enc = data.fit_encoding(table, spec["loss"], net.output_shape[-1])
        t_tr = targets.encoded(table, enc, net.output_shape, ~in_val if in_val is not None else None)
        t_va = targets.encoded(table, enc, net.output_shape, in_val) if in_val is not None else None
    except data.UnitsMismatch as exc:
        raise spec.error(spec.layers[-1].path, exc.message) from None
    y_name = table.y_name
    del table, targets
    streamed = isinstance(x_all, Spill)
    x_tr, x_va = x_all.stream("train"), (x_all.stream("validation") if in_val is not None else None)
    del x_all, in_val
    normalizer = (_streamed_normalizer(d["normalize"], x_tr, d["train"]) if streamed
                  else data.Normalizer.fit(d["normalize"], x_tr))
    _numeric_only(normalizer, cols.numeric)
    val = d["validation"]
    if isinstance(val, str):
        try:
            vt, more = columns_mod.read_file(cols, val, y_name, header=d["header"], delimiter=d["delimiter"])
        except DataError as exc:
            raise DataError(f"{exc.message} (from {spec.source}: data.validation)") from None
        notes = notes + more
        x_va, t_va = vt.x, data.encode_targets(vt, enc, net.output_shape)
    target_scaler, weights, t_tr, t_va = scaled_targets(spec, enc, t_tr, t_va)
    if streamed:
        x_tr = x_tr.normalized(normalizer)
        x_va = x_va.normalized(normalizer) if isinstance(x_va, data.XStream) else (
            normalizer.apply(x_va) if x_va is not None else None)
    else:  # in place: these arrays are prepare's own
        x_tr = normalizer.apply(x_tr, out=x_tr)
        x_va = normalizer.apply(x_va, out=x_va) if x_va is not None else None
    plain = cols.plain() and not cols.any_missing and not d.get("columns")
    lines = () if plain else tuple(cols.lines())
    return Prepared(spec, net, enc, normalizer, x_tr, np.ascontiguousarray(t_tr), x_va, t_va, cols.names, y_name,
                    target_scaler=target_scaler, class_weights=weights, columns=None if plain else cols,
                    notes=lines + notes)


def typed_columns(spec: spec_mod.Spec) -> columns_mod.Columns:
    """The training CSV's typed columns, fitted as training fits them (no inputs encoded)."""
    try:
        return _typed_csv(spec, encode=False)[2]
    except DataError as exc:
        if "(from " in exc.message:
            raise
        raise DataError(f"{exc.message} (from {spec.source}: data.train)") from None
