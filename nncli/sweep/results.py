"""The sweep's outputs, each written atomically (nncli.fileio): results.csv (one row per trial),
best.yaml (the base config with the best parameters; data paths made absolute so that
`nncli train best.yaml` finds them wherever it is) and sweep.png (when matplotlib is there)."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import yaml

from nncli import fileio, overrides, plot, spec as spec_mod
from nncli.sweep.executors import Outcome
from nncli.sweep.spec import Sweep, yaml_value

STATUS = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
DATA_PATH_KEYS = ("train", "validation", "test")


def best(study) -> dict:
    try:
        t = study.best_trial
    except ValueError:
        return {"number": None, "value": None, "params": {}}
    return {"number": t.number, "value": t.value, "params": dict(t.params)}


def read_outcomes(folder: Path) -> dict[int, Outcome]:
    """What results.csv recorded of finished trials (worker, seconds, error), for --resume."""
    out: dict[int, Outcome] = {}
    path = folder / "results.csv"
    if not path.exists():
        return out
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                n = int(row["number"])
                out[n] = Outcome(n, 0, row.get("error", ""), row.get("worker", "local"),
                                 int(row.get("attempts") or 1), float(row.get("seconds") or 0))
            except (KeyError, ValueError):
                continue
    return out


def rows(sweep: Sweep, folder: Path, study, outcomes: dict[int, Outcome]) -> list[dict]:
    out = []
    for t in study.trials:
        o = outcomes.get(t.number)
        run = folder / f"trial-{t.number:03d}"
        history = []
        if (run / "metrics.csv").exists():
            try:
                history = plot.read_run(run).history.get(sweep.metric, [])
            except Exception:
                history = []
        finite = [(v, i + 1) for i, v in enumerate(history) if v is not None and math.isfinite(v)]
        best_epoch = ""
        if finite:
            top = (max if sweep.goal == "maximize" else min)(v for v, _ in finite)
            best_epoch = min(i for v, i in finite if v == top)
        row = {"number": t.number, **{p.path: t.params.get(p.path, "") for p in sweep.parameters},
               "status": STATUS.get(t.state.name, t.state.name.lower()),
               sweep.metric: "" if t.value is None else repr(float(t.value)),
               "best_epoch": best_epoch, "epochs": len(history),
               "seconds": f"{o.seconds:.2f}" if o else "", "worker": o.worker if o else "",
               "attempts": o.attempts if o else "", "error": o.error if o else ""}
        out.append(row)
    return out


def write(sweep: Sweep, folder: Path, study, outcomes: dict[int, Outcome], picture: bool = True) -> None:
    table = rows(sweep, folder, study, outcomes)
    if table:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(table[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(table)
        fileio.write_text(folder / "results.csv", buf.getvalue())
    b = best(study)
    if b["number"] is not None:
        fileio.write_text(folder / "best.yaml", best_yaml(sweep, b["params"], b["value"]))
    if picture and table and plot.available():
        draw(sweep, folder / "sweep.png", table)


def best_yaml(sweep: Sweep, params: dict, value) -> str:
    data, _ = spec_mod.load_yaml(sweep.base)
    data, _ = overrides.apply(data, [f"{k}={yaml_value(v)}" for k, v in params.items()])
    folder = sweep.base.parent
    d = data.get("data") if isinstance(data, dict) else None
    if isinstance(d, dict):
        for key in DATA_PATH_KEYS:
            if isinstance(d.get(key), str):
                d[key] = os.path.normpath(folder / d[key])
    if isinstance(data.get("output"), str) and not os.path.isabs(data["output"]):
        data.pop("output")  # relative to where the base config was run; best.yaml trains to runs/<name>
    head = (f"# nncli sweep {sweep.name}: the best trial's parameters ({sweep.metric} {value}) applied to "
            f"{sweep.base}\n")
    return head + yaml.safe_dump(data, sort_keys=False)


def draw(sweep: Sweep, path: Path, table: list[dict]) -> None:
    fig = plot.new_figure("sweep.png", figsize=(4 * (1 + len(sweep.parameters)), 3.5), dpi=100)
    n = 1 + len(sweep.parameters)
    done = [(r["number"], float(r[sweep.metric])) for r in table if r[sweep.metric] != ""]
    ax = fig.add_subplot(1, n, 1)
    if done:
        xs, ys = zip(*done)
        ax.plot(xs, ys, "o", label=sweep.metric)
        acc, running = [], None
        for y in ys:
            running = y if running is None else (max(running, y) if sweep.goal == "maximize" else min(running, y))
            acc.append(running)
        ax.plot(xs, acc, "-", label="best so far")
        ax.legend(fontsize=8)
    ax.set_xlabel("trial")
    ax.set_ylabel(sweep.metric)
    for i, p in enumerate(sweep.parameters, start=2):
        ax = fig.add_subplot(1, n, i)
        pts = [(r[p.path], float(r[sweep.metric])) for r in table if r[sweep.metric] != ""]
        if pts:
            xs = [x if isinstance(x, (int, float)) else str(x) for x, _ in pts]
            ax.plot(xs, [y for _, y in pts], "o")
        if p.space == "loguniform" or (p.space == "int" and p.log):
            ax.set_xscale("log")
        ax.set_xlabel(p.path)
    fig.tight_layout()
    plot.save_png(fig, fileio.output_target(str(path), picture=True, what="sweep plot"))
