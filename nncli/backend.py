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

The C backend's BLAS (scipy's OpenBLAS, linked through renames) is found in
nncli/blas.py.

Compiled code is cached on disk: PyTensor's ``base_compiledir`` (default
``~/.pytensor``; ``NNCLI_CACHE_DIR=DIR`` moves it to ``DIR/pytensor``, set
before PyTensor is imported). This module sets that up when it is imported,
which happens before anything imports PyTensor in the CLI.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from nncli import blas, generated_sources
from nncli.errors import ConfigError

BACKENDS = ("jax", "numba", "c")
_MODES = {"jax": "JAX", "numba": "NUMBA", "c": "CVM"}
CACHE_ENV = "NNCLI_CACHE_DIR"

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


def cache_exposure() -> str:
    """Why the compile cache is not private to this user ("" when it is): its entries are pickles,
    compiled modules and executables, so whoever can write to it runs code as this user.

    The cache folder (or, before it is made, the nearest folder above it that exists) must be this
    user's and writable by nobody else; each folder above it must be this user's or root's, and
    writable by others only with the sticky bit (as /tmp), so that nobody else can swap its entries."""
    import stat

    me, path = os.getuid(), cache_dir()
    strict = True
    for folder in (path, *path.parents):
        try:
            st = folder.stat()
        except OSError:
            continue                                  # not made yet
        shared = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if st.st_uid != me and (strict or st.st_uid != 0):
            return f"{folder} belongs to another user"
        if shared and (strict or not st.st_mode & stat.S_ISVTX):
            return f"{folder} is writable by other users"
        strict = False
    return ""


# --- what is installed --------------------------------------------------------------

def jax_installed() -> bool:
    return importlib.util.find_spec("jax") is not None and importlib.util.find_spec("jaxlib") is not None


def numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


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
    if not blas.cxx_compiler():
        out["c"] = "no C++ compiler (install g++): PyTensor would run Python code"
    else:
        found = blas.find()
        out["c"] = "" if found is not None and found.ok else (
            f"no usable BLAS ({found.problem})" if found is not None else "no BLAS found: slow")
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
        found = blas.find() if blas.cxx_compiler() else None
        extra = {"blas": found.name if found is not None and found.ok else "",
                 "blas_threads": blas.threads_for(kind, batch_size) if found is not None and found.ok else 0}
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


CPU_DEVICES_ENV = "NNCLI_CPU_DEVICES"
MAX_CPU_DEVICES = 8


def cpu_device_count() -> int:
    """XLA CPU devices to ask for: $NNCLI_CPU_DEVICES, else one per usable core (at most MAX_CPU_DEVICES)."""
    env = os.environ.get(CPU_DEVICES_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ConfigError(f"{CPU_DEVICES_ENV}={env}: expected a whole number >= 1")
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_CPU_DEVICES))


def _ask_for_cpu_devices(jax) -> None:
    """One XLA CPU device per usable core, so that layers/batch_shards.py can run a loop's slices at once.

    Only before JAX starts its backends; later (a library caller that already used jax) it stays as is.
    """
    try:
        jax.config.update("jax_num_cpu_devices", cpu_device_count())
    except RuntimeError:  # backends already started
        pass


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
        _ask_for_cpu_devices(jax)
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
        found = blas.find()
        if blas.user_ldflags() is None:
            # set before any C code compiles; "" (no BLAS) also skips PyTensor's slow probe
            pytensor.config.blas__ldflags = found.ldflags if found is not None and found.ok else ""
        if choice.blas_threads:
            blas.set_threads(choice.blas_threads, found)
    generated_sources.keep_private(numba=choice.backend == "numba")
    pytensor.config.floatX = "float32"
    pytensor.config.mode = _MODES[choice.backend]
