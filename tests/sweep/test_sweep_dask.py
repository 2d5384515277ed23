"""`nncli sweep` on a real Dask cluster: a scheduler and two workers, each its own process on
127.0.0.1, started by a module fixture and stopped in its finally; a trial process killed and a
whole worker killed mid-trial, each rerun and resumed to the uninterrupted run's weights (h5py
arrays); the Dask scheduler's own list of workers as the reference for where trials ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import assert_same_arrays

pytest.importorskip("optuna")
pytest.importorskip("distributed")
pytest.importorskip("psutil")

from sweep_support import (DASK, NNCLI, PARAMS, _children_with, _epochs_logged, _kill_trial_mid_run,  # noqa: E402
                           _reference, check_results, reaped, run, table, write_sweep)


# --- a real Dask cluster: a scheduler and two workers, each its own process ---------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("dask")
    sched_file = d / "scheduler.json"
    procs = []
    logs = []

    def start(args):
        log = open(d / f"log-{len(procs)}.txt", "w")
        logs.append(log)
        procs.append(subprocess.Popen([DASK, *args], cwd=d, stdout=log, stderr=subprocess.STDOUT))

    try:
        start(["scheduler", "--scheduler-file", str(sched_file), "--host", "127.0.0.1", "--no-dashboard"])
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for i in range(2):
            start(["worker", "--scheduler-file", str(sched_file), "--nthreads", "1", "--no-dashboard",
                   "--host", "127.0.0.1", "--local-directory", str(d / f"w{i}"), "--name", f"w{i}"])
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout=30) as client:
            while len(client.scheduler_info()["workers"]) < 2:
                assert time.monotonic() < deadline, "the 2 Dask workers did not join within 60 s"
                time.sleep(0.2)
        yield sched_file
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


def _workers(sched_file: Path) -> dict:
    from distributed import Client

    with Client(scheduler_file=str(sched_file), timeout=30) as client:
        return {addr: info for addr, info in client.scheduler_info()["workers"].items()}


def test_dask_sweep_runs_trials_on_both_workers(folder, tmp_path, cluster):
    sweep = write_sweep(folder, "dask", base="small.yaml", samples=4, parallel=2,
                        sampler={"type": "random", "seed": 1}, parameters=PARAMS)
    out = tmp_path / "out"
    r = run(["sweep", str(sweep), "-o", str(out), "--scheduler-file", str(cluster)], folder)
    assert r.returncode == 0, r.stderr
    rows = check_results(out, 4, "val_loss", maximize=False)
    workers = _workers(cluster)
    used = {x["worker"] for x in rows}
    assert used <= set(workers) and len(used) == 2, (used, set(workers))


def test_dask_trial_process_killed_is_retried_and_resumes(folder, tmp_path, cluster):
    sweep = write_sweep(folder, "daskkill", base="long.yaml", samples=1, parallel=1, retries=1,
                        sampler={"type": "random", "seed": 0},
                        parameters={"learning_rate": {"space": "grid", "values": [0.02]}})
    out = tmp_path / "out"
    proc = subprocess.Popen([NNCLI, "sweep", str(sweep), "-o", str(out), "--scheduler-file", str(cluster)],
                            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        from distributed import Client

        with Client(scheduler_file=str(cluster), timeout=30) as client:
            workers = set(client.run(os.getpid).values())  # the worker processes (children of nannies)
        assert len(workers) == 2
        deadline = time.monotonic() + 120
        killed = None
        while killed is None:
            for pid in workers:
                try:
                    killed = _kill_trial_mid_run(pid, out, 0, min(deadline, time.monotonic() + 0.5))
                    break
                except AssertionError:
                    continue
            assert time.monotonic() < deadline, "no trial process reached epoch 3 on a worker"
        stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    row = table(out / "results.csv")[0]
    assert row["status"] == "complete" and row["attempts"] == "2" and row["worker"] in _workers(cluster), row
    ref = _reference(folder, tmp_path, ["learning_rate=0.02"])
    assert_same_arrays(out / "trial-000" / "last.h5", ref / "last.h5", groups=("params", "optimizer"))


def test_dask_worker_killed_mid_trial_trial_reruns_and_resumes(folder, tmp_path, cluster):
    """SIGKILL the whole worker process running the trial: Dask reruns the task (on the other worker
    or the nanny's restarted one), which resumes from last.h5 to the uninterrupted run's weights."""
    sweep = write_sweep(folder, "workerkill", base="long.yaml", samples=1, parallel=1, retries=1,
                        sampler={"type": "random", "seed": 0},
                        parameters={"learning_rate": {"space": "grid", "values": [0.03]}})
    out = tmp_path / "out"
    from distributed import Client

    with Client(scheduler_file=str(cluster), timeout=30) as client:
        pids = client.run(os.getpid)  # address -> worker process id
    proc = subprocess.Popen([NNCLI, "sweep", str(sweep), "-o", str(out), "--scheduler-file", str(cluster)],
                            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        log = out / "logs" / "trial-000.jsonl"
        deadline = time.monotonic() + 120
        victim = None
        while victim is None:
            assert time.monotonic() < deadline, "the trial never reached epoch 3"
            if _epochs_logged(log) >= 3:
                victim = next((a for a, pid in pids.items() if _children_with(pid, "trial-000")), None)
            time.sleep(0.05)
        os.kill(pids[victim], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    row = table(out / "results.csv")[0]
    assert row["status"] == "complete" and row["attempts"] == "2", row
    attempts = [json.loads(l) for l in log.read_text().splitlines() if l.startswith('{"attempt"')]
    assert attempts[0]["worker"] == victim and [a["resume"] for a in attempts] == [False, True]
    ref = _reference(folder, tmp_path, ["learning_rate=0.03"])
    assert_same_arrays(out / "trial-000" / "last.h5", ref / "last.h5", groups=("params", "optimizer"))
    assert_same_arrays(out / "trial-000" / "model.h5", ref / "model.h5")


