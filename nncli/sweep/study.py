"""The search loop: an Optuna study in journal storage inside the sweep folder (nothing to
start; --resume reopens it), trials asked here, run by an executor, and told their results. All
Optuna calls happen in this one thread; trials' per-epoch records come from their log files."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nncli import plot, progress, signals
from nncli.errors import ConfigError, Interrupted, NncliError
from nncli.sweep import executors, results, spec
from nncli.sweep.executors import Handle, Job, Outcome
from nncli.sweep.spec import Sweep, assignment, check_values

POLL_S = 0.1
JOURNAL = "study.journal"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise NncliError("nncli sweep needs Optuna: pip install 'nncli[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
    try:
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    except AttributeError:
        pass
    return optuna


def _sampler(optuna, sweep: Sweep):
    kind, seed = sweep.sampler["type"], sweep.sampler["seed"]
    if kind == "grid":
        class Grid(optuna.samplers.GridSampler):
            def after_trial(self, study, trial, state, values):
                pass  # GridSampler would call study.stop(), which only works inside study.optimize

        return Grid({p.path: list(p.values) for p in sweep.parameters}, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(optuna, sweep: Sweep):
    kind, grace = sweep.pruner["type"], sweep.pruner["grace_epochs"]
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner["startup_trials"], n_warmup_steps=grace)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, grace), max_resource=max(1, sweep.epochs))
    return optuna.pruners.NopPruner()


def open_study(sweep: Sweep, folder: Path, resume: bool):
    optuna = _optuna()
    journal = folder / JOURNAL
    if journal.exists() and not resume:
        raise ConfigError(f"{folder} holds a sweep already: give --resume to continue it, or another --output")
    if resume and not journal.exists():
        raise ConfigError(f"{folder}: nothing to resume (no {JOURNAL})")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    direction = "maximize" if sweep.goal == "maximize" else "minimize"
    return optuna.create_study(study_name=sweep.name, storage=storage, sampler=_sampler(optuna, sweep),
                               pruner=_pruner(optuna, sweep), direction=direction, load_if_exists=resume)


def _suggest(trial, p) -> Any:
    if p.space == "loguniform":
        return trial.suggest_float(p.path, p.lower, p.upper, log=True)
    if p.space == "uniform":
        return trial.suggest_float(p.path, p.lower, p.upper)
    if p.space == "int":
        return trial.suggest_int(p.path, int(p.lower), int(p.upper), log=p.log)
    return trial.suggest_categorical(p.path, list(p.values))


@dataclass
class Running:
    trial: Any
    handle: Handle
    offset: int = 0
    epochs: int = 0
    pruned: bool = False
    values: list = field(default_factory=list)


def _read_new(run: Running) -> list[dict]:
    """The complete JSON lines appended to the trial's log since the last call."""
    try:
        with open(run.handle.job.log, "rb") as f:
            f.seek(run.offset)
            data = f.read()
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n") + 1
    run.offset += end
    out = []
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "epoch" in rec:
            out.append(rec)
    return out


def run(sweep: Sweep, folder: Path, executor, resume: bool = False, report: progress.TrialLines | None = None,
        extra: list[str] | None = None) -> dict:
    """Run the sweep to `samples` trials; write results.csv, best.yaml, sweep.png. Returns a summary.
    `report` hears of each finished trial (default: one line each on stderr)."""
    optuna = _optuna()
    report = report or progress.TrialLines()
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    TrialState = optuna.trial.TrialState
    outcomes: dict[int, Outcome] = results.read_outcomes(folder) if resume else {}
    running: dict[int, Running] = {}
    started = time.perf_counter()

    def launch(trial) -> None:
        params = {p.path: trial.params[p.path] if p.path in trial.params else _suggest(trial, p)
                  for p in sweep.parameters}
        check_values(sweep.source, sweep.base, params, f"trial {trial.number}")
        job = Job(trial.number, str(sweep.base), [assignment(k, v) for k, v in params.items()], str(folder),
                  sweep.retries, list(extra or []))
        stop = Path(job.stop_file)
        if stop.exists():
            stop.unlink()
        running[trial.number] = Running(trial, executor.submit(job))

    # Ctrl-C and SIGTERM set a flag checked between Optuna calls: a KeyboardInterrupt inside
    # Optuna's journal lock (between its rename and unlink) would break the study file.
    flag: dict = {}
    with signals.signals_to_flag(flag):
        study = open_study(sweep, folder, resume)
        try:
            # --resume: trials left running by a driver that died are run again (from their last.h5)
            for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                launch(optuna.trial.Trial(study, ft._trial_id))
            while not flag.get("signal"):
                n_done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                       TrialState.FAIL)))
                while len(running) < sweep.parallel and n_done + len(running) < sweep.samples:
                    if flag.get("signal") or sweep.sampler["type"] == "grid" and _grid_exhausted(study, sweep):
                        break
                    launch(study.ask())
                if not running:
                    break
                for number, r in list(running.items()):
                    if flag.get("signal"):
                        break
                    _poll(study, sweep, r)
                    if r.handle.done():
                        outcome = _result(r)
                        outcomes[number] = outcome
                        del running[number]
                        _finish(study, sweep, r, outcome, TrialState)
                        results.write(sweep, folder, study, outcomes, picture=False)  # a killed driver loses no row
                        report.trial(*_line(study, sweep, number, sweep.samples))
                time.sleep(POLL_S)
            if flag.get("signal"):
                for r in running.values():
                    r.handle.stop()
                raise Interrupted(f"interrupted; the running trials were stopped with their state saved; continue "
                                  f"with: nncli sweep {sweep.source} --output {folder} --resume",
                                  signals.exit_code(flag["signal"]))
        finally:
            results.write(sweep, folder, study, outcomes)
    return {"seconds": time.perf_counter() - started, "folder": folder,
            **results.best(study)}


