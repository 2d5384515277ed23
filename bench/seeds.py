"""Train a shipped example over several seeds and report its held-out figure as a range.

Every accuracy or loss the README publishes for an example comes from this script, so a fresh
clone reproduces it:

    python bench/seeds.py configs/digits-cnn.yaml --seeds 0 1 2 3 4 5
    python bench/seeds.py configs/iris.yaml --seeds 0 1 2 3 4 5    # no test file: the held-out split

Each seed trains through the library entry point behind `nncli train` (`--seed N`) into a
temporary folder, then evaluates `model.h5` on the config's `data.test` file; a config without
one reports `model.h5`'s figure on its seeded validation split (`val_<metric>`). It prints one line per seed and then
min / median / max, with the CPU model, so a figure can be quoted with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import cpu_model  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, help="override the config's epochs")
    ap.add_argument("--metric", help="the figure to report (default: accuracy, else loss)")
    ap.add_argument("--json", help="also write the per-seed figures here")
    a = ap.parse_args(argv)

    from nncli import inference, spec as spec_mod
    from nncli.training import trainer

    spec = spec_mod.load(a.config, {})
    test_path = spec["data"]["test"]
    where = "test" if test_path else "validation"
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            t0 = time.perf_counter()
            out = Path(tmp) / f"seed{seed}"
            result = trainer.train(a.config, output=str(out), seed=seed, epochs=a.epochs)
            if test_path:
                ev = inference.evaluate(out / "model.h5", test_path).metrics
            else:
                ev = {k[4:]: v for k, v in result.best.items() if k.startswith("val_")}
            metric = a.metric or ("accuracy" if "accuracy" in ev else "loss")
            figures.append(float(ev[metric]))
            print(f"seed {seed}: {where} {metric} {ev[metric]:.4f}  ({result.epochs_run} epochs, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"{Path(a.config).name}: {where} {metric} over seeds {a.seeds}: min {min(figures):.4f}  "
          f"median {statistics.median(figures):.4f}  max {max(figures):.4f}  (CPU: {cpu_model()})")
    if a.json:
        Path(a.json).write_text(json.dumps({"config": a.config, "metric": metric, "seeds": a.seeds,
                                            "values": figures, "cpu": cpu_model()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
