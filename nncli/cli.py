"""The command line: thin click wrappers over plain library functions.

Only this module imports click. Each command parses its options, calls one
library function and prints what it returns. A library error (NncliError)
becomes one line on stderr, ``Error: ...``, and its exit status; a traceback
is shown only with ``nncli --debug``.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
import traceback

import click

from nncli import __version__
from nncli.errors import NncliError


def _warn(line: str) -> None:
    click.echo(line, err=True)


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def handled(func):
    """Run a command body, turning library errors into one line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        debug = bool((click.get_current_context().find_root().obj or {}).get("debug"))
        try:
            return func(*args, **kwargs)
        except NncliError as exc:
            if debug:
                traceback.print_exc()
            _fail(exc.message, exc.exit_code)
        except BrokenPipeError:  # e.g. `nncli predict ... | head`: the reader left; not an error
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            sys.exit(0)
        except KeyboardInterrupt:
            if debug:
                traceback.print_exc()
            _fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except MemoryError:  # a size nncli did not foresee: still one line (exit 1)
            if debug:
                traceback.print_exc()
            _fail("out of memory (the input or the network is too large for this machine)", 1)
        except Exception as exc:  # an nncli bug: still one line unless --debug
            if debug:
                traceback.print_exc()
            first = str(exc).splitlines()[0] if str(exc) else ""
            _fail(f"internal error: {type(exc).__name__}: {first} (run with --debug for the traceback)", 1)

    return wrapper


# --- shell completion: file names by suffix --------------------------------------------------

def _complete_files(*suffixes: str):
    """A shell_complete function: folders, and files whose name ends in one of `suffixes`."""

    def complete(ctx, param, incomplete: str):
        from click.shell_completion import CompletionItem

        folder, _, prefix = incomplete.rpartition("/")
        base = folder + "/" if folder else ""
        try:
            entries = sorted(os.scandir(folder or "."), key=lambda e: e.name)
        except OSError:
            return []
        out = []
        for e in entries:
            if not e.name.startswith(prefix) or (e.name.startswith(".") and not prefix.startswith(".")):
                continue
            try:
                is_dir = e.is_dir()
            except OSError:
                continue
            if is_dir:
                out.append(CompletionItem(base + e.name + "/"))  # plain: bash's "dir" type would drop the files
            elif e.name.lower().endswith(suffixes):
                out.append(CompletionItem(base + e.name))
        return out

    return complete


CONFIG_FILES = _complete_files(".yaml", ".yml")
CHECKPOINTS = _complete_files(".h5", ".hdf5")
DATA_FILES = _complete_files(".csv", ".h5", ".hdf5")

CONFIG_REFERENCE = "https://github.com/nncli/nncli#the-config-file"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog="Every config key, its default and what it does: README.md, section 'The config file'; "
                    "`nncli schema` prints them as a JSON Schema, `nncli config CONFIG` shows a config with "
                    "every default filled in. Shell completion: README.md, section 'Shell completion'.")
@click.version_option(__version__, prog_name="nncli")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors (default: one 'Error:' line).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """nncli: train neural networks from YAML configs, built on PyTensor.

    A YAML file describes a network and how to train it; `nncli train` validates it, compiles one
    PyTensor training function and trains with progress on stderr, writing checkpoints to
    runs/<name>. The other commands use those checkpoints. Errors are one line on stderr, 'Error:
    ...', with exit 1 (data, checkpoint, runtime) or 2 (usage, config).

    \b
    Example:
      nncli config --init --template tabular > my.yaml && nncli train my.yaml
    """
    ctx.obj = {"debug": debug}


def _layer_table(layers: list, total: int) -> list:
    """The layer table of `inspect` and `config --check`: name, type, output shape, parameters, and
    for a network that is not a plain stack, each layer's inputs."""
    width = max(12, *(len(l["name"]) for l in layers))
    tw = max(12, *(len(l["type"]) for l in layers))   # global_avg_pool1d, multi_head_attention
    chain = all(l.get("inputs", [prev]) == [prev] for l, prev in zip(layers, ["input", *(l["name"] for l in layers)]))
    lines = [f"{'layer':<{width}}  {'type':<{tw}}  {'output shape':<16}  {'params':>10}" + ("" if chain else "  inputs")]
    for l in layers:
        shape = "(batch, " + ", ".join(str(d) for d in l["output_shape"]) + ")"
        lines.append(f"{l['name']:<{width}}  {l['type']:<{tw}}  {shape:<16}  {l['params']:>10,}"
                     + ("" if chain else "  " + ", ".join(l["inputs"])))
    lines.append(f"{'total':<{width}}  {'':<{tw}}  {'':<16}  {total:>10,}")
    return lines


