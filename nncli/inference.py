"""Using a checkpoint: `predict`, `evaluate` and `inspect`.

The network is rebuilt from the config stored in the checkpoint, every
parameter's shape is checked against it, and the stored normalisation and
label encoding are applied, so a checkpoint from anyone works the same way.

`predict` has one path for every input size: the inputs come in chunks of rows (a file read
whole is one chunk; a CSV larger than PREDICT_STREAM_BYTES is read in chunks of
PREDICT_CHUNK_ROWS rows, in bounded memory), each chunk goes through the same compiled
function in the same batches and is written by the one formatter; the output goes to a
temporary file that replaces `-o` only when every row is done (or straight to the stream).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

import numpy as np

from nncli import backend, checkpoint, data, fileio, functions, metrics as metrics_mod, network, numtext, predictions_h5
from nncli import spec as spec_mod
from nncli.data import columns as columns_mod
from nncli.errors import CheckpointError, ConfigError, DataError, NncliError
from nncli.schema import Invalid, list_of, optional

PREDICT_BATCH = 1024
PREDICT_STREAM_BYTES = 16 << 20  # a CSV input larger than this is read in chunks of rows
PREDICT_CHUNK_ROWS = 50_000
MAX_CSV_INPUTS = 1_000_000  # columns of a CSV input (a model may declare more inputs: use HDF5)


def _stderr(line: str) -> None:
    """Where warnings go when the caller names no reporter (the CLI passes its own)."""
    print(line, file=sys.stderr)


@dataclass
class Loaded:
    path: str
    ck: checkpoint.Checkpoint
    config: dict[str, Any]
    net: network.Network


def load_model(path: str | os.PathLike, compile_backend: bool = True) -> Loaded:
    where = str(path)
    ck = checkpoint.load(where)
    config = _stored_config(ck, where)
    try:
        layers = spec_mod.parse_layers(config["layers"], f"{where}:/config")
        net = network.Network(layers, ck.input_shape)
    except (NncliError, network.LayerShapeError) as exc:
        raise CheckpointError(f"{where}: the stored network cannot be rebuilt: {exc}") from None
    _check_outputs(ck, net, where)
    params, state = net.initial_values(np.random.default_rng(0))
    for key, value in {**params, **state}.items():
        if key not in ck.params:
            raise CheckpointError(f"{where}: damaged checkpoint: missing /params/{key}")
        if tuple(ck.params[key].shape) != tuple(np.shape(value)):
            raise CheckpointError(f"{where}: damaged checkpoint: /params/{key} has shape "
                                  f"{tuple(ck.params[key].shape)}, the network needs {tuple(np.shape(value))}")
        if ck.params[key].dtype.kind == "f" and not np.isfinite(ck.params[key]).all():
            raise CheckpointError(f"{where}: damaged checkpoint: /params/{key} has non-finite values")
    if compile_backend:
        # a GPU-trained checkpoint predicts on a GPU when there is one, else on the CPU
        choice = backend.choose(config.get("backend", "auto"), "auto" if config.get("device") == "gpu" else "cpu",
                                [l.kind for l in layers])
        backend.activate(choice)
        net.create_shared({k: ck.params[k] for k in params}, {k: ck.params[k] for k in state})
    return Loaded(where, ck, config, net)


def _stored_config(ck: checkpoint.Checkpoint, where: str) -> dict[str, Any]:
    """The config stored in the checkpoint, parsed with the size, node and depth budget of config files."""
    try:
        config, _ = spec_mod.parse_yaml(ck.config_yaml, f"{where}:/config")
    except NncliError as exc:
        raise CheckpointError(f"{where}: damaged checkpoint: the stored config: {exc.message}") from None
    if not isinstance(config, dict) or "layers" not in config:
        raise CheckpointError(f"{where}: damaged checkpoint: the stored config has no layers")
    for key, allowed in (("backend", ("auto", "jax", "numba", "c")), ("device", ("auto", "cpu", "gpu"))):
        if config.get(key, "auto") not in allowed:
            raise CheckpointError(f"{where}: damaged checkpoint: the stored config's {key} is "
                                  f"{checkpoint._show(config[key])}, expected one of {', '.join(allowed)}")
    try:  # as config files check them (a huge top_<k>_accuracy, a mapping, ...)
        config["metrics"] = optional(list_of(metrics_mod.validate_item))(config.get("metrics"), "metrics")
    except Invalid as exc:
        raise CheckpointError(f"{where}: damaged checkpoint: the stored config's {exc.path}: {exc.message}") from None
    return config


def _check_outputs(ck: checkpoint.Checkpoint, net: network.Network, where: str) -> None:
    """The class names match the network's outputs."""
    enc, out = ck.encoding, tuple(net.output_shape)
    needed = {"categorical": (len(enc.classes or []),), "binary": (1,)}.get(enc.kind)
    if needed is not None and out != needed:
        raise CheckpointError(f"{where}: damaged checkpoint: /labels/classes holds {len(enc.classes or [])} "
                              f"class names, the network outputs shape {out}")
    ts = ck.target_scaler
    if ts.kind != "none" and (enc.kind != "values" or ck.task != "regression" or tuple(ts.shift.shape) != out):
        raise CheckpointError(f"{where}: damaged checkpoint: /target_normalization has shape {tuple(ts.shift.shape)} "
                              f"for a {ck.task} model with outputs of shape {out}")


