"""Training curves: ``curves.png`` after training and ``nncli plot RUN_DIR [RUN_DIR...]``.

One panel for the loss, one for the main metric (the first in the config's
``metrics``) and, when the learning rate changed during any run, one for
the learning rate (log scale). Training values are solid lines, validation
values dashed, and the best epoch (the one in model.h5) is marked with a
dotted vertical line and a dot. Several runs are drawn in the same panels,
one colour per run, to compare them.

matplotlib is an optional extra (``pip install 'nncli[plot]'``). It is used
through its object API with the Agg canvas (no pyplot, no global backend
switch, no display needed), and the PNG is written atomically.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from nncli import checkpoint, fileio
from nncli.errors import ConfigError, NncliError

INSTALL_HINT = "pip install 'nncli[plot]'"
NOT_PLOTTED = ("learning_rate", "seconds", "epoch")
MAX_DRAWN = 1e100   # larger values (a diverged run) are left out of a panel, with a note
RUN_FILES = ("metrics.csv", "model.h5", "last.h5")   # what read_run reads


@dataclass
class Run:
    label: str
    history: dict[str, list[float]]
    best_epoch: int = 0
    metric: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def main_metric(history: Mapping[str, Sequence[float]]) -> str | None:
    """The first metric of the history (its keys follow the config's order: loss, metrics..., val_...)."""
    for key in history:
        if key != "loss" and not key.startswith("val_") and key not in NOT_PLOTTED:
            return key
    return None


def _matplotlib(what: str = "plotting"):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise NncliError(f"{what} needs matplotlib: {INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


def new_figure(what: str = "plotting", **kwargs):
    """A matplotlib Figure (``kwargs``: figsize, dpi) on the Agg canvas; without matplotlib, the
    error "`what` needs matplotlib: pip install ..."."""
    Figure, FigureCanvasAgg = _matplotlib(what)
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, target: fileio.OutputTarget, **kwargs) -> None:
    """Write `fig` as a PNG to a checked output target, atomically (``kwargs``: savefig's, e.g. dpi)."""
    try:
        with fileio.open_output(target, binary=True) as fh:
            fig.savefig(fh, format="png", **kwargs)
    except OSError as exc:
        raise NncliError(f"{target.path}: cannot write the picture: {exc.strerror or exc}") from None


def available() -> bool:
    try:
        _matplotlib()
    except NncliError:
        return False
    return True


def _read_csv(path: Path) -> dict[str, list[float]]:
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not an nncli metrics.csv")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not an nncli metrics.csv (not UTF-8 text: bad byte at offset "
                          f"{exc.start})") from None
    except csv.Error as exc:
        raise ConfigError(f"{path}: not an nncli metrics.csv ({exc})") from None
    except OSError as exc:
        raise NncliError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not rows or "loss" not in rows[0]:
        raise ConfigError(f"{path}: not an nncli metrics.csv (no loss column)")
    header = rows[0]
    history: dict[str, list[float]] = {k: [] for k in header if k != "epoch"}
    for row in rows[1:]:
        for k, v in zip(header, row):
            if k != "epoch":
                try:
                    history[k].append(float(v) if v != "" else math.nan)
                except ValueError:
                    raise ConfigError(f"{path}: not an nncli metrics.csv (value {v!r} in column {k})") from None
    return history


def read_run(folder: str | os.PathLike) -> Run:
    """The history and best epoch of a run folder (metrics.csv, else last.h5 / model.h5)."""
    path = Path(folder)
    if not path.exists():
        raise ConfigError(f"{folder}: no such folder")
    if not path.is_dir():
        raise ConfigError(f"{folder}: not a run folder (give the output folder of nncli train)")
    csv_path = path / "metrics.csv"
    best_epoch = 0
    history: dict[str, list[float]] | None = _read_csv(csv_path) if csv_path.exists() else None
    for name in ("model.h5", "last.h5"):  # model.h5 knows the best epoch; last.h5 the whole history
        if not (path / name).exists():
            continue
        try:
            ck = checkpoint.load(path / name)
        except NncliError:
            continue
        best_epoch = best_epoch or int(ck.best_epoch)
        if history is None or (name == "last.h5" and not csv_path.exists()):
            history = {k: list(v) for k, v in ck.history.items()}
    if not history or not history.get("loss"):
        raise ConfigError(f"{folder}: not a run folder (no metrics.csv or checkpoint with a history; "
                          f"give the output folder of nncli train)")
    return Run(path.resolve().name or str(path), history, best_epoch, main_metric(history))