SET_HELP = ("Change one config key before validation (repeatable): PATH is dotted keys with list "
            "indices (layers[0].units, layers[-1].activation, optimizer.type, data.validation); VALUE "
            "is YAML (false, 0.2, '[accuracy, f1]', '{type: dropout, rate: 0.2}').")

def _format_metrics(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


@main.command(short_help="Train the network described by a YAML config; checkpoints to runs/<name>.")
@click.argument("config", type=click.Path(dir_okay=False), shell_complete=CONFIG_FILES)
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help=SET_HELP)
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Output folder (default: the config's output:, else runs/<name> in the current folder).")
@click.option("--resume", is_flag=True,
              help="Continue the run in the output folder from its last.h5, with its own settings.")
@click.option("--overwrite", is_flag=True,
              help="Replace the run in the output folder when its config differs (default: refuse).")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Total number of epochs (shorthand for --set epochs=N; default: the config's, else 10).")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1),
              help="Random seed (shorthand for --set seed=N; default: the config's, else 0).")
@click.option("--backend", "backend_name", type=click.Choice(["auto", "jax", "numba", "c"]),
              help="PyTensor backend (shorthand for --set backend=B; default: the config's, else auto).")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]),
              help="Device (shorthand for --set device=D; default: the config's, else auto).")
@click.option("--tensorboard", "tensorboard_on", is_flag=True,
              help="Write TensorBoard event files to <output>/tensorboard (shorthand for --set tensorboard=true, "
                   "keeping the config's histograms: setting; needs nncli[tensorboard]).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output; just the summary.")
@click.option("--log-json", is_flag=True,
              help="One JSON object per epoch on stdout (for scripts); the summary goes to stderr.")
@handled
def train(config, sets, output, resume, overwrite, epochs, seed, backend_name, device, tensorboard_on, quiet,
          log_json):
    """Train the network described by CONFIG (a YAML file).

    The config is validated first (every error is one line naming the key and its line); then one
    training function is compiled and trained over minibatches, with progress on stderr and the
    summary on stdout. Files go to the output folder (default runs/<name> in the current folder,
    <name> being the config's name: or its file name): model.h5 (the best epoch), last.h5 (for
    --resume), metrics.csv, curves.png (and tensorboard/ with --tensorboard). --set values are
    stored in the run, so --resume needs none of them again. backend auto picks jax when it is installed (else c for dense nets);
    device auto picks the GPU when JAX sees one, else the CPU.

    The loss is reported as trained: on a standardised regression target (data.normalize_target:
    auto, the default for mse/mae) and with class weights (data.class_weight, training loss only);
    predictions and the metrics mae, rmse and r2 are in the target's own units.

    \b
    Examples:
      nncli train configs/iris.yaml
      nncli train configs/iris.yaml --set layers[0].units=32 --set learning_rate=0.003 -o runs/iris-32
      nncli train configs/iris.yaml --resume --epochs 300

    \b
    Exit codes: 0 trained (or already finished); 1 bad data, a damaged checkpoint or a diverged run;
    2 bad usage or config; 130 (Ctrl-C) or 143 (SIGTERM) interrupted, state saved to last.h5.
    """
    from nncli import progress, signals
    from nncli.training import trainer

    reporter = progress.for_stream(sys.stderr, quiet)
    if log_json:
        reporter = progress.JsonReporter(sys.stdout, reporter)
    flag = {}
    with signals.signals_to_flag(flag):  # a signal after train() returns still means: exit 130/143
        result = trainer.train(config, output=output, resume=resume, overwrite=overwrite, epochs=epochs,
                               seed=seed, backend_name=backend_name, device=device, reporter=reporter,
                               sets=tuple(sets), tensorboard=tensorboard_on)
        if result.already_finished:
            click.echo(result.already_finished, err=True)
        else:
            _train_summary(result, bool(log_json))
        if flag.get("signal"):
            from nncli.errors import Interrupted

            raise Interrupted(f"interrupted after training finished; state saved to {result.output / 'last.h5'}",
                              exit_code=signals.exit_code(flag["signal"]))


