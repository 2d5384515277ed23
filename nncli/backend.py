"""Which PyTensor backend and device run the compiled functions, and how.

The choice is set in PyTensor's *global* config (softmax's inner graphs
compile with the global mode, so a per-function ``mode=`` is not enough),
together with one float type for training (float32; hyperparameters are
cast to it so updates keep the parameters' dtype).

``backend: auto`` picks per network, from the figures `python bench/run.py`
measured on the project's shared 2-core AVX-512 machine (bench/results.md):

* every kind of net (dense, conv, recurrent): JAX. With the C backend linked
  to scipy's OpenBLAS, JAX was still 2-4x faster on the MLP at batch 32 and
  128 and level at batch 1024; XLA's convolutions and compiled scan loop beat
  the C and NUMBA backends several times over. JAX compiles in 1-3 s, and its
  executables are cached on disk.
* without JAX: the C backend when a C++ compiler is there and a BLAS links
  (dense nets; its warm start is the quickest, ~2.4-3.2 s for xor), else NUMBA;
* NUMBA is never the first choice: runtime close to JAX, but a cold compile
  takes 14-55 s.

A plain ``pip install`` gives the C backend no BLAS PyTensor can find: the
OpenBLAS that scipy's wheel bundles (``scipy.libs/libscipy_openblas-*.so``)
exports its symbols with a ``scipy_`` prefix (``scipy_sgemm_``). nncli links
it anyway: ``blas__ldflags`` gets the library and one ``-Dsgemm_=scipy_sgemm_``
per routine PyTensor's C code calls (non ``-l``/``-L`` flags reach the
compiler as compile arguments of every BLAS op), and a 2x2 sgemm test
program is compiled once per machine and cached to prove it links and gives
the right numbers. A BLAS the user configured (PYTENSOR_FLAGS or
~/.pytensorrc ``blas__ldflags``) is left alone.

Compiled code is cached on disk: PyTensor's ``base_compiledir`` (default
``~/.pytensor``; ``NNCLI_CACHE_DIR=DIR`` moves it to ``DIR/pytensor``, set
before PyTensor is imported). This module sets that up when it is imported,
which happens before anything imports PyTensor in the CLI.
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
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from nncli.errors import ConfigError

BACKENDS = ("jax", "numba", "c")
_MODES = {"jax": "JAX", "numba": "NUMBA", "c": "CVM"}
CACHE_ENV = "NNCLI_CACHE_DIR"
BLAS_THREADS_ENV = "NNCLI_BLAS_THREADS"

# The Fortran BLAS routines PyTensor's C code declares (pytensor/tensor/blas_headers.py).
BLAS_ROUTINES = tuple(
    f"{p}{r}_" for p in "sdcz" for r in ("gemm", "gemv", "axpy", "scal", "copy", "swap", "symm", "syrk", "trmm",
                                         "trsm")
) + ("sger_", "dger_", "cgerc_", "cgeru_", "zgerc_", "zgeru_", "sdot_", "ddot_", "srot_", "drot_")

# Which backend `auto` picks for which kind of network, in order of preference
# (measured: bench/results.md). "c" is only taken when a compiler and a BLAS are there.
AUTO_ORDER = {
    "dense": ("jax", "c", "numba"),
    "conv": ("jax", "numba", "c"),
    "recurrent": ("jax", "numba", "c"),
}


# --- environment (before PyTensor is imported) ---------------------------------

def _flags_dict() -> dict[str, str]:
    out = {}
    for item in os.environ.get("PYTENSOR_FLAGS", "").split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def configure_environment() -> None:
    """Point PyTensor's compile cache at $NNCLI_CACHE_DIR/pytensor (only before PyTensor is imported)."""
    root = os.environ.get(CACHE_ENV)
    if not root or "pytensor" in sys.modules:
        return
    flags = _flags_dict()
    if "base_compiledir" in flags:  # the user's explicit PyTensor flag wins
        return
    target = str(Path(root).expanduser().resolve() / "pytensor")
    old = os.environ.get("PYTENSOR_FLAGS", "").strip(",")
    os.environ["PYTENSOR_FLAGS"] = ",".join(x for x in (old, f"base_compiledir={target}") if x)


configure_environment()


def cache_dir() -> Path:
    """The root of nncli's on-disk caches (PyTensor's base_compiledir)."""
    import pytensor

    return Path(pytensor.config.base_compiledir)


# --- what is installed --------------------------------------------------------------

def jax_installed() -> bool:
    return importlib.util.find_spec("jax") is not None and importlib.util.find_spec("jaxlib") is not None


def numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