def _poll(study, sweep: Sweep, r: Running) -> None:
    """Report the trial's new epochs to Optuna; stop it (prune) when Optuna says so."""
    for rec in _read_new(r):
        value = rec.get(sweep.metric)
        r.epochs = max(r.epochs, int(rec["epoch"]))
        if value is None or r.pruned:
            continue
        r.trial.report(float(value), int(rec["epoch"]))
        if r.trial.should_prune():
            r.pruned = True
            r.handle.stop()


def _grid_exhausted(study, sweep: Sweep) -> bool:
    total = 1
    for p in sweep.parameters:
        total *= len(p.values)
    return len(study.trials) >= total


def _result(r: Running) -> Outcome:
    try:
        return r.handle.result()
    except Exception as exc:  # a task that Dask gave up on (KilledWorker), or one that raised
        first = str(exc).splitlines()[0] if str(exc) else ""
        return Outcome(r.handle.job.number, -1, f"{type(exc).__name__}: {first}", "?")


def _finish(study, sweep: Sweep, r: Running, outcome: Outcome, TrialState) -> None:
    run = plot.read_run(r.handle.job.run) if os.path.exists(os.path.join(r.handle.job.run, "metrics.csv")) else None
    values = [v for v in (run.history.get(sweep.metric, []) if run else []) if v is not None and math.isfinite(v)]
    if r.pruned or outcome.stopped:
        study.tell(r.trial, state=TrialState.PRUNED)
    elif outcome.returncode == 0 and values:
        study.tell(r.trial, max(values) if sweep.goal == "maximize" else min(values))
    else:
        study.tell(r.trial, state=TrialState.FAIL)


def _line(study, sweep: Sweep, number: int, samples: int) -> tuple[str, int, int, str]:
    """(the finished trial's line, trials finished, trials in all, the best so far) for a
    progress.TrialLines reporter."""
    t = study.trials[number]
    status = {1: "complete", 2: "pruned", 3: "failed"}.get(int(t.state), str(t.state))
    best = results.best(study)
    value = f" {sweep.metric} {t.value:.4g}" if t.value is not None else ""
    best_text = f"best {best['value']:.4g} (trial {best['number']})" if best.get("value") is not None else ""
    done = len([x for x in study.trials if x.state.is_finished()])
    return f"trial {number} {status}{value} [{done}/{samples}]" + (f"; {best_text}" if best_text else ""), \
        done, samples, best_text


def start(sweep_file: str, output: str | None = None, samples: int | None = None, parallel: int | None = None,
          cluster: str | None = None, scheduler_file: str | None = None, resume: bool = False,
          report: progress.TrialLines | None = None) -> dict:
    """`nncli sweep`: load and check the sweep file, pick the executor, run the study."""
    if cluster and scheduler_file:
        raise ConfigError("give --cluster or --scheduler-file, not both")
    if scheduler_file and not os.path.isfile(scheduler_file):
        raise ConfigError(f"--scheduler-file {scheduler_file}: no such file (the file `dask scheduler "
                          f"--scheduler-file` writes)")
    sweep = spec.load(sweep_file, samples=samples, parallel=parallel)
    _optuna()
    folder = Path(output) if output else Path("sweeps") / sweep.name
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: is not a folder; give another --output")
    folder.mkdir(parents=True, exist_ok=True)
    if cluster or scheduler_file:
        ex = executors.DaskExecutor(str(folder.resolve()), cluster, scheduler_file, retries=sweep.retries)
    else:
        ex = executors.LocalExecutor(sweep.parallel)
    try:
        return run(sweep, folder, ex, resume=resume, report=report)
    finally:
        ex.close()