def _train_summary(result, log_json: bool) -> None:
    err = log_json  # with --log-json stdout holds only the JSON lines
    stopped = " (stopped early)" if result.stopped_early else ""
    click.echo(f"trained {result.epochs_run} epochs in {result.seconds:.1f}s{stopped}; {result.backend}", err=err)
    if result.best:
        click.echo(f"best epoch {result.best_epoch}: {_format_metrics(result.best)}", err=err)
    if result.test:
        click.echo(f"test: {_format_metrics(result.test)}", err=err)
    click.echo(f"model saved to {result.output / 'model.h5'} (resume state: {result.output / 'last.h5'})", err=err)


BY_POSITION_HELP = ("CSV: take the columns in order, not by name (a first row that is not all numbers is a "
                    "header and is skipped):")


def _short(values: list) -> str:
    return ", ".join(f"{v:.6g}" for v in values[:4]) + (", ..." if len(values) > 4 else "")


DELIMITER_HELP = ("The CSV delimiter: auto (a .tsv is tab-separated, others sniffed among , ; tab |), tab, or the "
                  "character (default: the training config's data.delimiter).")


@main.command(short_help="Predict with a checkpoint on a CSV or HDF5 file; CSV to stdout or -o.")
@click.argument("model", type=click.Path(dir_okay=False), shell_complete=CHECKPOINTS)
@click.argument("input", type=click.Path(dir_okay=False), shell_complete=DATA_FILES)
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Write the CSV here (default or '-': stdout). A file is replaced atomically; a device "
                   "or pipe is written through; an input of the command is refused. A name ending in .h5 "
                   "(or .hdf5) gets arrays instead of text: 'label' and 'probabilities', or the target's "
                   "values; an existing file is replaced only when it is an nncli predictions file.")
@click.option("--proba/--no-proba", default=True, show_default=True,
              help="Add one probability column per class (classifiers).")
@click.option("--by-position", is_flag=True,
              help=f"{BY_POSITION_HELP} the model's inputs, then optionally the target (ignored).")
@click.option("--delimiter", default=None, metavar="CHAR",
              help=DELIMITER_HELP)
@handled
def predict(model, input, output, proba, by_position, delimiter):
    """Predict with MODEL (a checkpoint) on INPUT (.csv or .h5).

    A CSV's columns are matched by the names the model was trained with: every input name must be
    in the header row, in any order; other columns (the target, an id) are ignored, and a missing
    name is an error (never a guess by position, unless --by-position). A model trained on HDF5
    data names its inputs x0 .. x{n-1}. The stored normalisation is applied. Output is CSV on
    stdout (or -o FILE): a classifier writes a 'label' column (the original class names) and, with
    --proba (the default), one 'p_<class>' column per class; a regression model writes one column
    named after the training target (or <target>_0 .. <target>_{k-1} for k outputs).

    \b
    Examples:
      nncli predict runs/iris/model.h5 data/iris.csv | head -3
      nncli predict runs/digits-mlp/model.h5 data/digits-test.h5 -o preds.csv --no-proba
      nncli predict runs/digits-mlp/model.h5 data/digits-test.h5 -o preds.h5
    """
    from nncli import inference

    count = inference.predict(model, input, output=output, proba=proba, stream=sys.stdout, by_position=by_position,
                              delimiter=delimiter, warn=_warn)
    if output and output != "-":
        click.echo(f"wrote {count} predictions to {output}", err=True)


@main.command(short_help="Loss and metrics of a checkpoint on a labelled CSV or HDF5 file.")
@click.argument("model", type=click.Path(dir_okay=False), shell_complete=CHECKPOINTS)
@click.argument("data", type=click.Path(dir_okay=False), shell_complete=DATA_FILES)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (default: one line of text).")
@click.option("--confusion", is_flag=True,
              help="Also the confusion matrix and per-class precision, recall and F1 (classifiers).")
