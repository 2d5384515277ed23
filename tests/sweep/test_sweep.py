"""`nncli sweep` on this machine: results and best.yaml, determinism, pruning, a failing trial,
a trial killed mid-run and resumed, the driver killed and resumed, Ctrl-C, and bad sweep files.
Every process a test starts is bounded by a timeout and stopped in a finally; references:
results.csv read with the csv module, each trial's own metrics.csv, an uninterrupted `nncli
train` of the same trial (h5py arrays). The Dask cluster tests are in test_sweep_dask.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from support import assert_same_arrays, error_line

pytest.importorskip("optuna")
pytest.importorskip("distributed")
pytest.importorskip("psutil")

from sweep_support import (NNCLI, PARAMS, _children_with, _epochs_logged, _kill_trial_mid_run,  # noqa: E402
                           _reference, check_results, metric_column, reaped, run, table, write_sweep)


# --- local ---------------------------------------------------------------------------------------

def test_local_sweep_results_and_best_yaml_trains(folder, tmp_path):
    sweep = write_sweep(folder, "local", base="small.yaml", metric="val_accuracy", samples=4, parallel=2,
                        sampler={"type": "tpe", "seed": 0}, parameters=PARAMS)
    out = tmp_path / "out"
    r = run(["sweep", str(sweep), "-o", str(out)], folder)
    assert r.returncode == 0, r.stderr
    rows = check_results(out, 4, "val_accuracy", maximize=True)
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {x["worker"] for x in rows} == {"local"}
    best_row = max(rows, key=lambda x: (float(x["val_accuracy"]), -int(x["number"])))
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["learning_rate"] == float(best_row["learning_rate"])
    assert best["layers"][0]["units"] == int(best_row["layers[0].units"])
    assert best["optimizer"]["type"] == best_row["optimizer.type"]
    assert os.path.isabs(best["data"]["train"])
    # best.yaml trains from another folder, and reproduces the best trial's weights
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run(["train", str(out / "best.yaml"), "-o", "again", "-q"], elsewhere)
    assert r.returncode == 0, r.stderr
    assert_same_arrays(elsewhere / "again" / "last.h5", out / f"trial-{int(best_row['number']):03d}" / "last.h5")


def test_parallel_one_with_a_seed_is_deterministic(folder, tmp_path):
    sweep = write_sweep(folder, "det", base="small.yaml", samples=3, parallel=1,
                        sampler={"type": "tpe", "seed": 7}, parameters=PARAMS)
    runs = []
    for name in ("a", "b"):
        r = run(["sweep", str(sweep), "-o", str(tmp_path / name)], folder)
        assert r.returncode == 0, r.stderr
        rows = check_results(tmp_path / name, 3, "val_loss", maximize=False)
        runs.append([{k: v for k, v in x.items() if k != "seconds"} for x in rows])
    assert runs[0] == runs[1]
    assert len({x["learning_rate"] for x in runs[0]}) == 3


def test_median_pruner_stops_an_absurd_learning_rate(folder, tmp_path):
    sweep = write_sweep(folder, "prune", base="long.yaml", samples=3, parallel=1,
                        sampler={"type": "grid", "seed": 3},
                        pruner={"type": "median", "grace_epochs": 1, "startup_trials": 1},
                        parameters={"learning_rate": {"space": "grid", "values": [0.003, 0.01, 10.0]}})
    out = tmp_path / "out"
    r = run(["sweep", str(sweep), "-o", str(out)], folder, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {float(x["learning_rate"]): x for x in table(out / "results.csv")}
    absurd = rows[10.0]
    assert int(absurd["number"]) > 0, "the grid put lr 10 first: no trial to compare it with (change the seed)"
    assert absurd["status"] == "pruned"
    epochs_run = len(metric_column(out / f"trial-{int(absurd['number']):03d}", "val_loss"))
    assert 1 <= epochs_run < 16 and int(absurd["epochs"]) == epochs_run
    assert (out / f"trial-{int(absurd['number']):03d}" / "last.h5").exists()  # saved by the SIGTERM path
    first = next(x for x in rows.values() if x["number"] == "0")
    assert first["status"] == "complete" and int(first["epochs"]) == 16


def test_a_diverging_trial_is_failed_with_its_error_and_the_sweep_goes_on(folder, tmp_path):
    sweep = write_sweep(folder, "nan", base="small.yaml", samples=2, parallel=1,
                        sampler={"type": "grid", "seed": 0},
                        parameters={"learning_rate": {"space": "grid", "values": [0.05, 1000]},
                                    "optimizer.type": {"space": "choice", "values": ["sgd"]},
                                    "layers[0].activation": {"space": "choice", "values": ["relu"]},
                                    "layers[0].units": {"space": "choice", "values": [64]}})
    out = tmp_path / "out"
    r = run(["sweep", str(sweep), "-o", str(out)], folder)
    assert r.returncode == 0, r.stderr
    rows = {float(x["learning_rate"]): x for x in table(out / "results.csv")}
    assert rows[1000.0]["status"] == "failed" and "became nan" in rows[1000.0]["error"], rows
    assert rows[0.05]["status"] == "complete" and rows[0.05]["error"] == ""
    assert yaml.safe_load((out / "best.yaml").read_text())["learning_rate"] == 0.05

def test_a_killed_trial_is_retried_and_resumes_to_the_same_weights(folder, tmp_path):
    sweep = write_sweep(folder, "kill", base="long.yaml", samples=1, parallel=1, retries=1,
                        sampler={"type": "random", "seed": 0},
                        parameters={"learning_rate": {"space": "grid", "values": [0.02]}})
    out = tmp_path / "out"
    proc = subprocess.Popen([NNCLI, "sweep", str(sweep), "-o", str(out)], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        _kill_trial_mid_run(proc.pid, out, 0, time.monotonic() + 120)
        stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    row = table(out / "results.csv")[0]
    assert row["status"] == "complete" and row["attempts"] == "2", row
    attempts = [json.loads(l) for l in (out / "logs" / "trial-000.jsonl").read_text().splitlines()
                if l.startswith('{"attempt"')]
    assert [a["resume"] for a in attempts] == [False, True]
    ref = _reference(folder, tmp_path, ["learning_rate=0.02"])
    assert_same_arrays(out / "trial-000" / "last.h5", ref / "last.h5", groups=("params", "optimizer"))
    assert_same_arrays(out / "trial-000" / "model.h5", ref / "model.h5")


def test_driver_killed_then_resume_keeps_completed_trials(folder, tmp_path):
    sweep = write_sweep(folder, "resume", base="long.yaml", samples=2, parallel=1, retries=0,
                        sampler={"type": "grid", "seed": 0},
                        parameters={"learning_rate": {"space": "grid", "values": [0.02, 0.05]}})
    out = tmp_path / "out"
    proc = subprocess.Popen([NNCLI, "sweep", str(sweep), "-o", str(out)], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        deadline = time.monotonic() + 120
        while _epochs_logged(out / "logs" / "trial-001.jsonl") < 3:
            assert time.monotonic() < deadline and proc.poll() is None, "trial 1 never reached epoch 3"
            time.sleep(0.05)
        proc.kill()  # the driver: its trial process dies with it (PR_SET_PDEATHSIG)
        proc.wait(timeout=30)
    first = (out / "trial-000" / "last.h5").read_bytes()
    before = table(out / "results.csv")  # written after each trial: trial 0's row survived the kill
    assert [(x["number"], x["status"], x["worker"]) for x in before] == [("0", "complete", "local")]
    r = run(["sweep", str(sweep), "-o", str(out)], folder)
    assert r.returncode == 2 and "--resume" in error_line(r.stderr)
    r = run(["sweep", str(sweep), "-o", str(out), "--resume"], folder)
    assert r.returncode == 0, r.stderr
    rows = check_results(out, 2, "val_loss", maximize=False)
    assert (out / "trial-000" / "last.h5").read_bytes() == first  # the completed trial was not rerun
    assert rows[1]["attempts"] == "2" and [x["seconds"] for x in rows][0] == before[0]["seconds"]
    ref = _reference(folder, tmp_path, [f"learning_rate={rows[1]['learning_rate']}"])
    assert_same_arrays(out / "trial-001" / "last.h5", ref / "last.h5", groups=("params", "optimizer"))


def test_ctrl_c_stops_trials_with_their_state_and_exits_130_then_resume_finishes(folder, tmp_path):
    sweep = write_sweep(folder, "ctrlc", base="long.yaml", samples=2, parallel=2,
                        sampler={"type": "grid", "seed": 0},
                        parameters={"learning_rate": {"space": "grid", "values": [0.02, 0.05]}})
    out = tmp_path / "out"
    proc = subprocess.Popen([NNCLI, "sweep", str(sweep), "-o", str(out)], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        deadline = time.monotonic() + 120
        while min(_epochs_logged(out / "logs" / f"trial-{n:03d}.jsonl") for n in (0, 1)) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "the trials never reached epoch 2"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "--resume" in error_line(stderr)
    assert not _children_with(os.getpid(), "trial-00")
    for n in (0, 1):
        assert 2 <= len(metric_column(out / f"trial-{n:03d}", "val_loss")) < 16  # stopped, state saved
    r = run(["sweep", str(sweep), "-o", str(out), "--resume"], folder)
    assert r.returncode == 0, r.stderr
    rows = check_results(out, 2, "val_loss", maximize=False)
    ref = _reference(folder, tmp_path, [f"learning_rate={rows[0]['learning_rate']}"])
    assert_same_arrays(out / "trial-000" / "last.h5", ref / "last.h5", groups=("params", "optimizer"))



# --- bad sweep files -------------------------------------------------------------------------------

GOOD_PARAM = {"learning_rate": {"space": "loguniform", "lower": 1.0e-3, "upper": 0.1}}


@pytest.mark.parametrize("keys, expected", [
    ({"parameters": {"layers[9].units": {"space": "int", "lower": 4, "upper": 8}}},
     "parameters.layers[9].units"),
    ({"parameters": {"learning_rate": {"space": "normal", "lower": 0.1, "upper": 1}}},
     "parameters.learning_rate.space"),
    ({"parameters": {"learning_rate": {"space": "uniform", "lower": 0.5, "upper": 0.1}}},
     "parameters.learning_rate.lower"),
    ({"sampler": {"type": "bayes"}, "parameters": GOOD_PARAM}, "sampler.type"),
    ({"parameters": {"layers[0].units": {"space": "int", "lower": 0, "upper": 8}}},
     "parameters.layers[0].units"),
])
def test_bad_sweep_file_is_one_line_exit_2(folder, tmp_path, keys, expected):
    sweep = write_sweep(folder, "bad", base="small.yaml", samples=2, **keys)
    r = run(["sweep", str(sweep), "-o", str(tmp_path / "out")], folder, timeout=60)
    assert r.returncode == 2, r.stderr
    line = error_line(r.stderr)
    assert "bad.yaml" in line and expected in line, line
    assert not (tmp_path / "out" / "trial-000").exists()


def test_missing_scheduler_file_is_one_line_exit_2(folder, tmp_path):
    sweep = write_sweep(folder, "nofile", base="small.yaml", samples=1, parameters=GOOD_PARAM)
    r = run(["sweep", str(sweep), "--scheduler-file", str(tmp_path / "none.json")], folder, timeout=60)
    assert r.returncode == 2 and "none.json: no such file" in error_line(r.stderr)
