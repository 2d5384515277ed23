"""`nncli train`: data -> network -> one compiled step -> epoch loop -> checkpoints.

The loop does O(1) Python work per batch (a call of the compiled step and a
few scalar additions); shuffling is one numpy permutation per epoch.

Files in the output folder:
  last.h5      the latest state, for --resume (written after every epoch and on Ctrl-C)
  model.h5     the best epoch by the monitored value (the last epoch without validation)
  metrics.csv  one row per epoch

A checkpoint always describes a batch boundary: the epoch in progress, how
many of its batches are done, the running sums and the shuffle generator's
state at the start of that epoch. So resuming replays the same permutation
and continues bit for bit, whether the run stopped at an epoch's end or was
interrupted mid-epoch.
"""

from __future__ import annotations

import csv
import io
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nncli import backend, checkpoint, data, fileio, inference, optimizers, plot, progress
from nncli import metrics as metrics_mod, regularization, schedules
from nncli import functions, overrides as overrides_mod, spec as spec_mod, steps as steps_mod, tensorboard
from nncli.errors import CheckpointError, ConfigError, Interrupted, TrainingError
from nncli.layers import batch_shards
from nncli.signals import exit_code, signals_to_flag
from nncli.training import lock
from nncli.training.prepare import Prepared, prepare

# Top-level config keys that `--resume` may change; any other difference from the config stored in
# last.h5 is refused. They say how long, where and how fast the run goes on, not what model, data,
# loss or metrics it has, nor what it logs (a changed backend or device continues the run, but bit-exactness with an
# uninterrupted run needs the same; a lower learning_rate is the usual way to go on more slowly).
# A fresh run may replace a run of the same config (SAME_RUN: a rerun); any other needs --overwrite.
SAME_RUN = ("epochs", "checkpoint_interval", "output", "backend", "device", "tensorboard")
RESUME_MAY_CHANGE = (*SAME_RUN, "learning_rate")
# The run's own settings that `--resume` takes from last.h5 unless given again on the command line.
RESTORED = ("epochs", "seed", "backend", "device")


@dataclass
class Result:
    output: Path
    epochs_run: int
    best_epoch: int
    best: dict[str, float]
    last: dict[str, float]
    test: dict[str, float] | None
    seconds: float
    backend: str
    stopped_early: bool = False
    history: dict[str, list[float]] = field(default_factory=dict)
    already_finished: str = ""  # set when --resume found a finished run and did nothing: why it had ended




def _write_metrics_csv(path: Path, history: Mapping[str, list[float]]) -> None:
    keys = ["epoch"] + [k for k in history]
    n = max((len(v) for v in history.values()), default=0)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(keys)
    for i in range(n):
        writer.writerow([i + 1] + [repr(float(history[k][i])) if i < len(history[k]) else "" for k in history])
    try:
        fileio.write_text(path, buf.getvalue())
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write: {exc.strerror or exc}; the previous file is unchanged") from None


class _Saver:
    """Writes last.h5, model.h5 and metrics.csv at most every `interval` seconds.

    Checkpoints of finished epochs are staged in memory and written together,
    so tiny epochs are not dominated by file writes; `flush` writes whatever
    is staged (before an error, an interrupt or the end of training).
    """

    def __init__(self, out: Path, interval: float):
        self.out, self.interval = out, interval
        self.last: checkpoint.Checkpoint | None = None
        self.best: checkpoint.Checkpoint | None = None
        self.saved_at = time.perf_counter()
        self.wrote_last = False  # this run has written last.h5

    def stage(self, ck: checkpoint.Checkpoint, improved: bool) -> None:
        self.last = ck
        if improved:
            self.best = ck

    def maybe_flush(self, force: bool = False) -> None:
        if force or time.perf_counter() - self.saved_at >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.best is not None:
            checkpoint.save(self.best, self.out / "model.h5")
            self.best = None
        if self.last is not None:
            checkpoint.save(self.last, self.out / "last.h5")
            self.wrote_last = True
            _write_metrics_csv(self.out / "metrics.csv", self.last.history)
            self.last = None
        self.saved_at = time.perf_counter()