@click.option("--by-position", is_flag=True, help=f"{BY_POSITION_HELP} the model's inputs, then the target.")
@click.option("--delimiter", default=None, metavar="CHAR", help=DELIMITER_HELP)
@handled
def evaluate(model, data, as_json, confusion, by_position, delimiter):
    """Loss and metrics of MODEL on a labelled DATA file.

    DATA's columns are matched as for predict (by name; --by-position: in order, the target last).
    The result goes to stdout: one line, or one JSON object with --json.

    \b
    Example:
      nncli evaluate runs/digits-mlp/model.h5 data/digits-test.h5 --confusion
    """
    import json

    from nncli import inference

    result = inference.evaluate(model, data, confusion=confusion, by_position=by_position, delimiter=delimiter,
                                warn=_warn)
    if as_json:
        extra = {"confusion": result.report} if result.report is not None else {}
        click.echo(json.dumps({"examples": result.examples, **result.metrics, **extra}))
    else:
        click.echo(f"{result.examples} examples: {_format_metrics(result.metrics)}")
        if result.report is not None:
            from nncli import metrics as metrics_mod

            click.echo("")
            for line in metrics_mod.format_report(result.report):
                click.echo(line)


@main.command(short_help="Draw the training curves of run folders to a PNG.")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="The PNG to write (default: RUN/curves.png for one run, compare.png for several; "
                   "'-': stdout). An existing file that is not a PNG is never replaced.")
@handled
def plot(runs, output):
    """Draw the training curves of RUN folders (several: side by side, to compare).

    Reads each folder's metrics.csv and writes a PNG (default RUN/curves.png for one run,
    compare.png for several); the file written is named on stderr. Needs matplotlib.

    \b
    Example:
      nncli plot runs/iris runs/iris-32 -o compare.png
    """
    from nncli import plot as plot_mod

    path = plot_mod.plot_runs(runs, output)
    if str(path) != "-":
        click.echo(f"wrote {path}", err=True)


