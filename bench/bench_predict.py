"""Benchmark: `nncli predict` on a large CSV and a large HDF5 file, against the same forward
pass in numpy on arrays already in memory (the floor) and against PyTorch inference.

    python bench/bench_predict.py [--rows 1000000] [--quick] [--keep DIR]

The model is configs/digits-mlp.yaml (64 inputs, standard normalisation, dense 128 tanh,
dense 10 softmax) trained for one epoch. The inputs are random 8x8 "digits" (integers 0..16,
as the training data), written under a temporary folder (deleted afterwards) as a CSV with the
columns x0..x63 and as an HDF5 file with a dataset x.

Reported, in rows per second:
- the floor: normalise + forward pass in numpy (float32, batches of 1024) on the array in memory,
  the faster of numpy's default BLAS threads and one BLAS thread (a child process);
- PyTorch inference (torch.no_grad, same weights, same batches; 1 thread and the default);
- `nncli predict MODEL INPUT -o OUT` as a whole process (start, load, compile, read, compute,
  write the CSV of labels and probabilities; for the HDF5 input also `-o OUT.h5`, the arrays),
  with its peak RSS;
- the same steps in this process, timed one by one: reading (for CSV: parsing) and normalising
  the input, the compiled forward pass, formatting the output CSV text.
Each figure is the best of --repeat runs, taken in turn. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import cpu_model  # noqa: E402

BATCH = 1024


def write_inputs(folder: Path, rows: int, features: int = 64, seed: int = 0) -> tuple[Path, Path, np.ndarray]:
    import h5py

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 17, size=(rows, features)).astype(np.uint8)
    h5 = folder / "inputs.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = x.astype(np.float32)
    # CSV: each value as two digits ("07"), comma separated; built as bytes (fast)
    csv = folder / "inputs.csv"
    header = ",".join(f"x{i}" for i in range(features)) + "\n"
    with open(csv, "wb") as fh:
        fh.write(header.encode())
        for start in range(0, rows, 100_000):
            part = x[start:start + 100_000]
            cells = np.empty((len(part), features, 3), dtype=np.uint8)
            cells[:, :, 0] = ord("0") + part // 10
            cells[:, :, 1] = ord("0") + part % 10
            cells[:, :, 2] = ord(",")
            cells[:, -1, 2] = ord("\n")
            fh.write(cells.tobytes())
    return csv, h5, x.astype(np.float32)


def train_model(folder: Path) -> Path:
    from nncli.training import trainer

    out = folder / "run"
    trainer.train(ROOT / "configs" / "digits-mlp.yaml", output=str(out), epochs=1)
    return out / "model.h5"


def numpy_forward(ck, x: np.ndarray) -> np.ndarray:
    """Normalise + dense tanh + dense softmax in numpy, float32, batches of BATCH (the floor)."""
    p = ck.params
    W1, b1 = np.asarray(p["dense_1/W"], np.float32), np.asarray(p["dense_1/b"], np.float32)
    W2, b2 = np.asarray(p["dense_2/W"], np.float32), np.asarray(p["dense_2/b"], np.float32)
    shift = np.asarray(ck.normalizer.shift, np.float32)
    scale = np.asarray(ck.normalizer.scale, np.float32)
    out = np.empty((len(x), W2.shape[1]), np.float32)
    for s in range(0, len(x), BATCH):
        h = np.tanh(((x[s:s + BATCH] - shift) * scale) @ W1 + b1)
        z = h @ W2 + b2
        z = np.exp(z - z.max(axis=1, keepdims=True))
        out[s:s + BATCH] = z / z.sum(axis=1, keepdims=True)
    return out


def numpy_one_thread(model: Path, h5: Path) -> float:
    """Seconds of numpy_forward in a child process whose BLAS runs one thread (on a busy machine
    a multi-threaded BLAS spins and is many times slower: the floor is the faster of the two)."""
    code = ("import sys, time, h5py, numpy as np; sys.path.insert(0, 'bench'); sys.path.insert(0, '.'); "
            "import bench_predict as b; from nncli import checkpoint; ck = checkpoint.load(sys.argv[1]); "
            "x = np.asarray(h5py.File(sys.argv[2], 'r')['x']); b.numpy_forward(ck, x[:10000]); "
            "t = time.perf_counter(); b.numpy_forward(ck, x); print(time.perf_counter() - t)")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", code, str(model), str(h5)], capture_output=True, cwd=ROOT, env=env)
    return float(p.stdout.split()[-1]) if p.returncode == 0 else float("inf")


def torch_forward(ck, x: np.ndarray, threads: int):
    import torch

    p = ck.params
    lin1, lin2 = torch.nn.Linear(64, 128), torch.nn.Linear(128, 10)
    with torch.no_grad():
        lin1.weight.copy_(torch.from_numpy(np.asarray(p["dense_1/W"], np.float32).T))
        lin1.bias.copy_(torch.from_numpy(np.asarray(p["dense_1/b"], np.float32)))
        lin2.weight.copy_(torch.from_numpy(np.asarray(p["dense_2/W"], np.float32).T))
        lin2.bias.copy_(torch.from_numpy(np.asarray(p["dense_2/b"], np.float32)))
    net = torch.nn.Sequential(lin1, torch.nn.Tanh(), lin2, torch.nn.Softmax(dim=1)).eval()
    shift = torch.from_numpy(np.asarray(ck.normalizer.shift, np.float32))
    scale = torch.from_numpy(np.asarray(ck.normalizer.scale, np.float32))
    xt = torch.from_numpy(x)

    def run():
        torch.set_num_threads(threads)   # when it runs: the settings take turns in one process
        outs = []
        with torch.no_grad():
            for s in range(0, len(xt), BATCH):
                outs.append(net((xt[s:s + BATCH] - shift) * scale))
        return torch.cat(outs).numpy()
    return run


def whole_process(model: Path, inputs: Path, out: Path, *extra: str) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of `nncli predict model inputs -o out [extra]`."""
    nncli = str(Path(sys.executable).with_name("nncli"))
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
               "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")
    p = subprocess.run([sys.executable, "-c", wrapper, nncli, "predict", str(model), str(inputs), "-o", str(out), *extra],
                       capture_output=True, cwd=ROOT, env={**os.environ, "NNCLI_BACKEND": "jax"})
    wall, rss, code = p.stdout.split()
    return float(wall), int(rss) / 1024, int(code)


