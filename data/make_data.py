"""Regenerate the data sets shipped in data/ (deterministic).

    python data/make_data.py          # write the files next to this script
    python data/make_data.py --check  # regenerate into a temp folder, compare arrays with the shipped files

Needs scikit-learn for iris and digits (a development-only dependency: nncli
itself never imports it), plus numpy and h5py.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent


def write_h5(path: Path, attrs: dict | None = None, **arrays) -> None:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v, compression="gzip", compression_opts=6, shuffle=True)
        f.attrs.update(attrs or {})


def xor(out: Path) -> None:
    (out / "xor.csv").write_text("x1,x2,y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n")


def iris(out: Path) -> None:
    from sklearn.datasets import load_iris

    d = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    with open(out / "iris.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(names)
        for row, label in zip(d.data, d.target):
            w.writerow([f"{v:.1f}" for v in row] + [d.target_names[label]])


def digits(out: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.data.astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=360, stratify=y, random_state=0)
    attrs = {"source": "sklearn.datasets.load_digits (UCI optdigits 8x8)", "split": "stratified, seed 0, 360 test"}
    write_h5(out / "digits.h5", attrs, x=x_tr, y=y_tr)
    write_h5(out / "digits-test.h5", attrs, x=x_te, y=y_te)
    with open(out / "digits-test.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow([f"p{i}" for i in range(64)] + ["label"])
        for row, label in zip(x_te.astype(int), y_te):
            w.writerow(list(row) + [label])


def adding(n: int, seed: int, length: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Hochreiter & Schmidhuber (1997): one marker in each half; target = sum of the marked values."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, size=(n, length)).astype(np.float32)
    markers = np.zeros((n, length), dtype=np.float32)
    half = length // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, length, n)
    markers[np.arange(n), first] = 1
    markers[np.arange(n), second] = 1
    x = np.stack([values, markers], axis=2)
    y = (values[np.arange(n), first] + values[np.arange(n), second]).reshape(n, 1).astype(np.float32)
    return x, y


def majority(n: int, seed: int, length: int = 15, symbols: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of one-hot symbols; the label is the symbol that occurs most often (ties resampled)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    while len(ys) < n:
        seq = rng.integers(0, symbols, length)
        counts = np.bincount(seq, minlength=symbols)
        if (counts == counts.max()).sum() > 1:
            continue
        xs.append(np.eye(symbols, dtype=np.float32)[seq])
        ys.append(int(np.argmax(counts)))
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def sequences(out: Path) -> None:
    x, y = adding(10000, seed=1)
    write_h5(out / "adding.h5", {"task": "adding problem, T=30"}, x=x, y=y)
    x, y = adding(1000, seed=2)
    write_h5(out / "adding-test.h5", {"task": "adding problem, T=30"}, x=x, y=y)
    x, y = majority(4000, seed=3)
    write_h5(out / "majority.h5", {"task": "majority symbol, T=15, 3 symbols"}, x=x, y=y)
    x, y = majority(1000, seed=4)
    write_h5(out / "majority-test.h5", {"task": "majority symbol, T=15, 3 symbols"}, x=x, y=y)


def generate(out: Path) -> None:
    xor(out)
    iris(out)
    digits(out)
    sequences(out)


def _same(a: Path, b: Path) -> bool:
    """Same content: CSV text, or HDF5 datasets (values, shape, dtype) and root attributes (not file bytes: HDF5 embeds times)."""
    if not b.exists():
        return False
    if a.suffix == ".csv":
        return a.read_text() == b.read_text()
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        if set(fa) != set(fb) or dict(fa.attrs) != dict(fb.attrs):
            return False
        return all(fa[k].dtype == fb[k].dtype and np.array_equal(fa[k][()], fb[k][()]) for k in fa)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare a fresh generation with the shipped files")
    args = parser.parse_args()
    if not args.check:
        generate(HERE)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        bad = [p.name for p in sorted(Path(tmp).iterdir()) if not _same(p, HERE / p.name)]
    print("all shipped data files match" if not bad else f"differ: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