def cxx_compiler() -> str:
    """PyTensor's C++ compiler ('' when there is none: the C backend then runs Python code)."""
    import pytensor

    return pytensor.config.cxx or ""


def import_jax():
    """Import jax with nncli's GPU defaults, which must be in the environment before jax starts a backend.

    - no preallocation of 75% of the GPU's memory (JAX's default) for what are mostly small nets;
    - deterministic GPU reductions and scatters (`--xla_gpu_deterministic_ops`): the same seed gives
      the same weights and a resumed run equals an uninterrupted one, as on the CPU.
    A user's own XLA_PYTHON_CLIENT_PREALLOCATE or deterministic-ops flag wins.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()
    import jax

    return jax


def gpu_available() -> bool:
    if not jax_installed():
        return False
    try:
        jax = import_jax()

        return any(d.platform == "gpu" for d in jax.devices())
    except Exception:  # no CUDA plugin / no driver
        return False


# --- BLAS -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Blas:
    """A BLAS the C backend can link: how to link it and how to set its threads."""

    name: str                  # e.g. "OpenBLAS 0.3.28 (scipy's wheel)"
    ldflags: str               # the value for pytensor.config.blas__ldflags
    library: str = ""          # the shared library file, when known
    threads_symbol: str = ""   # e.g. scipy_openblas_set_num_threads
    ok: bool = True            # linked and gave the right numbers
    problem: str = ""          # why not, when not ok


def _user_ldflags() -> str | None:
    """blas__ldflags as the user set it (PYTENSOR_FLAGS or a .pytensorrc), or None."""
    import pytensor

    try:
        return str(pytensor.config.fetch_val_for_key("blas__ldflags"))
    except KeyError:
        return None


def _wheel_openblas() -> list[Path]:
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
    user = _user_ldflags()
    if user is not None:
        return Blas("configured by the user (blas__ldflags)", user) if user.strip() else None
    for path in _wheel_openblas():
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
            flags += [f"-D{r}={prefix}{r}" for r in BLAS_ROUTINES if hasattr(lib, prefix + r)]
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


_blas_cache: list = []


def find_blas() -> Blas | None:
    """The BLAS the C backend links (checked once per machine), or None when there is none.

    A returned Blas may have ok=False (then `problem` says why, and auto avoids C).
    """
    if _blas_cache:
        return _blas_cache[0]
    blas = _candidate_blas()
    cxx = cxx_compiler()
    if blas is not None and cxx and blas.library and blas.ldflags:
        blas = _verify(blas, cxx, cache_dir())
    _blas_cache.append(blas)
    return blas


def set_blas_threads(n: int | None, blas: Blas | None = None) -> bool:
    """Set the linked OpenBLAS's thread count (None: leave it). True when it was set."""
    blas = blas if blas is not None else find_blas()
    if not n or blas is None or not blas.library or not blas.threads_symbol:
        return False
    try:
        fn = getattr(ctypes.CDLL(blas.library), blas.threads_symbol)
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int]
    fn(int(n))
    return True


