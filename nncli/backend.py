"""Which PyTensor backend and device run the compiled functions.

The choice is set in PyTensor's *global* config (softmax's inner graphs
compile with the global mode, so a per-function ``mode=`` is not enough),
together with one float type for training (float32; hyperparameters are
cast to it so updates keep the parameters' dtype).

``auto`` picks JAX when it is installed: measured here it compiles an MLP
step in ~1.5 s (NUMBA: ~21 s cold) and runs it faster (100-150 us vs
220 us for a 64-128-10 MLP at batch 64); without JAX it uses NUMBA, whose
on-disk cache makes the second run start fast.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from nncli.errors import ConfigError

BACKENDS = ("jax", "numba", "c")
_MODES = {"jax": "JAX", "numba": "NUMBA", "c": "CVM"}


@dataclass(frozen=True)
class Choice:
    backend: str
    device: str
    notice: str = ""

    def describe(self) -> str:
        return f"backend {self.backend}, device {self.device}" + (f" ({self.notice})" if self.notice else "")


def jax_installed() -> bool:
    return importlib.util.find_spec("jax") is not None and importlib.util.find_spec("jaxlib") is not None


def gpu_available() -> bool:
    if not jax_installed():
        return False
    try:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except Exception:  # no CUDA plugin / no driver
        return False


def choose(backend: str = "auto", device: str = "auto") -> Choice:
    """Resolve the config's backend/device words into what this machine can run."""
    env = os.environ.get("NNCLI_BACKEND")
    if backend == "auto" and env:
        if env not in BACKENDS:
            raise ConfigError(f"NNCLI_BACKEND={env}: expected one of {', '.join(BACKENDS)}")
        backend = env
    if backend == "auto":
        backend = "jax" if jax_installed() else "numba"
    if backend == "jax" and not jax_installed():
        raise ConfigError("backend: jax is not installed (pip install jax jaxlib), or use backend: numba")
    if device == "gpu":
        if backend != "jax":
            raise ConfigError(f"device: gpu runs through the JAX backend, but backend is {backend}")
        if not gpu_available():
            raise ConfigError("device: gpu, but no CUDA GPU is visible to jax "
                              "(install the CUDA build: pip install 'jax[cuda12]'), or use device: cpu")
        return Choice(backend, "gpu")
    if device == "auto" and backend == "jax" and gpu_available():
        return Choice(backend, "gpu")
    return Choice(backend, "cpu", "device auto: no GPU found, using the CPU" if device == "auto" else "")


def activate(choice: Choice) -> None:
    """Set PyTensor's global mode and float type for training."""
    import warnings

    import pytensor

    for noise in ("Skipping Assert", "Explicitly requested dtype", "PyTensor could not link to a BLAS"):
        warnings.filterwarnings("ignore", message=noise)
    if choice.backend == "jax":
        import jax

        jax.config.update("jax_platforms", "cuda" if choice.device == "gpu" else "cpu")
    pytensor.config.floatX = "float32"
    pytensor.config.mode = _MODES[choice.backend]