class Trainer:
    def __init__(self, prep: Prepared, choice: backend.Choice, reporter: progress.Silent,
                 flag: dict | None = None, command: list[str] | None = None):
        """`flag` is set by train()'s signal handlers (None: fit installs its own); `command` is
        the `nncli train` command line that continues this run (for the hint after an interrupt)."""
        self.p, self.choice, self.r = prep, choice, reporter
        self.flag = flag
        self.command = command or ["nncli", "train", prep.spec.source]
        self.saver: _Saver | None = None
        self.tb: tensorboard.Log | None = None  # the TensorBoard event stream, while training
        self.resumed = self.overwrite = False  # set by train(): for the message after an interrupt
        s = prep.spec
        self.spec = s
        self.config_yaml = s.to_yaml()
        self.out = Path(s["output"])
        self.metrics = metrics_mod.in_graph(s["metrics"])           # in the compiled graph
        self.epoch_metrics = metrics_mod.epoch_level(s["metrics"])  # numpy, from all predictions
        self.train_data = data.source(prep.x_train)  # arrays and streams alike: a data.Source
        self.val_data = data.source(prep.x_val) if prep.x_val is not None else None
        self.schedule = schedules.build(s, prep.x_val is not None)
        self.batch_size = min(s["batch_size"], len(prep.x_train))
        es = s["early_stopping"]
        has_val = prep.x_val is not None
        self.monitor = es["monitor"] if es else ("val_loss" if has_val else None)
        self.mode = es["mode"] if es else "auto"
        self.patience = es["patience"] if es else None
        self.min_delta = es["min_delta"] if es else 0.0

    # -- compile ---------------------------------------------------------------

    def compile(self) -> None:
        import pytensor

        s, net = self.spec, self.p.net
        floatx = pytensor.config.floatX
        self.lr = pytensor.shared(np.asarray(s["learning_rate"], dtype=floatx), name="learning_rate")
        self.iterations = optimizers.iterations_variable()
        opt_cfg = dict(s["optimizer"])
        self.opt = optimizers.create(opt_cfg.pop("type"), opt_cfg, clip=s["clip"])
        self.r.info(f"compiling the training graph ({self.choice.backend})...")
        t0 = time.perf_counter()
        graph, self.opt_state = functions.train_graph(
            net, s["loss"], self.metrics, self.opt, self.lr, self.batch_size, self.iterations, seed=s["seed"],
            penalty=regularization.penalty(s["regularization"]), target_scaler=self.p.target_scaler,
            class_weights=self.p.class_weights)
        self.steps = steps_mod.for_data(s["steps_per_execution"], self.choice.backend, self.batch_size,
                                        len(self.p.x_train), net.input_shape, net.output_shape)
        self.train_fn = steps_mod.compile_several(graph, self.steps, self.choice.backend)
        # the batch splits of the one-step function (the several-steps one runs it): for the checkpoint
        self.batch_slices = batch_shards.slices((self.train_fn.single or self.train_fn.fn).maker.fgraph)
        n_eval = max(len(self.p.x_val) if self.p.x_val is not None else 0, 1)
        self.eval_batch = min(max(self.batch_size, 256), n_eval) if self.p.x_val is not None else self.batch_size
        self.eval_fn = functions.compile_eval(net, s["loss"], self.metrics, self.eval_batch, self.p.target_scaler) \
            if self.p.x_val is not None else None
        self.predict_fn = functions.compile_predict(net, self.eval_batch) if self.epoch_metrics else None
        self.compile_seconds = time.perf_counter() - t0

    # -- state <-> checkpoint --------------------------------------------------

    def _checkpoint(self, epoch: int, step: int, history, best_epoch, best_value, rng_state,
                    finished: str = "") -> checkpoint.Checkpoint:
        net = self.p.net
        values = net.values()
        optimizer = {k: np.asarray(v.get_value()) for k, v in self.opt_state.named().items()}
        self._check_finite({**values, **{f"optimizer {k}": v for k, v in optimizer.items()}}, epoch, rng_state)
        return checkpoint.Checkpoint(
            config_yaml=self.config_yaml, input_shape=net.input_shape, task=self.spec.task,
            loss=self.spec["loss"], params=values, trainable=list(net.params),
            normalizer=self.p.normalizer, encoding=self.p.encoding, x_names=self.p.x_names,
            target_scaler=self.p.target_scaler,
            y_name=self.p.y_name, epoch=epoch, step=step, backend=self.choice.backend,
            optimizer_type=self.spec["optimizer"]["type"],
            optimizer=optimizer, history={k: list(v) for k, v in history.items()},
            rng={**rng_state, "batch_slices": list(self.batch_slices)},
            best_epoch=best_epoch, best_value=best_value, finished=finished, columns=self.p.columns)

    def _check_finite(self, arrays: Mapping[str, np.ndarray], epoch: int, rng_state) -> None:
        """A state with inf or nan never replaces a good checkpoint: it is the NaN stop (exit 1)."""
        for key, value in arrays.items():
            value = np.asarray(value)
            if value.dtype.kind in "fc" and not np.isfinite(value).all():
                if self.saver is not None:
                    self.saver.flush()  # the good checkpoints staged before this one
                last_path = self.out / "last.h5"
                kept = f"; kept the last good checkpoint {last_path}" if last_path.exists() else ""
                batch = rng_state.get("batch", 0)
                at = f"epoch {epoch + 1}, batch {batch}" if batch else f"epoch {epoch}"
                raise TrainingError(f"the parameters became non-finite at {at} ({key} holds inf or nan; try "
                                    f"a smaller learning_rate, weight_decay or regularization){kept}")

    def _restore(self, ck: checkpoint.Checkpoint, where: str) -> None:
        net = self.p.net
        expected = {k: v.get_value().shape for k, v in {**net.params, **net.state}.items()}
        for key, shape in expected.items():
            if key not in ck.params:
                raise CheckpointError(f"{where}: has no parameter {key}; was it trained with a different config?")
            if tuple(ck.params[key].shape) != tuple(shape):
                raise CheckpointError(f"{where}: parameter {key} has shape {tuple(ck.params[key].shape)}, "
                                      f"the config builds {tuple(shape)}")
        net.set_values(ck.params)
        for key, var in self.opt_state.named().items():
            if key not in ck.optimizer:
                raise CheckpointError(f"{where}: has no optimizer state {key} (optimizer changed since?)")
            shape = tuple(var.get_value().shape)
            if tuple(ck.optimizer[key].shape) != shape:
                raise CheckpointError(f"{where}: damaged checkpoint: optimizer state {key} has shape "
                                      f"{tuple(ck.optimizer[key].shape)}, the config builds {shape}")
            var.set_value(np.asarray(ck.optimizer[key], dtype=var.dtype))

    @staticmethod
    def _check_position(ck: checkpoint.Checkpoint, where: str, n_batches: int, n_sums: int) -> None:
        """A mid-epoch resume point (checkpoint.load checked the types) fits this run's epoch."""
        batch, sums = ck.rng["batch"], ck.rng["sums"]
        if batch and not (batch < n_batches and len(sums) == n_sums):
            raise CheckpointError(f"{where}: damaged checkpoint: /rng is at minibatch {batch} with {len(sums)} "
                                  f"running sums; an epoch here has {n_batches} minibatches and {n_sums} sums")

    # -- the loop --------------------------------------------------------------

    def fit(self, resume: bool = False) -> Result:
        """Train, holding the output folder's lock (a second run on it is refused)."""
        if self.flag is None:  # used as a library object: SIGINT/SIGTERM set our own flag
            self.flag = {}
            with signals_to_flag(self.flag):
                return self.fit(resume)
        with lock.hold(self.out):
            try:
                return self._fit(resume)
            finally:
                if self.tb is not None:
                    self.tb.close()

    def _fit(self, resume: bool = False) -> Result:
        s, p, r = self.spec, self.p, self.r
        epochs = s["epochs"]
        seed = s["seed"]
        self.out.mkdir(parents=True, exist_ok=True)
        last_path, best_path = self.out / "last.h5", self.out / "model.h5"
        flag = self.flag
        saver = self.saver = _Saver(self.out, s["checkpoint_interval"])
        self.resumed = self.resumed or resume
        shuffle_rng = np.random.default_rng([seed, 2])
        params, state = p.net.initial_values(np.random.default_rng([seed, 0]))
        p.net.create_shared(params, state)
        self.compile()
        r.info(f"compiled in {self.compile_seconds:.1f}s; {self.steps} training step"
               f"{'s' if self.steps != 1 else ''} per call")
        if flag.get("signal"):  # Ctrl-C while compiling (JAX would have swallowed a KeyboardInterrupt)
            self._interrupted(flag["signal"])

        history: dict[str, list[float]] = {}
        start_epoch, start_batch, sums = 0, 0, None
        watch = metrics_mod.Monitor(self.monitor or "loss", self.mode, self.min_delta)  # the best epoch so far
        if resume:
            if not last_path.exists():
                raise CheckpointError(f"{last_path}: nothing to resume (no last.h5 in {self.out})")
            ck = checkpoint.load(last_path)
            if ck.input_shape != p.net.input_shape:
                raise CheckpointError(f"{last_path}: trained on inputs of shape {ck.input_shape}, "
                                      f"the data has {p.net.input_shape}")
            self._check_position(ck, str(last_path), -(-len(p.x_train) // self.batch_size), 1 + len(self.metrics))
            self._restore(ck, str(last_path))
            history = {k: list(v) for k, v in ck.history.items()}
            start_epoch = ck.epoch
            start_batch = int(ck.rng.get("batch", 0))
            sums = np.asarray(ck.rng["sums"], dtype=np.float64) if start_batch else None
            shuffle_rng.bit_generator.state = ck.rng["shuffle"]
            watch.best, watch.best_epoch = ck.best_value, ck.best_epoch
            before = ck.rng.get("batch_slices")
            if before is not None and list(before) != self.batch_slices:
                r.info(f"note: {last_path} was trained with its recurrent layers' batches in "
                       f"{batch_shards.describe(before)}; this process runs them in "
                       f"{batch_shards.describe(self.batch_slices)} (one slice per CPU device; "
                       f"{backend.CPU_DEVICES_ENV} sets the count): the continued run matches an uninterrupted "
                       "one to float32 rounding, not bit for bit")
            if start_epoch >= epochs:
                r.info(f"{last_path} already has {start_epoch} epochs (epochs: {epochs}); nothing to do")
            else:
                r.info(f"resuming from {last_path} at epoch {start_epoch + 1}"
                       + (f", batch {start_batch + 1}" if start_batch else ""))

        self.tb = tensorboard.open_log(s["tensorboard"], self.out, self.config_yaml, start_epoch, resume)
        n = len(p.x_train)
        n_batches = -(-n // self.batch_size)
        names = ["loss", *self.metrics]
        t_start = time.perf_counter()
        stopped_early = False
        for epoch in range(start_epoch, epochs):
            if s["schedule"]:  # a function of the finished epochs' history: the same after --resume
                self.lr.set_value(np.asarray(self.schedule.lr(epoch, history), dtype=self.lr.dtype))
            r.learning_rate(float(self.lr.get_value()))
            epoch_rng_state = shuffle_rng.bit_generator.state
            order = self.train_data.shuffle_order(shuffle_rng) if s["data"]["shuffle"] else None
            first = start_batch if epoch == start_epoch else 0
            totals = sums if (epoch == start_epoch and sums is not None) else np.zeros(len(names))
            seen = float(min(first * self.batch_size, n))
            r.epoch_start(epoch + 1, epochs, n_batches, first)
            t0 = time.perf_counter()
            # The step's outputs are read back in groups (`_Pending`): JAX computes asynchronously,
            # so the next batch is prepared while the current one runs.
            pending, running = _Pending(), {}
            batches = self.train_data.batches(p.t_train, self.batch_size, order)
            for b0, count, out in steps_mod.calls(self.train_fn, batches, first):
                pending.add(b0, out)
                done = b0 + count
                seen = float(min(done * self.batch_size, n))
                if pending.due() or done == n_batches:
                    totals = self._collect(pending, totals, epoch, saver, last_path)
                    running = {k: v / seen for k, v in zip(names, totals)}
                r.batch(done, running, int(seen))
                if flag.get("signal") and done < n_batches:
                    totals = self._collect(pending, totals, epoch, saver, last_path)
                    r.close()
                    saver.stage(self._checkpoint(epoch, int(self.iterations.get_value()), history, watch.best_epoch,
                                                 watch.best, {"shuffle": epoch_rng_state, "batch": done,
                                                              "sums": [float(v) for v in totals]}), False)
                    self._interrupted(flag["signal"])
            logs = {k: float(v / max(seen, 1.0)) for k, v in zip(names, totals)}
            if self.eval_fn is not None:
                val = functions.run_sums(self.eval_fn, self.val_data.batches(p.t_val, self.eval_batch))
                logs.update({f"val_{k}": v for k, v in val.items()})
            if self.predict_fn is not None:  # epoch-level metrics, from the outputs for every example of each set
                units = p.target_scaler.invert  # rmse, r2 in the target's own units
                sets = [(units(t), units(functions.predict_array(self.predict_fn, x))) if x is not None
                        else (None, None) for x, t in ((p.x_train, p.t_train), (p.x_val, p.t_val))]
                logs = metrics_mod.with_epoch_metrics(logs, s["metrics"], s["loss"], *sets)
            seconds = time.perf_counter() - t0
            for k, v in logs.items():
                history.setdefault(k, []).append(v)
            history.setdefault("learning_rate", []).append(float(self.lr.get_value()))
            history.setdefault("seconds", []).append(seconds)
            r.epoch_end(epoch + 1, epochs, logs, seconds)
            value = logs[self.monitor] if self.monitor else logs["loss"]
            improved = self.monitor is None or watch.improved(value)
            if improved:
                watch.best, watch.best_epoch = value, epoch + 1
            # Keras' rule: stop once `patience` epochs in a row have not improved on the best
            stop = self.patience is not None and not improved and epoch + 1 - watch.best_epoch >= self.patience
            finished = "early_stopping" if stop else ("epochs" if epoch + 1 == epochs else "")
            saver.stage(self._checkpoint(epoch + 1, int(self.iterations.get_value()), history, watch.best_epoch,
                                         watch.best, {"shuffle": shuffle_rng.bit_generator.state, "batch": 0,
                                                      "sums": []}, finished), improved)
            if self.tb is not None:  # before the checkpoint is written: the events never hold less than last.h5
                self.tb.epoch(epoch + 1, history, p.net.values)
            saver.maybe_flush(force=bool(finished) or bool(flag.get("signal")))
            if flag.get("signal"):
                self._interrupted(flag["signal"])  # flushes again: a signal may land after the decision above
            if stop:
                r.info(f"early stopping: {self.monitor} has not improved for {self.patience} epochs "
                       f"(best {watch.best:.4f} at epoch {watch.best_epoch})")
                stopped_early = True
                break
        saver.flush()
        if flag.get("signal"):  # after the final save: the state is complete, but the user asked to stop
            self._interrupted(flag["signal"])
        elapsed = time.perf_counter() - t_start
        if not best_path.exists():
            raise CheckpointError(f"{best_path}: missing after training")
        last_logs = {k: v[-1] for k, v in history.items() if k not in ("seconds", "learning_rate")} if history else {}
        best_logs = {k: v[watch.best_epoch - 1] for k, v in history.items()
                     if k not in ("seconds", "learning_rate")} if history and watch.best_epoch else {}
        return Result(self.out, len(history.get("loss", [])), watch.best_epoch, best_logs, last_logs, None,
                      elapsed, self.choice.describe(), stopped_early, history)

    def _collect(self, pending: "_Pending", totals, epoch: int, saver: "_Saver", last_path: Path):
        """Read back the pending step outputs; a non-finite loss ends training (last good checkpoint kept)."""
        totals, bad = pending.collect(totals)
        if bad is not None:
            self.r.close()
            saver.flush()
            kept = f"; kept the last good checkpoint {last_path}" if last_path.exists() else ""
            raise TrainingError(f"the loss became {bad[1]} at epoch {epoch + 1}, batch {bad[0] + 1} "
                                f"(try a smaller learning_rate){kept}")
        return totals

    def _interrupted(self, signum: int) -> None:
        """Stop for SIGINT/SIGTERM: write what is staged, then say what is on disk (checked by reading it)."""
        code = exit_code(signum)
        self.r.close()
        if self.saver is not None:
            self.saver.flush()
        raise Interrupted(interrupted_message(self.out / "last.h5", self.command,
                                              self.resumed or (self.saver is not None and self.saver.wrote_last),
                                              self.overwrite), exit_code=code)


def interrupted_message(last_path: Path, command: list[str], saved: bool, overwrite: bool = False) -> str:
    """The line after an interrupt; "state saved" only when last.h5 holds this run's state and loads."""
    ck = None
    if saved:
        try:
            ck = checkpoint.load(last_path)
        except CheckpointError:
            ck = None
    if ck is None:
        again = [*command, "--overwrite"] if overwrite else command
        return f"interrupted before the first checkpoint; nothing saved; start again with: {shlex.join(again)}"
    if ck.finished:
        return f"interrupted after training finished; state saved to {last_path}"
    return f"interrupted; state saved to {last_path}; continue with: {shlex.join([*command, '--resume'])}"


class _Pending:
    """Training-step outputs not yet read back from the device.

    Reading a JAX result waits for it, so reading one per step would stop the Python side from
    preparing the next batch while XLA computes. Outputs are collected every `EVERY` steps or
    `SECONDS` of wall time (and at the end of an epoch, and before a checkpoint), then checked
    for a non-finite loss, reporting the first batch that had one.
    """

    EVERY = 16
    SECONDS = 0.2

    def __init__(self):
        self.items: list = []
        self.t = time.perf_counter()

    def add(self, batch: int, out) -> None:
        """The output of a call that trained from minibatch `batch` on: one row per minibatch."""
        self.items.append((batch, out))

    def due(self) -> bool:
        return len(self.items) >= self.EVERY or time.perf_counter() - self.t >= self.SECONDS

    def collect(self, totals: np.ndarray) -> tuple[np.ndarray, tuple[int, float] | None]:
        bad = None
        for batch, out in self.items:
            rows = np.asarray(out, dtype=np.float64).reshape(-1, len(totals))
            finite = np.isfinite(rows[:, 0])
            if not finite.all():
                i = int(np.argmin(finite))
                bad = (batch + i, float(rows[i, 0]))
                totals = totals + rows[:i].sum(axis=0)
                break
            totals = totals + rows.sum(axis=0)
        self.items.clear()
        self.t = time.perf_counter()
        return totals, bad


def train(config: str | os.PathLike, *, output: str | None = None, resume: bool = False, overwrite: bool = False,
          epochs: int | None = None, seed: int | None = None, backend_name: str | None = None,
          device: str | None = None, reporter: progress.Silent | None = None, sets: tuple[str, ...] = (),
          tensorboard: bool = False) -> Result:
    """Train from a config file; the library entry point behind `nncli train`.

    SIGINT and SIGTERM only set a flag for the whole call (JAX would swallow a KeyboardInterrupt
    raised inside its callbacks); the flag is checked between batches and after each stage, and
    ends the run with `Interrupted` (exit 130/143) once the state on disk is what the message says.
    """
    flag: dict[str, Any] = {}
    with signals_to_flag(flag):
        return _train(config, output, resume, overwrite, epochs, seed, backend_name, device,
                      reporter or progress.Silent(), flag, tuple(sets), tensorboard)


def _train(config, output, resume, overwrite, epochs, seed, backend_name, device, reporter, flag, sets=(),
           tensorboard_on=False) -> Result:
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the output folder and --overwrite replaces it: "
                          "give one of them")
    given = {"epochs": epochs, "seed": seed, "backend": backend_name, "device": device}
    overrides = {**given, "output": os.path.abspath(output) if output else None}
    command = ["nncli", "train", str(config)] + (["-o", overrides["output"]] if output else [])
    command += [f"--{k}={v}" for k, v in given.items() if v is not None] + ["--tensorboard"] * tensorboard_on
    spec = spec_mod.load(config, overrides, sets)
    if tensorboard_on and not spec["tensorboard"]:  # --tensorboard: on, keeping the config's histograms if any
        overrides["tensorboard"] = True
        spec = spec_mod.load(config, overrides, sets)
    tensorboard.require(spec)  # a missing tensorboardX is an error before anything is read or written
    out = Path(spec["output"])
    _check_inputs_are_not_outputs(spec, out)
    if resume:
        spec, done = _resume_spec(config, spec, overrides, given, reporter, sets)
        if done is not None:
            return done
    choice = backend.choose(spec["backend"], spec["device"], [l.kind for l in spec.layers], spec["batch_size"])
    backend.activate(choice)
    prep = prepare(spec)
    if not resume and not overwrite:  # after the data checks (their errors first), before any write
        _refuse_another_run(spec, out)
    for line in prep.notes:  # the resolved typed columns, before compiling
        reporter.info(line)
    reporter.info(f"nncli: {spec['name']}: {len(prep.x_train)} training examples"
                  + (f", {len(prep.x_val)} validation" if prep.x_val is not None else "")
                  + f"; {choice.describe()}")
    trainer = Trainer(prep, choice, reporter, flag, command)
    trainer.resumed, trainer.overwrite = resume, overwrite
    if flag.get("signal"):
        trainer._interrupted(flag["signal"])
    result = trainer.fit(resume=resume)
    # last.h5 is complete and marked finished: a kill from here on leaves a run that --resume
    # reports as finished, so the post-training work never changes the weights
    plot.after_training(result, reporter)
    if spec["data"]["test"]:
        result.test = inference.evaluate(result.output / "model.h5", spec["data"]["test"],
                                         header=spec["data"]["header"], warn=reporter.info).metrics
    if flag.get("signal"):
        trainer._interrupted(flag["signal"])
    return result


def _stored_config(ck: checkpoint.Checkpoint, where: Path) -> dict:
    import yaml

    try:
        stored = yaml.safe_load(ck.config_yaml)
    except (yaml.YAMLError, RecursionError):
        stored = None
    if not isinstance(stored, dict):
        raise CheckpointError(f"{where}: damaged checkpoint: its stored config is not a YAML mapping")
    return stored


def config_differences(a: Any, b: Any, path: str = "") -> list[str]:
    """The key paths (`data.normalize`, `layers[0].units`) where two plain configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in [*a, *(k for k in b if k not in a)]:
            sub = f"{path}.{k}" if path else str(k)
            out += config_differences(a[k], b[k], sub) if k in a and k in b else [sub]
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in config_differences(x, y, f"{path}[{i}]")]
    same = a == b and type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)
    return [] if same else [path or "(the whole config)"]


def _run_differences(spec: spec_mod.Spec, stored: dict, may_change=RESUME_MAY_CHANGE) -> list[str]:
    import yaml

    mine = yaml.safe_load(spec.to_yaml())
    return [k for k in config_differences(mine, stored) if k.split(".")[0].split("[")[0] not in may_change]


def _resume_spec(config, spec: spec_mod.Spec, overrides: dict, given: dict, reporter: progress.Silent, sets=()):
    """The spec of the run in last.h5: its own epochs, seed, backend and device unless given again
    on the command line; a config that differs in any other key is refused (nothing changed)."""
    last_path = Path(spec["output"]) / "last.h5"
    if not last_path.exists():
        raise CheckpointError(f"{last_path}: nothing to resume (no last.h5 in {spec['output']})")
    ck = checkpoint.load(last_path)
    stored = _stored_config(ck, last_path)
    set_now = {overrides_mod.parse_path(s.split("=", 1)[0])[0] for s in sets}  # --set epochs=N counts as given
    restored = {k: stored[k] for k in RESTORED if given[k] is None and k not in set_now and k in stored}
    for k, v in restored.items():
        if spec[k] != v:
            reporter.info(f"{k}: {v} as the run in {last_path} had it (the config says {spec[k]}; "
                          f"give --{k} to change it)")
    # the run's own --set (recorded in its stored config), then any given again (they win)
    spec = spec_mod.load(config, {**overrides, **restored}, tuple(overrides_mod.merge(
        overrides_mod.recorded(ck.config_yaml), sets)))
    diff = _run_differences(spec, stored)
    if diff:
        raise ConfigError(f"{spec.source}: differs from the run in {last_path} in {', '.join(diff)}; --resume "
                          f"continues a run with its own config (only {', '.join(RESUME_MAY_CHANGE)} may "
                          f"change); train into another --output, or give --overwrite to start over")
    if not ck.finished and ck.epoch < spec["epochs"]:
        return spec, None
    if ck.finished == "epochs" and ck.epoch < spec["epochs"]:  # --epochs raised: train on (as Keras does)
        return spec, None
    why = {"early_stopping": f"stopped early after epoch {ck.epoch}",
           "epochs": f"reached its {ck.epoch} epochs; give --epochs N > {ck.epoch} to train on"}.get(
        ck.finished, f"it has {ck.epoch} epochs (epochs: {spec['epochs']})")
    hist = {k: v for k, v in ck.history.items() if k not in ("seconds", "learning_rate")}
    best = {k: v[ck.best_epoch - 1] for k, v in hist.items() if 0 < ck.best_epoch <= len(v)}
    return spec, Result(Path(spec["output"]), len(ck.history.get("loss", [])), ck.best_epoch, best,
                        {k: v[-1] for k, v in hist.items() if v}, None, 0.0, ck.backend,
                        ck.finished == "early_stopping", dict(ck.history),
                        already_finished=f"{last_path}: training has already finished ({why}); nothing to do")


def _refuse_another_run(spec: spec_mod.Spec, out: Path) -> None:
    """A fresh run may replace only a run of the same config (a rerun); another run needs --overwrite."""
    for name in ("last.h5", "model.h5"):
        path = out / name
        if not os.path.lexists(path):
            continue
        advice = "give --overwrite to replace it, --resume to continue it, or another --output"
        try:
            ck = checkpoint.load(path)
            stored = _stored_config(ck, path)
        except CheckpointError as exc:
            raise ConfigError(f"{exc.message}; {os.path.abspath(out)} holds files of another run: {advice}") from None
        diff = _run_differences(spec, stored, SAME_RUN)
        if diff:
            keys = ", ".join(diff[:8]) + (" ..." if len(diff) > 8 else "")
            raise ConfigError(f"{os.path.abspath(out)} holds another run, '{stored.get('name')}' ({name}, epoch "
                              f"{ck.epoch}), whose config differs in {keys}: {advice}")
        return


def _check_inputs_are_not_outputs(spec: spec_mod.Spec, out: Path) -> None:
    """No data file may be one of the files the run writes (compared by inode, not by name)."""
    written = {}
    for name in (*lock.OUTPUT_FILES, "curves.png", lock.LOCK_NAME):
        try:
            st = os.stat(out / name)
        except (OSError, ValueError):
            continue
        written[(st.st_dev, st.st_ino)] = name
    for key in ("train", "validation", "test"):
        path = spec["data"][key]
        if not isinstance(path, str):
            continue
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            continue
        if (st.st_dev, st.st_ino) in written:
            raise spec.error(f"data.{key}", f"{path} is the run's own {written[(st.st_dev, st.st_ino)]} in "
                                            f"{out}, which training rewrites; copy it elsewhere or choose "
                                            f"another output folder")