def blas_threads_for(kind: str, batch_size: int | None = None) -> int:
    """BLAS threads per workload (C backend). OpenBLAS's worker threads busy-wait, so a second
    thread only pays off for large matrix products on otherwise idle cores. Measured on the 2-core
    machine (bench/results.md): recurrent steps and batches up to 128 ran 3-20x faster with one
    thread, and even batch 1024 was 2.6x faster with one thread while other jobs shared the cores.
    So: one thread for recurrent nets and batches < 256; otherwise half the cores (one on a 2-core
    machine). NNCLI_BLAS_THREADS overrides."""
    env = os.environ.get(BLAS_THREADS_ENV, "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if kind == "recurrent" or (batch_size is not None and batch_size < 256):
        return 1
    return max(1, (os.cpu_count() or 1) // 2)


# --- the choice ---------------------------------------------------------------------------

def network_kind(layer_kinds: Iterable[str] | None) -> str:
    """'recurrent', 'conv' or 'dense' from the kinds of a network's layers (``Layer.kind``):
    any recurrent layer makes a recurrent network, else any conv layer a conv network."""
    kinds = set(layer_kinds or ())
    if "recurrent" in kinds:
        return "recurrent"
    if "conv" in kinds:
        return "conv"
    return "dense"


@dataclass(frozen=True)
class Choice:
    backend: str
    device: str
    notice: str = ""
    kind: str = "dense"
    blas: str = ""            # the C backend's BLAS, described
    blas_threads: int = 0     # 0: not set

    def describe(self) -> str:
        extra = ""
        if self.backend == "c":
            extra = f" (BLAS {self.blas}, {self.blas_threads} thread{'s' if self.blas_threads != 1 else ''})" \
                if self.blas else " (no BLAS: slow)"
        return f"backend {self.backend}{extra}, device {self.device}" + (f" ({self.notice})" if self.notice else "")


def available() -> dict[str, str]:
    """backend -> '' when usable here, else why not."""
    out = {"jax": "" if jax_installed() else "not installed (pip install jax jaxlib)",
           "numba": "" if numba_installed() else "not installed (pip install numba)"}
    if not cxx_compiler():
        out["c"] = "no C++ compiler (install g++): PyTensor would run Python code"
    else:
        blas = find_blas()
        out["c"] = "" if blas is not None and blas.ok else (
            f"no usable BLAS ({blas.problem})" if blas is not None else "no BLAS found: slow")
    return out


def auto_backend(kind: str) -> str:
    """The backend `auto` takes for a kind of network on this machine."""
    usable = available()
    for name in AUTO_ORDER.get(kind, AUTO_ORDER["dense"]):
        if not usable[name]:
            return name
    return "c"  # nothing else: PyTensor's C backend (or its Python fallback) always runs


def choose(backend: str = "auto", device: str = "auto", layer_kinds: Sequence[str] | None = None,
           batch_size: int | None = None) -> Choice:
    """Resolve the config's backend/device words into what this machine can run.

    `layer_kinds` (each layer's ``kind``: ``[l.kind for l in spec.layers]``) lets `auto` pick
    per network; with `batch_size` they set the C backend's BLAS threads.
    """
    kind = network_kind(layer_kinds)
    env = os.environ.get("NNCLI_BACKEND")
    if backend == "auto" and env:
        if env not in BACKENDS:
            raise ConfigError(f"NNCLI_BACKEND={env}: expected one of {', '.join(BACKENDS)}")
        backend = env
    if backend == "auto":
        backend = "jax" if device == "gpu" else auto_backend(kind)
    if backend == "jax" and not jax_installed():
        raise ConfigError("backend: jax is not installed (pip install jax jaxlib), or use backend: numba")
    if backend == "numba" and not numba_installed():
        raise ConfigError("backend: numba is not installed (pip install numba), or use backend: jax")
    extra = {}
    if backend == "c":
        blas = find_blas() if cxx_compiler() else None
        extra = {"blas": blas.name if blas is not None and blas.ok else "",
                 "blas_threads": blas_threads_for(kind, batch_size) if blas is not None and blas.ok else 0}
    if device == "gpu":
        if backend != "jax":
            raise ConfigError(f"device: gpu runs through the JAX backend, but backend is {backend}")
        if not gpu_available():
            raise ConfigError("device: gpu, but no CUDA GPU is visible to jax "
                              "(install jax's CUDA build: pip install 'jax[cuda12]', or 'jax[cuda13]' for a CUDA 13 driver), or use device: cpu")
        return Choice(backend, "gpu", kind=kind)
    if device == "auto" and backend == "jax" and gpu_available():
        return Choice(backend, "gpu", kind=kind)
    notice = "device auto: no GPU found, using the CPU" if device == "auto" else ""
    return Choice(backend, "cpu", notice, kind=kind, **extra)


def activate(choice: Choice) -> None:
    """Set PyTensor's global mode and float type for training (and the C backend's BLAS)."""
    import warnings

    import pytensor

    for noise in ("Skipping Assert", "Explicitly requested dtype", "PyTensor could not link to a BLAS",
                  "We did not find a dynamic library"):
        warnings.filterwarnings("ignore", message=noise)
    if choice.backend == "jax":
        jax = import_jax()
        if choice.device == "cpu":  # a process that never touches the GPU does not start CUDA
            jax.config.update("jax_platforms", "cpu")
        # where jax has already started its GPU backend in this process (a library caller), this decides
        jax.config.update("jax_default_device", jax.devices("cuda" if choice.device == "gpu" else "cpu")[0])
        # full float32 matrix products on the GPU (JAX's default there is TF32, about 3 significant
        # digits), so a GPU run trains and predicts like a CPU run; PyTorch's default is the same
        if choice.device == "gpu":
            jax.config.update("jax_default_matmul_precision", "highest")
        # XLA's compiled executables on disk: the second run skips XLA's compile (~2 s -> 0.3 s measured)
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if choice.backend == "c":
        blas = find_blas()
        if _user_ldflags() is None:
            # set before any C code compiles; "" (no BLAS) also skips PyTensor's slow probe
            pytensor.config.blas__ldflags = blas.ldflags if blas is not None and blas.ok else ""
        if choice.blas_threads:
            set_blas_threads(choice.blas_threads, blas)
    pytensor.config.floatX = "float32"
    pytensor.config.mode = _MODES[choice.backend]