def _json_safe(value):
    """`value` for strict JSON: NaN and infinities (e.g. best_value of a run without one) become null."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@main.command(short_help="Show the network, training history and config stored in a checkpoint.")
@click.argument("model", type=click.Path(dir_okay=False), shell_complete=CHECKPOINTS)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (default: text).")
@handled
def inspect(model, as_json):
    """Show the network, training history and config stored in MODEL.

    Prints to stdout: the layer table (name, type, output shape, trainable parameters), the
    history's last values and best epoch, and the resolved config the run trained with (its --set
    recorded on a '# --set:' line).

    \b
    Example:
      nncli inspect runs/digits-mlp/model.h5
    """
    import json

    from nncli import inference

    info = inference.inspect(model)
    if as_json:
        click.echo(json.dumps(_json_safe(info), indent=2, allow_nan=False))
        return
    click.echo(f"{info['path']}: nncli checkpoint (nncli {info['nncli_version']}, {info['created']}), "
               f"epoch {info['epoch']}, step {info['step']}, backend {info['backend']}")
    click.echo(f"task {info['task']}, loss {info['loss']}, input shape {tuple(info['input_shape'])}, "
               f"normalization {info['normalization']}")
    if info["classes"]:
        click.echo(f"classes: {', '.join(info['classes'])}")
    if info.get("target_scaling"):
        ts = info["target_scaling"]
        click.echo(f"target standardised for training: mean {_short(ts['mean'])}, std {_short(ts['std'])} "
                   f"(predictions in the target's units)")
    for line in info["columns"] or []:
        click.echo(line)
    click.echo("")
    for line in _layer_table(info["layers"], info["total_params"]):
        click.echo(line)
    hist = info["history"]
    if hist.get("loss"):
        click.echo("")
        keys = [k for k in hist if k not in ("seconds", "learning_rate")]
        click.echo(f"history: {len(hist['loss'])} epochs; best epoch {info['best_epoch']}; last: "
                   + "  ".join(f"{k} {hist[k][-1]:.4f}" for k in keys))
    click.echo("")
    click.echo("config:")
    for line in info["config"].rstrip().splitlines():
        click.echo(f"  {line}")


@main.command(short_help="The backends, BLAS, compile cache and devices of this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (default: text).")
@handled
def doctor(as_json):
    """Backends available, the BLAS linked, the compile cache and the devices.

    Prints to stdout what `backend: auto` and `device: auto` will find on this machine.

    \b
    Example:
      nncli doctor --json
    """
    import json

    from nncli import doctor as doctor_mod

    info = doctor_mod.report()
    click.echo(json.dumps(info, indent=2) if as_json else "\n".join(doctor_mod.lines(info)))


@main.command(short_help="Export a checkpoint to ONNX, checked by onnxruntime before it is written.")
@click.argument("model", type=click.Path(dir_okay=False), shell_complete=CHECKPOINTS)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The .onnx file to write (atomically; never one of the inputs).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (14 to 21).")
@handled
def export(model, output, opset):
    """Export MODEL (a checkpoint) to ONNX, checked by onnxruntime against nncli first.

    The graph takes the raw features (the stored normalisation is part of it) and outputs the class
    probabilities (class names in the model's metadata) or the values. It is checked with
    onnx.checker and run by onnxruntime on a few rows against nncli's own outputs; a difference
    above 1e-4, or a layer that cannot be exported, is an error and no file is written.

    \b
    Example:
      nncli export runs/iris/model.h5 -o iris.onnx
    """
    from nncli.export import onnx as onnx_export

    result = onnx_export.export(model, output, opset=opset)
    click.echo(f"wrote {result.path} (opset {result.opset}, {result.nodes} nodes, output '{result.output}'; "
               f"max difference from nncli {result.max_diff:.2g})", err=True)


@main.command(short_help="Serve a checkpoint's predictions over HTTP, joining concurrent requests.")
@click.argument("model", type=click.Path(dir_okay=False), shell_complete=CHECKPOINTS)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--max-batch", type=click.IntRange(1, 65536), default=256, show_default=True,
              help="Rows per call of the compiled predict function (1: no micro-batching).")
@click.option("--max-wait-ms", type=click.FloatRange(0, 10_000), default=5.0, show_default=True,
              help="How long a batch waits for more requests to join it.")
@click.option("--max-body-mb", type=float, default=10.0, show_default=True, help="Largest request body (413 above).")
@click.option("--max-rows", type=click.IntRange(1), default=100_000, show_default=True,
              help="Most rows per request (413 above).")
@click.option("--timeout-s", type=float, default=10.0, show_default=True,
              help="A connection silent this long is dropped.")
@handled
def serve(model, host, port, max_batch, max_wait_ms, max_body_mb, max_rows, timeout_s):
    """Serve predictions of MODEL over HTTP: POST /predict, GET /info, GET /health.

    /predict takes {"instances": [{column: value, ...}]}, {"inputs": [[...]]} or text/csv with a
    header, and answers with the numbers `nncli predict` prints; a bad request is a 400 with the
    CLI's one-line message. Requests arriving within --max-wait-ms are joined into one call of the
    compiled function. Binds to 127.0.0.1 by default; Ctrl-C or SIGTERM finishes the requests in
    flight, then exits 0.

    \b
    Example:
      nncli serve runs/iris/model.h5 --port 8000
    """
    import threading

    from nncli import serve as serve_mod

    service = serve_mod.Service(model, max_batch=max_batch, max_wait_ms=max_wait_ms, max_rows=max_rows)
    server = serve_mod.make_server(service, host, port, max_body_mb=max_body_mb, timeout_s=timeout_s)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"serving {model} on {serve_mod.url(server)} (POST /predict, GET /info, GET /health; "
               f"Ctrl-C to stop)", err=True)
    serve_mod.run(server, service, stop)
    click.echo("stopped: requests in flight finished", err=True)


@main.command("config", short_help="Print a config resolved (every default), check it (--check), or start one (--init).")
@click.argument("config", required=False, type=click.Path(dir_okay=False), shell_complete=CONFIG_FILES)
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the resolved config as JSON (default: commented YAML).")
@click.option("--check", is_flag=True,
              help="Dry run: validate, read the data files' headers and first rows, infer every layer's "
                   "shape, print the layer table; compiles nothing.")
@click.option("--init", "init", is_flag=True, help="Print a commented starting config (no CONFIG argument).")
@click.option("--template", type=click.Choice(["mlp", "cnn", "rnn", "tabular"]), default="mlp", show_default=True,
              help="The starting config --init prints.")
@handled
def config_command(config, sets, as_json, check, init, template):
    """Print CONFIG resolved: every key, every default filled in, after any --set.

    The YAML printed to stdout trains unchanged (`nncli train` on it is the same run): each value
    given in the file is commented with its line, each --set value with '--set'; a value without a
    comment is the default. Data paths are made absolute. --check instead validates without
    compiling or training (exit 0, or 2 with one 'Error:' line; 1 for unreadable data) and prints
    the data files checked and the layer table. --init prints a starting config for a shipped data
    file; its paths are relative to the repository root, so save it there.

    \b
    Examples:
      nncli config configs/iris.yaml --set layers[0].units=32
      nncli config configs/digits-cnn.yaml --check
      nncli config --init --template cnn > my-cnn.yaml
    """
    from nncli.errors import ConfigError

    if init:
        if config or sets or as_json or check:
            raise ConfigError("--init prints a starting config: give it no CONFIG, --set, --json or --check")
        from nncli import configtool

        click.echo(configtool.template(template), nl=False)
        return
    if config is None:
        raise ConfigError("give a CONFIG file (or --init for a starting config); see nncli config --help")
    import json
    import time

    from nncli import configtool

    start = time.perf_counter()
    spec = configtool.resolve(config, sets)
    if check:
        result = configtool.check(spec)
        click.echo(f"{spec.source}: ok: the config is valid, the data files are readable and the layer shapes "
                   f"fit inputs of shape {result.input_shape} (nothing compiled; "
                   f"{time.perf_counter() - start:.2f}s)")
        for line in result.files:
            click.echo(f"  {line}")
        click.echo("")
        for line in _layer_table(result.layers, result.total_params):
            click.echo(line)
        return
    if as_json:
        click.echo(json.dumps(configtool.resolved_plain(spec), indent=2))
    else:
        click.echo(configtool.commented_yaml(spec), nl=False)


@main.command(short_help="Print the config file's JSON Schema (draft 2020-12), for editors.")
@handled
def schema():
    """Print the JSON Schema (draft 2020-12) of nncli config files to stdout.

    It is generated from the same key declarations that validate configs: types, defaults, enums
    (layer types, activations, initializers, optimizers, losses, metrics, schedules), ranges and
    descriptions; one oneOf branch per layer type, and no unknown keys anywhere. What it cannot
    say (files exist, layer shapes fit) `nncli config CONFIG --check` checks.

    \b
    Example:
      nncli schema > nncli.schema.json
    (then, in a config: # yaml-language-server: $schema=nncli.schema.json)
    """
    import json

    from nncli import schema_export

    click.echo(json.dumps(schema_export.config_schema(), indent=2))


# --- grad -------------------------------------------------------------------
# (the `grad` command block: owned by the expression-language work)
def _grad_lines(result, show: bool, with_value: bool) -> list:
    """The text form of a nncli.grad.GradResult: numbers as repr(float), full float64 precision."""
    lines = [f"value {result.value!r}"] if with_value else []
    single = len(result.wrt) == 1
    for name, v in result.derivative.items():
        lines.append(repr(v) if single else f"{name} {v!r}")
    if result.hessian is not None:
        lines.append("hessian:")
        for name, row in zip(result.wrt, result.hessian):
            lines.append(f"{name} " + " ".join(repr(v) for v in row))
    if show:
        lines += [f"{label} = {text}" for label, text in result.shown.items()]
    return lines


@main.command(context_settings={"ignore_unknown_options": True},
              short_help="Derivatives of an expression at a point (PyTensor's symbolic gradient).")
@click.argument("expression")
@click.option("--at", "at", multiple=True, metavar="[NAME=]VALUE",
              help="The point: --at 15 (one variable), --at x=1 --at y=2 or --at x=1,y=2.")
@click.option("--wrt", multiple=True, metavar="NAME[,NAME]", help="Differentiate only these variables.")
@click.option("--order", type=click.IntRange(min=1), default=1, show_default=True,
              help="The N-th derivative (one variable).")
@click.option("--hessian", is_flag=True, help="Also the matrix of second derivatives.")
@click.option("--show", is_flag=True, help="Also print each derivative as a simplified expression.")
@click.option("--value", "with_value", is_flag=True, help="Also print f at the point.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@click.option("--plot", type=click.Path(dir_okay=False), metavar="OUT.png",
              help="Plot f and its derivative around the point (needs matplotlib).")
@click.option("--range", "span", metavar="A:B", help="The x range of --plot (default: the point +- 3).")
@handled
def grad(expression, at, wrt, order, hessian, show, with_value, as_json, plot, span):
    """Derivatives of EXPRESSION at a point, by PyTensor's symbolic gradient.

    \b
      nncli grad "exp(sin(x**2))" --at 15          -> 4.347404090286685
      nncli grad "x*y + sin(x)" --at x=1,y=2 --show --value
      nncli grad "log(x)" --at 2 --order 3
      nncli grad --at 3 -- "-x**2"                 (an expression starting with -)

    The language: numbers, variables, pi, e, + - * / ** (with unary minus),
    parentheses and sin cos tan arcsin arccos arctan sinh cosh tanh exp expm1
    log log1p log2 log10 sqrt abs sigmoid softplus erf min max (plus sign, eq,
    where, used by printed derivatives). Results go to stdout (--order 1 by
    default); exit 1 when a result is inf or nan.
    """
    import json

    from nncli.grad import derivatives
    from nncli.errors import ConfigError

    if span is not None and plot is None:
        raise ConfigError("--range is only used with --plot")
    if plot == "-":
        raise ConfigError("--plot -: the results already go to stdout; give a file name for the picture")
    if plot:  # checked before any work: a picture never replaces a file of another kind
        from nncli import fileio

        plot = fileio.output_target(plot, picture=True, what="picture")
    result = derivatives.compute(expression, at, wrt=wrt, order=order, hessian=hessian, show=show)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        for line in _grad_lines(result, show, with_value):
            click.echo(line)
    if plot:
        derivatives.plot(expression, result, plot, span)
        click.echo(f"wrote plot to {plot.path}", err=True)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if not result.finite:
        sys.exit(1)


@main.command(short_help="Search hyperparameters: many `nncli train` runs, here or on a Dask cluster.")
@click.argument("sweep_file", type=click.Path(dir_okay=False), shell_complete=CONFIG_FILES)
@click.option("--output", "-o", type=click.Path(file_okay=False), help="The sweep folder (default sweeps/<name>).")
@click.option("--samples", type=click.IntRange(min=1), help="Trials in all (default: the sweep file's).")
@click.option("--parallel", type=click.IntRange(min=1), help="Concurrent trials (default: the sweep file's).")
@click.option("--cluster", metavar="ADDRESS", help="Run trials on this Dask scheduler (tcp://host:8786).")
@click.option("--scheduler-file", type=click.Path(dir_okay=False), help="Run trials on the Dask cluster of this scheduler file.")
@click.option("--resume", is_flag=True, help="Continue the sweep in the output folder.")
@handled
def sweep(sweep_file, output, samples, parallel, cluster, scheduler_file, resume):
    """Search the hyperparameters of SWEEP_FILE's base config (Optuna), each trial an `nncli train`
    run in <output>/trial-NNN; results.csv, best.yaml and sweep.png in the sweep folder. Needs
    nncli[sweep]. README.md, section 'Sweeps', describes the file. Trials run as processes on
    this machine, or as tasks on a Dask cluster with --scheduler-file or --cluster.

    \b
    Examples:
      nncli sweep search.yaml
      nncli sweep search.yaml --parallel 2 --samples 40
      nncli sweep search.yaml --scheduler-file /shared/scheduler.json
      nncli sweep search.yaml --resume

    \b
    Exit codes: 0 done; 1 a runtime error; 2 bad usage or sweep file; 130 interrupted (--resume continues).
    """
    from nncli import progress
    from nncli.sweep import study

    reporter = progress.for_trials(sys.stderr)
    try:
        summary = study.start(sweep_file, output, samples, parallel, cluster, scheduler_file, resume, report=reporter)
    finally:
        reporter.close()
    click.echo(f"best: trial {summary['number']} value {summary['value']} params {summary['params']}; "
               f"{summary['folder']}/results.csv, best.yaml ({summary['seconds']:.1f}s)")


# --- end grad ---------------------------------------------------------------


if __name__ == "__main__":  # pragma: no cover
    main()