def reading(model: Loaded, delimiter: str | None = None) -> tuple[str, list[str]]:
    """(delimiter, missing tokens) for reading a CSV with this model: `delimiter` when given
    (--delimiter), else the training config's data.delimiter (auto when it has none); the
    training config's data.missing_values (the default list when it has none). Checked as a
    config file's are (a checkpoint may come from anyone)."""
    d = model.config.get("data")
    d = d if isinstance(d, dict) else {}
    try:
        delim = spec_mod._delimiter(delimiter if delimiter is not None else d.get("delimiter", "auto"), "data.delimiter")
        missing = list_of(spec_mod._missing_token, max_len=100)(d.get("missing_values", list(data.MISSING_VALUES)),
                                                                 "data.missing_values")
    except Invalid as exc:
        if delimiter is not None and exc.path == "data.delimiter":
            raise ConfigError(f"--delimiter: {exc.message}") from None
        raise CheckpointError(f"{model.path}: damaged checkpoint: the stored config's {exc.path}: "
                              f"{exc.message}") from None
    return delim, missing


def input_names(ck: checkpoint.Checkpoint, path: str) -> list[str]:
    """The names a CSV's input columns must have for this model: the training file's column
    names, or, for a model trained on HDF5 data (no column names), x0 .. x{n-1}."""
    n_features = int(np.prod(ck.input_shape))
    if n_features > MAX_CSV_INPUTS:
        raise DataError(f"{path}: the model expects {n_features:,} inputs per example; a CSV input holds at most "
                        f"{MAX_CSV_INPUTS:,} columns (use an HDF5 file)")
    names = list(ck.x_names) if ck.x_names and len(ck.x_names) == n_features else []
    return names or [f"x{i}" for i in range(n_features)]


def normalised(ck: checkpoint.Checkpoint, x: np.ndarray) -> np.ndarray:
    """x with the stored normalisation applied, in place when x is float32 (x is the reader's own
    array: no second array of the file's size)."""
    own = x.dtype == np.float32 and x.flags.writeable and x.flags.c_contiguous
    return ck.normalizer.apply(x, out=x if own else None)


def read_inputs(model: Loaded, path: str, with_targets: bool, by_position: bool = False,
                header: bool = True, delimiter: str | None = None, warn: Callable[[str], None] = _stderr
                ) -> data.Table:
    """The rows of `path` as `model` reads them (columns matched as README's predict says),
    normalised with the stored statistics; `with_targets`: the target column too (as read: class
    names or numbers in the target's units); `delimiter`: see reading(). A model with typed
    columns encodes a CSV's raw cells with what training fitted (warnings to `warn`)."""
    ck = model.ck
    if ck.columns is not None and not data.is_hdf5(path):
        if not os.path.exists(path):
            raise DataError(f"{path}: file not found")
        table, notes = columns_mod.read_file(ck.columns, path, ck.y_name, with_targets, header, by_position,
                                             delimiter=reading(model, delimiter)[0])
        for line in notes:
            warn(line)
        table.x = normalised(ck, table.x)
        return table
    if data.is_hdf5(path):
        if by_position:
            raise ConfigError(f"--by-position is for CSV inputs; {path} is an HDF5 file")
        # the HDF5 dataset the model was trained on, if it has that name (else x)
        names = ck.x_names if ck.x_names and len(ck.x_names) == 1 else []
    else:
        names = input_names(ck, path)
    delim, missing = reading(model, delimiter)
    table = data.read(path, None, ck.y_name, with_targets=with_targets, expect_x=names, header=header,
                      by_position=by_position, delimiter=delim, missing=missing)
    if table.x.shape[1:] != ck.input_shape:
        raise DataError(f"{path}: inputs of shape {table.x.shape[1:]} per example, the model expects {ck.input_shape}")
    table.x = normalised(ck, table.x)
    return table


