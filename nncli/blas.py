"""The C backend's toolchain: PyTensor's C++ compiler and the BLAS it links.

A plain ``pip install`` gives the C backend no BLAS PyTensor can find: the
OpenBLAS that scipy's wheel bundles (``scipy.libs/libscipy_openblas-*.so``)
exports its symbols with a ``scipy_`` prefix (``scipy_sgemm_``). nncli links
it anyway: ``blas__ldflags`` gets the library and one ``-Dsgemm_=scipy_sgemm_``
per routine PyTensor's C code calls (non ``-l``/``-L`` flags reach the
compiler as compile arguments of every BLAS op), and a 2x2 sgemm test
program is compiled once per machine and cached to prove it links and gives
the right numbers. A BLAS the user configured (PYTENSOR_FLAGS or
~/.pytensorrc ``blas__ldflags``) is left alone.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import importlib.util
import json
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

THREADS_ENV = "NNCLI_BLAS_THREADS"

# The Fortran BLAS routines PyTensor's C code declares (pytensor/tensor/blas_headers.py).
ROUTINES = tuple(
    f"{p}{r}_" for p in "sdcz" for r in ("gemm", "gemv", "axpy", "scal", "copy", "swap", "symm", "syrk", "trmm",
                                         "trsm")
) + ("sger_", "dger_", "cgerc_", "cgeru_", "zgerc_", "zgeru_", "sdot_", "ddot_", "srot_", "drot_")


def cxx_compiler() -> str:
    """PyTensor's C++ compiler ('' when there is none: the C backend then runs Python code)."""
    import pytensor

    return pytensor.config.cxx or ""


def _marker_dir() -> Path:
    """Where the link test's result is kept: PyTensor's base_compiledir (backend.cache_dir)."""
    import pytensor

    return Path(pytensor.config.base_compiledir)


@dataclass(frozen=True)
class Blas:
    """A BLAS the C backend can link: how to link it and how to set its threads."""

    name: str                  # e.g. "OpenBLAS 0.3.28 (scipy's wheel)"
    ldflags: str               # the value for pytensor.config.blas__ldflags
    library: str = ""          # the shared library file, when known
    threads_symbol: str = ""   # e.g. scipy_openblas_set_num_threads
    ok: bool = True            # linked and gave the right numbers
    problem: str = ""          # why not, when not ok


def user_ldflags() -> str | None:
    """blas__ldflags as the user set it (PYTENSOR_FLAGS or a .pytensorrc), or None."""
    import pytensor

    try:
        return str(pytensor.config.fetch_val_for_key("blas__ldflags"))
    except KeyError:
        return None


def wheel_openblas() -> list[Path]:
    """OpenBLAS libraries bundled in scipy's wheel (LP64: 32-bit ints, like PyTensor's C code)."""
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.origin:
        return []
    site = Path(spec.origin).parent.parent
    found = []
    for folder in (site / "scipy.libs", Path(spec.origin).parent / ".dylibs"):
        found += [Path(p) for p in sorted(glob.glob(str(folder / "libscipy_openblas*")))
                  if "64_" not in Path(p).name and (Path(p).suffix in (".so", ".dylib") or ".so." in Path(p).name)]
    return found