def draw(runs: Sequence[Run], out: str | os.PathLike | fileio.OutputTarget, title: str | None = None) -> Path:
    """Draw `runs` into one PNG at `out` (see :func:`nncli.fileio.output_target`); return the path."""
    _matplotlib()  # before the output is checked, as before anything else
    target = fileio.output_target(out, picture=True, what="picture")
    metrics = [r.metric for r in runs if r.metric]
    metric = metrics[0] if metrics else None
    lr_varies = any(len(set(r.history.get("learning_rate", []))) > 1 for r in runs)
    panels = ["loss"] + ([metric] if metric else []) + (["learning_rate"] if lr_varies else [])
    fig = new_figure(figsize=(5.0 * len(panels), 4.0), dpi=100)
    axes = [fig.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    colours = [f"C{i % 10}" for i in range(len(runs))]
    labels = _unique([r.label for r in runs])
    many = len(runs) > 1
    for ax, key in zip(axes, panels):
        hidden = False
        for run, colour, label in zip(runs, colours, labels):
            h = {k: _drawable(v) for k, v in run.history.items()}
            hidden = hidden or any(not math.isnan(v) and not abs(v) <= MAX_DRAWN
                                   for k in (key, f"val_{key}") for v in run.history.get(k, ()))
            if key not in h:
                continue
            epochs = list(range(1, len(h[key]) + 1))
            prefix = f"{label} " if many else ""
            if key == "learning_rate":
                ax.plot(epochs, h[key], color=colour, label=prefix.strip() or "learning rate")
                continue
            ax.plot(epochs, h[key], color=colour, linestyle="-", label=f"{prefix}train")
            val = h.get(f"val_{key}")
            if val:
                ax.plot(epochs, val, color=colour, linestyle="--", label=f"{prefix}validation")
            if run.best_epoch and 0 < run.best_epoch <= len(epochs):
                at = run.best_epoch - 1
                series = val if val else h[key]
                ax.axvline(run.best_epoch, color=colour, linestyle=":", linewidth=1)
                ax.plot([run.best_epoch], [series[at]], "o", color=colour,
                        label=f"{prefix}best epoch {run.best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(key.replace("_", " ") + (f" (values beyond ±{MAX_DRAWN:g} not drawn)" if hidden else ""),
                     fontsize="medium")
        if key == "learning_rate" and all(v > 0 for r in runs for v in r.history.get(key, [1.0])):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, target)
    return Path(target.path)


def _drawable(values: Sequence[float]) -> list[float]:
    """`values` with the ones no axis can span (inf, nan, |v| > MAX_DRAWN) left out (nan: a gap)."""
    return [v if math.isfinite(v) and abs(v) <= MAX_DRAWN else math.nan for v in values]


def _unique(labels: list[str]) -> list[str]:
    return [f"{l} ({i + 1})" if labels.count(l) > 1 else l for i, l in enumerate(labels)]


def plot_runs(folders: Sequence[str | os.PathLike], output: str | os.PathLike | None = None) -> Path:
    """`nncli plot`: one run -> RUN/curves.png by default; several -> compare.png (current folder)."""
    _matplotlib()  # fail early, before reading anything
    runs = [read_run(f) for f in folders]
    if output is None:
        output = Path(folders[0]) / "curves.png" if len(runs) == 1 else Path("compare.png")
    # checked before drawing: never one of the files read (nor any file that is not a PNG)
    inputs = [Path(f) / name for f in folders for name in RUN_FILES]
    target = fileio.output_target(output, inputs=inputs, picture=True, what="picture")
    return draw(runs, target, title=runs[0].label if len(runs) == 1 else None)


def after_training(result: Any, reporter: Any) -> Path | None:
    """Write curves.png into the run's folder; without matplotlib, a one-line notice instead."""
    if not result.history.get("loss"):
        return None
    if not available():
        reporter.info(f"curves.png skipped: matplotlib is not installed ({INSTALL_HINT})")
        return None
    run = Run(Path(result.output).name, dict(result.history), result.best_epoch, main_metric(result.history))
    try:
        return draw([run], Path(result.output) / "curves.png", title=run.label)
    except (OSError, NncliError) as exc:  # a picture is not worth failing a finished training for
        reporter.info(f"curves.png not written: {getattr(exc, 'message', None) or exc}")
        return None