def outputs(model: Loaded, x: np.ndarray) -> np.ndarray:
    """Network outputs for already-normalised inputs, computed in fixed-size batches."""
    batch = max(1, min(PREDICT_BATCH, len(x)))
    return functions.predict_array(functions.compile_predict(model.net, batch), x)


def _cells(texts) -> list[str]:
    """Each text as one CSV field, quoted as csv.writer quotes it: when it holds a comma, a quote
    or a line break (\\n or \\r, so that csv.reader reads it back whole)."""
    out = []
    for text in texts:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n").writerow([text])
        out.append(buf.getvalue()[:-2])
    return out


def format_predictions(model: Loaded, out: np.ndarray, proba: bool, header: bool = True) -> str:
    """Network outputs as CSV text: the header line (when `header`) and one line per example.
    The one formatter of `predict`, for every chunk of inputs (a small file is one); class names
    are quoted once, numbers written with %.9g (by numtext.csv_rows: the text of Python's %)."""
    enc = model.ck.encoding
    n = len(out)
    if enc.kind in ("categorical", "binary"):
        names = ["label"] + ([f"p_{c}" for c in enc.classes] if proba else [])
    else:
        name, cols = model.ck.y_name or "output", int(np.prod(out.shape[1:], dtype=np.int64))
        names = [name] if cols == 1 else [f"{name}_{i}" for i in range(cols)]
    head = ",".join(_cells(names)) + "\n" if header else ""
    if enc.kind in ("categorical", "binary"):
        classes = _cells(enc.classes)
        codes = data.class_codes(enc, out)
        if not proba:
            return head + "".join(f"{lab}\n" for lab in np.asarray(classes)[codes].tolist())
        return head + numtext.csv_rows(data.class_probabilities(enc, out), classes, codes)
    flat = model.ck.target_scaler.invert(out).reshape(n, -1)  # in the target's units
    return head + numtext.csv_rows(flat)