def _openblas_config(lib: ctypes.CDLL, prefix: str) -> str:
    for sym in (f"{prefix}openblas_get_config", "openblas_get_config"):
        fn = getattr(lib, sym, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            return (fn() or b"").decode(errors="replace").strip()
    return ""


def _candidate_blas() -> Blas | None:
    user = user_ldflags()
    if user is not None:
        return Blas("configured by the user (blas__ldflags)", user) if user.strip() else None
    for path in wheel_openblas():
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        prefix = "scipy_" if hasattr(lib, "scipy_sgemm_") else ""
        if not hasattr(lib, prefix + "sgemm_"):
            continue
        stem = path.name[3:].split(".so")[0].split(".dylib")[0]
        folder = str(path.parent)
        flags = [f"-L{folder}", f"-l{stem}", f"-Wl,-rpath,{folder}"]
        if prefix:
            flags += [f"-D{r}={prefix}{r}" for r in ROUTINES if hasattr(lib, prefix + r)]
        version = _openblas_config(lib, prefix).split(" ")
        name = " ".join(version[:2]) if version and version[0] else "OpenBLAS"
        return Blas(f"{name} from scipy's wheel", " ".join(shlex.quote(f) for f in flags),
                    str(path), f"{prefix}openblas_set_num_threads")
    from ctypes.util import find_library

    system = find_library("openblas")
    if system:
        return Blas(f"OpenBLAS ({system}, system)", "-lopenblas", system, "openblas_set_num_threads")
    return None


_TEST_PROGRAM = r"""
#include <stdio.h>
extern "C" void sgemm_(char*, char*, int*, int*, int*, float*, const float*, int*, const float*, int*,
                       float*, float*, int*);
int main() {
    char n = 'N'; int two = 2; float one = 1.f, zero = 0.f;
    float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, c[4] = {0, 0, 0, 0};
    sgemm_(&n, &n, &two, &two, &two, &one, a, &two, b, &two, &zero, c, &two);
    /* column-major: c = a @ b = [[23, 31], [34, 46]] */
    return (c[0] == 23.f && c[1] == 34.f && c[2] == 31.f && c[3] == 46.f) ? 0 : 3;
}
"""


def _verify(blas: Blas, cxx: str, marker_dir: Path) -> Blas:
    """Compile and run a 2x2 sgemm against `blas` once per machine (the result is cached)."""
    key = hashlib.sha256(f"{cxx}\n{blas.ldflags}".encode()).hexdigest()[:16]
    marker = marker_dir / f"nncli-blas-{key}.json"
    try:
        return Blas(**{**blas.__dict__, **json.loads(marker.read_text())})
    except (OSError, ValueError, TypeError):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "t.cpp", Path(tmp) / "t"
        src.write_text(_TEST_PROGRAM)
        try:
            build = subprocess.run([cxx, str(src), "-o", str(exe), *shlex.split(blas.ldflags)],
                                   capture_output=True, text=True, timeout=120)
            if build.returncode != 0:
                result = {"ok": False, "problem": "does not link: " + (build.stderr.strip().splitlines() or [""])[-1]}
            else:
                run = subprocess.run([str(exe)], capture_output=True, timeout=60)
                result = {"ok": run.returncode == 0,
                          "problem": "" if run.returncode == 0 else f"test sgemm gave wrong numbers (exit {run.returncode})"}
        except (OSError, subprocess.SubprocessError) as exc:
            result = {"ok": False, "problem": f"test compile failed: {exc}"}
    try:
        marker_dir.mkdir(parents=True, exist_ok=True)
        tmp_marker = marker.with_suffix(f".{os.getpid()}.tmp")
        tmp_marker.write_text(json.dumps(result))
        os.replace(tmp_marker, marker)
    except OSError:
        pass
    return Blas(**{**blas.__dict__, **result})


_found: list = []


def find() -> Blas | None:
    """The BLAS the C backend links (checked once per machine), or None when there is none.

    A returned Blas may have ok=False (then `problem` says why, and auto avoids C).
    """
    if _found:
        return _found[0]
    blas = _candidate_blas()
    cxx = cxx_compiler()
    if blas is not None and cxx and blas.library and blas.ldflags:
        blas = _verify(blas, cxx, _marker_dir())
    _found.append(blas)
    return blas


def set_threads(n: int | None, blas: Blas | None = None) -> bool:
    """Set the linked OpenBLAS's thread count (None: leave it). True when it was set."""
    blas = blas if blas is not None else find()
    if not n or blas is None or not blas.library or not blas.threads_symbol:
        return False
    try:
        fn = getattr(ctypes.CDLL(blas.library), blas.threads_symbol)
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int]
    fn(int(n))
    return True


def threads_for(kind: str, batch_size: int | None = None) -> int:
    """BLAS threads per workload (C backend). OpenBLAS's worker threads busy-wait, so a second
    thread only pays off for large matrix products on otherwise idle cores. Measured on the 2-core
    machine (bench/results.md): recurrent steps and batches up to 128 ran 3-20x faster with one
    thread, and even batch 1024 was 2.6x faster with one thread while other jobs shared the cores.
    So: one thread for recurrent nets and batches < 256; otherwise half the cores (one on a 2-core
    machine). NNCLI_BLAS_THREADS overrides."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if kind == "recurrent" or (batch_size is not None and batch_size < 256):
        return 1
    return max(1, (os.cpu_count() or 1) // 2)
