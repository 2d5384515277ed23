"""Where trials run, behind one small interface: ``submit(job) -> handle`` with ``handle.stop()``
(prune: SIGTERM to the trial's `nncli train`, whose interrupt path saves last.h5),
``handle.done()`` and ``handle.result() -> Outcome``; per-epoch records arrive through
``events()`` as (trial number, JSON record).

Both executors run the same function, run_trial: `nncli train BASE --set ... -o trial-NNN
--log-json` as a subprocess, each epoch's JSON line appended to logs/trial-NNN.jsonl in the sweep
folder (the driver tails these files, so it works the same on a cluster with a shared file
system), and a trial process that dies of a signal other than our SIGTERM rerun with --resume
from its last.h5, up to `retries` times. LocalExecutor runs it in threads of this process;
DaskExecutor as tasks on Dask workers (a worker lost mid-trial: Dask reruns the task elsewhere and
run_trial resumes from last.h5)."""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nncli.errors import ConfigError, NncliError

STOP_POLL_S = 0.2


@dataclass
class Job:
    number: int
    base: str           # absolute path of the base config
    sets: list[str]     # PATH=VALUE
    folder: str         # absolute path of the sweep folder
    retries: int = 1
    extra: list[str] = field(default_factory=list)  # more `nncli train` options

    @property
    def run(self) -> str:
        return os.path.join(self.folder, f"trial-{self.number:03d}")

    @property
    def log(self) -> str:
        return os.path.join(self.folder, "logs", f"trial-{self.number:03d}.jsonl")

    @property
    def stop_file(self) -> str:
        return os.path.join(self.folder, "logs", f"trial-{self.number:03d}.stop")


@dataclass
class Outcome:
    number: int
    returncode: int
    error: str = ""       # the trial's last `Error:` line
    worker: str = "local"
    attempts: int = 1
    seconds: float = 0.0
    stopped: bool = False  # stopped by the sweep (pruned)


def nncli_command() -> list[str]:
    exe = Path(sys.executable).with_name("nncli")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("nncli")
    if not found:
        raise NncliError("cannot find the nncli command next to this Python or on PATH")
    return [found]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the trial process gets SIGKILL when the process that started it dies (a lost Dask
    worker must not leave a trial writing into the folder its rerun resumes)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_trial(job: Job, worker: str = "local") -> Outcome:
    """Run one trial to its end (see the module's doc); safe to run again after a lost worker."""
    os.makedirs(os.path.dirname(job.log), exist_ok=True)
    start = time.perf_counter()
    attempts, error = 0, ""
    before = _attempts_logged(job.log)  # a rerun after a lost worker continues the count
    while True:
        attempts += 1
        resume = os.path.exists(os.path.join(job.run, "last.h5"))
        cmd = [*nncli_command(), "train", job.base, "-o", job.run, "--log-json", "--quiet", *job.extra]
        cmd += ["--resume"] if resume else [a for s in job.sets for a in ("--set", s)]
        with open(job.log, "a", encoding="utf-8") as log:
            log.write(json.dumps({"attempt": attempts, "worker": worker, "resume": resume}) + "\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            stopped = _watch(proc, job, log)
            err = proc.stderr.read()
            proc.wait()
        errors = [l for l in err.splitlines() if l.startswith("Error:")]
        error = errors[-1][len("Error: "):] if errors else ""
        rc = proc.returncode
        killed = rc < 0 and not stopped
        if killed and attempts <= job.retries:
            continue
        if killed:
            error = f"the trial process died of signal {-rc} ({attempts} attempts)"
        return Outcome(job.number, rc, error, worker, before + attempts, time.perf_counter() - start, stopped)


def _attempts_logged(log: str) -> int:
    try:
        with open(log, encoding="utf-8") as f:
            return sum(1 for line in f if line.startswith('{"attempt"'))
    except FileNotFoundError:
        return 0


def _watch(proc: subprocess.Popen, job: Job, log) -> bool:
    """Copy the trial's JSON lines to its log; SIGTERM it when the stop file appears."""
    import selectors

    stopped = False
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while True:
        if sel.select(STOP_POLL_S):
            line = proc.stdout.readline()
            if not line:
                break
            log.write(line)
            log.flush()
        if not stopped and os.path.exists(job.stop_file):
            stopped = True
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    sel.close()
    return stopped


class Handle:
    def __init__(self, job: Job, future: Any):
        self.job, self.future = job, future

    def stop(self) -> None:
        """Ask the trial to stop (pruned): its process gets SIGTERM and saves last.h5."""
        Path(self.job.stop_file).touch()

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> Outcome:
        return self.future.result()


class LocalExecutor:
    """Trials as `nncli train` processes on this machine, `parallel` at once."""

    def __init__(self, parallel: int):
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel)

    def submit(self, job: Job) -> Handle:
        return Handle(job, self.pool.submit(run_trial, job, "local"))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _dask_task(job: Job) -> Outcome:
    from distributed import get_worker

    return run_trial(job, get_worker().address)


def _check_folder(folder: str) -> bool:
    """On a worker (Client.run): the sweep folder is reachable and writable (a shared file system)."""
    return os.path.isdir(folder) and os.access(folder, os.W_OK)


class DaskExecutor:
    """Trials as tasks on the workers of a Dask cluster; each runs `nncli train` there."""

    def __init__(self, folder: str, address: str | None = None, scheduler_file: str | None = None,
                 retries: int = 1, timeout: float = 10.0):
        try:
            from distributed import Client
        except ImportError:
            raise NncliError("running on a Dask cluster needs dask distributed: pip install 'nncli[sweep]'") from None
        where = address or scheduler_file
        try:
            self.client = Client(address, scheduler_file=scheduler_file, timeout=timeout) if address \
                else Client(scheduler_file=scheduler_file, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise NncliError(f"cannot reach the Dask scheduler {where}: {exc}") from None
        self.retries = retries
        infos = self.client.run(_check_folder, folder)
        missing = [w for w, ok in infos.items() if not ok]
        if not infos:
            self.client.close()
            raise NncliError(f"the Dask cluster {where} has no workers")
        if missing:
            self.client.close()
            raise ConfigError(f"the sweep folder {folder} is not writable on Dask worker(s) {', '.join(missing)}; "
                              f"put it on a file system every worker reaches (--output)")

    def submit(self, job: Job) -> Handle:
        fut = self.client.submit(_dask_task, job, key=f"nncli-trial-{job.number:03d}-{os.getpid()}-{time.time_ns()}",
                                 pure=False, retries=self.retries)
        return Handle(job, fut)

    def close(self) -> None:
        self.client.close()