def _chunk_rows() -> int:
    """Rows per chunk of a streamed input and per piece of outputs_ahead: whole batches, so the
    same batches as the input whole."""
    return max(1, PREDICT_CHUNK_ROWS // PREDICT_BATCH) * PREDICT_BATCH


def streams_csv(path: str | os.PathLike) -> bool:
    """Predict from this input in chunks? (A CSV file larger than PREDICT_STREAM_BYTES.)"""
    p = str(path)
    try:
        return (not data.is_hdf5(p)) and os.path.isfile(p) and os.path.getsize(p) > PREDICT_STREAM_BYTES
    except OSError:
        return False


def _csv_chunks(model: Loaded, path: str, by_position: bool, delimiter: str | None = None) -> Iterator[np.ndarray]:
    """The normalised inputs of a big CSV in chunks of rows: the header and the columns are
    checked here (data.model_columns, as for a small file), each chunk's cells when it is read.
    Whole batches per chunk, so the same batches as for a small file."""
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    ck = model.ck
    names = input_names(ck, path)
    chunk_rows = _chunk_rows()
    delim, missing = reading(model, delimiter)
    header, width, chunks = data.read_chunks(path, chunk_rows, header="position" if by_position else True,
                                             hint=data.PREDICT_NO_HEADER_HINT, n_inputs=len(names),
                                             delimiter=delim, missing=missing, raw=True)
    idx, _, shown = data.model_columns(path, header, width, names, ck.y_name, False, by_position)
    if (len(idx),) != tuple(ck.input_shape):
        raise DataError(f"{path}: inputs of shape {(len(idx),)} per example, the model expects {ck.input_shape}")
    col_names = [shown[i] for i in idx]
    return (normalised(ck, data.rows_to_float(path, rows, idx, col_names, row_offset=first, missing=missing))
            for first, rows in chunks)


def _typed_chunks(model: Loaded, path: str, by_position: bool, delimiter: str | None,
                  warn: Callable[[str], None]) -> Iterator[np.ndarray]:
    """A CSV's rows encoded with the model's typed columns and normalised, in chunks of rows
    (one chunk for a small file); the warnings once the whole file is read."""
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    ck = model.ck
    notes = columns_mod.Notes()
    chunk_rows = _chunk_rows()
    rows = columns_mod.encode_file(ck.columns, path, ck.y_name, False, True, by_position, chunk_rows, notes,
                                   delimiter=reading(model, delimiter)[0])

    def gen():
        for _, x, _ in rows:
            yield normalised(ck, x)
        for line in notes.lines(path):
            warn(line)
    return gen()


def input_chunks(model: Loaded, path: str, by_position: bool = False, delimiter: str | None = None,
                 warn: Callable[[str], None] = _stderr) -> Iterator[np.ndarray]:
    """The normalised inputs of `path` for `model`, in chunks of rows: one chunk for a file read
    whole, many for a big CSV. What can be checked before the first row is checked here."""
    if model.ck.columns is not None and not data.is_hdf5(path):
        return _typed_chunks(model, path, by_position, delimiter, warn)
    if streams_csv(path):
        return _csv_chunks(model, path, by_position, delimiter)
    return iter([read_inputs(model, path, with_targets=False, by_position=by_position, delimiter=delimiter).x])


def _runner(model: Loaded) -> Callable[[np.ndarray], np.ndarray]:
    """x -> outputs through one compiled predict function, compiled at the first call (batches of
    PREDICT_BATCH rows, or of all the rows of a smaller first chunk)."""
    compiled = []

    def run(x: np.ndarray) -> np.ndarray:
        if not compiled:
            compiled.append(functions.compile_predict(model.net, max(1, min(PREDICT_BATCH, len(x)))))
        return functions.predict_array(compiled[0], x)
    return run


def _pieces(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The chunks cut into pieces of whole batches, at most PREDICT_CHUNK_ROWS rows (an HDF5 input
    is one chunk): the same batches as the chunk whole, so the same outputs."""
    rows = _chunk_rows()
    for x in chunks:
        for start in range(0, len(x), rows):
            yield x[start:start + rows]


def outputs_ahead(model: Loaded, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The network's outputs for each piece of the chunks (see _pieces), computed one piece ahead in
    a worker thread: the next piece is read and run (numba, XLA and numpy release the GIL) while
    the caller formats and writes this one. Errors surface here, in order."""
    run, pieces = _runner(model), _pieces(chunks)

    def next_output():
        x = next(pieces, None)
        return None if x is None else run(x)

    with ThreadPoolExecutor(1, thread_name_prefix="nncli-predict") as pool:
        ahead = pool.submit(next_output)
        while (out := ahead.result()) is not None:
            ahead = pool.submit(next_output)
            yield out


def write_predictions(model: Loaded, chunks: Iterator[np.ndarray], proba: bool, fh: TextIO | None) -> int:
    """Run every chunk through one compiled predict function (see outputs_ahead) and write it as
    CSV text to `fh` (None: count the rows); return the row count."""
    total = 0
    for out in outputs_ahead(model, chunks):
        if fh is not None:
            fh.write(format_predictions(model, out, proba, header=total == 0))
        total += len(out)
    return total


def predict(model_path: str, input_path: str, output: str | None = None, proba: bool = True,
            stream: TextIO | None = None, by_position: bool = False, delimiter: str | None = None,
            warn: Callable[[str], None] = _stderr) -> int:
    """Write predictions as CSV to `output` (atomically; "-" is `stream`) or to `stream`; return the
    row count. The output is checked before anything is read: never one of the inputs.
    `by_position`: take a CSV's columns in order rather than by name (see data.model_columns)."""
    target = fileio.output_target(output, inputs=(model_path, input_path)) if output else None
    as_arrays = predictions_h5.wants_hdf5(output)
    if as_arrays:
        predictions_h5.check_target(target)
    if target is not None and target.kind == "stdout":
        target = None
    model = load_model(model_path)
    chunks = input_chunks(model, str(input_path), by_position, delimiter, warn)
    if as_arrays:
        return predictions_h5.write(model, outputs_ahead(model, chunks), proba, target)
    if target is None:
        return write_predictions(model, chunks, proba, stream)
    try:
        with fileio.open_output(target) as fh:
            return write_predictions(model, chunks, proba, fh)
    except OSError as exc:
        done = "the previous file is unchanged" if target.kind == "file" else "the output may be incomplete"
        raise DataError(f"{target.path}: cannot write: {exc.strerror or exc}; {done}") from None


@dataclass
class Evaluation:
    metrics: dict[str, float]
    examples: int
    report: dict[str, Any] | None = None   # confusion matrix and per-class scores (confusion=True)


def evaluate(model_path: str | os.PathLike, data_path: str, confusion: bool = False, by_position: bool = False,
             header: bool = True, delimiter: str | None = None, warn: Callable[[str], None] = _stderr
             ) -> Evaluation:
    """Loss and metrics of a checkpoint on a labelled file (f1, r2, ... from all predictions).
    `by_position`: a CSV's columns in order, the target last; `header` false: a CSV without a
    header row, its columns named col1 .. colN (a run's test file with data.header false)."""
    model = load_model(model_path)
    if confusion and model.ck.task != "classification":
        raise ConfigError(f"--confusion needs a classifier; {model_path} is a {model.ck.task} model "
                          f"(loss {model.ck.loss})")
    table = read_inputs(model, data_path, with_targets=True, by_position=by_position, header=header,
                        delimiter=delimiter, warn=warn)
    t = data.encode_targets(table, model.ck.encoding, model.net.output_shape)
    names = list(model.config.get("metrics") or [])
    batch = max(1, min(PREDICT_BATCH, len(table.x)))
    ts = model.ck.target_scaler  # the loss as trained (standardised targets), the metrics in the target's units
    fn = functions.compile_eval(model.net, model.ck.loss, metrics_mod.in_graph(names), batch, ts)
    result = functions.run_sums(fn, data.batches(table.x, ts.apply(t), batch))
    report = None
    if metrics_mod.epoch_level(names) or confusion:
        out = ts.invert(outputs(model, table.x))
        result.update(metrics_mod.compute(names, t, out, model.ck.loss))
        result = {k: result[k] for k in ["loss", *names] if k in result}
        if confusion:
            report = metrics_mod.report(t, out, model.ck.loss, model.ck.encoding.classes)
    return Evaluation(result, len(table.x), report)


def inspect(model_path: str) -> dict[str, Any]:
    """What is in a checkpoint: layers, shapes, parameter counts, history, config."""
    model = load_model(model_path, compile_backend=False)
    ck = model.ck
    trainable = {k: v for k, v in ck.params.items() if k in ck.trainable}
    rows = model.net.summary(trainable)
    return {
        "path": model.path, "epoch": ck.epoch, "step": ck.step, "created": ck.created,
        "nncli_version": ck.nncli_version, "backend": ck.backend, "task": ck.task, "loss": ck.loss,
        "input_shape": list(ck.input_shape),
        "layers": [{"name": n, "type": t, "inputs": list(spec.inputs), "output_shape": list(s), "params": c}
                   for (n, t, s, c), spec in zip(rows, model.net.specs)],
        "total_params": int(sum(r[3] for r in rows)),
        "classes": ck.encoding.classes, "normalization": ck.normalizer.kind,
        "target_scaling": None if ck.target_scaler.kind == "none" else {
            "mean": ck.target_scaler.shift.reshape(-1).astype(float).tolist(),
            "std": (1.0 / ck.target_scaler.scale.reshape(-1).astype(float)).tolist()},
        "best_epoch": ck.best_epoch, "best_value": ck.best_value,
        "history": ck.history, "config": ck.config_yaml,
        "columns": ck.columns.lines() if ck.columns is not None else None,
    }