def stages(model_path: Path, inputs: Path) -> dict[str, float]:
    """nncli predict's steps in this process: read/parse + normalise, forward pass, format."""
    from nncli import functions, inference

    model = inference.load_model(model_path)
    t0 = time.perf_counter()
    chunks = list(inference.input_chunks(model, str(inputs)))
    t1 = time.perf_counter()
    fn = functions.compile_predict(model.net, BATCH)
    t2 = time.perf_counter()
    outs = [functions.predict_array(fn, x) for x in chunks]
    t3 = time.perf_counter()
    total = 0
    for i, out in enumerate(outs):
        total += len(inference.format_predictions(model, out, True, header=i == 0))
    t4 = time.perf_counter()
    for i, out in enumerate(outs):
        inference.format_predictions(model, out, False, header=i == 0)
    t5 = time.perf_counter()
    return {"read": t1 - t0, "compile": t2 - t1, "forward": t3 - t2, "format": t4 - t3,
            "format labels only": t5 - t4, "chunks": len(chunks), "text_mib": total / 2**20}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="200,000 rows, one run each")
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args(argv)
    if a.quick:
        a.rows, a.repeat = 200_000, 1
    os.environ.setdefault("NNCLI_BACKEND", "jax")
    from nncli import backend, checkpoint

    backend.activate(backend.choose("jax", "cpu"))
    with tempfile.TemporaryDirectory(prefix="nncli-predict-") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        csv, h5, x = write_inputs(folder, a.rows)
        print(f"inputs: {a.rows:,} rows x 64; CSV {csv.stat().st_size / 2**20:.0f} MiB, "
              f"HDF5 {h5.stat().st_size / 2**20:.0f} MiB (written in {time.perf_counter() - t:.1f} s)", flush=True)
        model = train_model(folder)
        ck = checkpoint.load(model)
        best: dict[str, float] = {}
        info: dict[str, dict] = {}

        def keep(name, seconds):
            best[name] = min(best.get(name, float("inf")), seconds)

        runs = {}
        runs["numpy floor"] = lambda: numpy_forward(ck, x)   # numpy's BLAS threads as the environment says
        try:
            import torch

            for n in sorted({1, torch.get_num_threads()}):
                runs[f"torch {n} thread{'s' if n > 1 else ''}"] = torch_forward(ck, x, n)
        except ImportError:
            pass
        want = numpy_forward(ck, x[:5000])
        for r in range(a.repeat):
            keep("numpy floor, BLAS 1 thread", numpy_one_thread(model, h5))
            for name, run in runs.items():
                t0 = time.perf_counter()
                out = run()
                keep(name, time.perf_counter() - t0)
                if r == 0:
                    np.testing.assert_allclose(out[:5000], want, rtol=1e-4, atol=1e-6)
            for kind, path in (("csv", csv), ("hdf5", h5)):
                st = stages(model, path)
                for k in ("read", "forward", "format", "format labels only"):
                    keep(f"{kind}: {k}", st[k])
                variants = ((".csv", ()), (".csv", ("--no-proba",)), (".h5", ())) if kind == "hdf5" else ((".csv", ()),)
                for suffix, extra in variants:
                    wall, rss, code = whole_process(model, path, folder / f"out-{kind}{''.join(extra)}{suffix}", *extra)
                    if code != 0:
                        print(f"nncli predict {kind} {' '.join(extra)} -o {suffix} failed (exit {code})")
                    name = f"{kind}: nncli predict process" + (" --no-proba" if extra else "") + (
                        " -o .h5 (arrays)" if suffix == ".h5" else "")
                    keep(name, wall)
                    info[name] = {"rss_mib": max(info.get(name, {}).get("rss_mib", 0), rss)}
        # the output of nncli predict against the floor
        import csv as csvmod

        with open(folder / "out-hdf5.csv") as fh:
            reader = csvmod.reader(fh)
            next(reader)
            got = np.array([[float(v) for v in row[1:]] for _, row in zip(range(5000), reader)])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        import h5py

        with h5py.File(folder / "out-hdf5.h5", "r") as f:
            np.testing.assert_allclose(f["probabilities"][:5000], want, rtol=1e-4, atol=1e-6)
    floor = min(best["numpy floor"], best["numpy floor, BLAS 1 thread"])
    lines = [f"`python bench/bench_predict.py {' '.join(sys.argv[1:] if argv is None else argv)}` on {cpu_model()} "
             f"({platform.machine()}), {os.cpu_count()} cores; {a.rows:,} rows x 64 inputs, digits-mlp "
             f"(64-128 tanh-10 softmax); best of {a.repeat}; load average "
             f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} at the end.", "",
             "| what | seconds | rows/s | x floor | peak RSS MiB |", "|---|---|---|---|---|"]
    for name, s in best.items():
        rss = f"{info[name]['rss_mib']:.0f}" if name in info else ""
        lines.append(f"| {name} | {s:.3f} | {a.rows / s:,.0f} | {s / floor:.1f} | {rss} |")
    for kind in ("csv", "hdf5"):
        inproc = sum(best[f"{kind}: {k}"] for k in ("read", "forward", "format"))
        lines.append("")
        lines.append(f"{kind}: in-process read {best[f'{kind}: read']:.2f} s + forward {best[f'{kind}: forward']:.2f} s "
                     f"+ format {best[f'{kind}: format']:.2f} s = {inproc:.2f} s ({inproc / floor:.1f}x the floor; "
                     f"{best[f'{kind}: read'] / inproc:.0%} reading); the whole process "
                     f"{best[f'{kind}: nncli predict process']:.2f} s.")
    text = "\n".join(lines)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": a.rows, "best": best, "info": info, "cpu": cpu_model()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
