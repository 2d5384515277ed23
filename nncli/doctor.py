"""`nncli doctor`: what this machine can run, and what nncli would pick.

Reports the PyTensor backends (installed or not, and why), the BLAS the C
backend links, BLAS threads, the compile cache location, the devices jax
sees, and which backend `backend: auto` takes for dense, conv and recurrent
networks.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from nncli import backend, blas
from nncli.errors import ConfigError


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def report() -> dict:
    """Everything `nncli doctor` prints, as plain data."""
    import pytensor

    usable = backend.available()
    found = blas.find() if blas.cxx_compiler() else None
    details = {
        "jax": f"jax {_version('jax')}, jaxlib {_version('jaxlib')}" if backend.jax_installed() else "",
        "numba": f"numba {_version('numba')}" if backend.numba_installed() else "",
        "c": f"compiler {blas.cxx_compiler()}" if blas.cxx_compiler() else "",
    }
    devices = ["cpu"]
    gpu_note = ""
    if backend.jax_installed():
        if backend.gpu_available():
            jax = backend.import_jax()

            devices += [f"gpu ({d.device_kind})" for d in jax.devices() if d.platform == "gpu"]
        else:
            gpu_note = "no CUDA GPU visible to jax (device: gpu needs one and pip install 'jax[cuda12]' or 'jax[cuda13]')"
    else:
        gpu_note = "jax not installed, so no GPU (pip install 'jax[cuda12]' or 'jax[cuda13]')"
    cache_env = os.environ.get(backend.CACHE_ENV)
    return {
        "versions": {"nncli": _version("nncli"), "pytensor": pytensor.__version__, "numpy": _version("numpy"),
                     "python": platform.python_version()},
        "backends": {name: {"available": not usable[name], "why_not": usable[name], "details": details[name]}
                     for name in backend.BACKENDS},
        "auto": {kind: backend.auto_backend(kind) for kind in ("dense", "conv", "recurrent")},
        "blas": None if found is None else {"name": found.name, "ok": found.ok, "problem": found.problem,
                                            "library": found.library, "ldflags": found.ldflags},
        "blas_threads": {"batch < 256": blas.threads_for("dense", 32),
                         "batch >= 256": blas.threads_for("dense", 1024),
                         "recurrent": blas.threads_for("recurrent")},
        "cpu_devices": _cpu_device_setting(),
        "compile_cache": str(pytensor.config.compiledir),
        "compile_cache_exposed": backend.cache_exposure(),
        "cache_env": cache_env or "",
        "cache_env_applied": bool(cache_env) and str(pytensor.config.base_compiledir).startswith(
            os.path.abspath(os.path.expanduser(cache_env))),
        "devices": devices,
        "gpu_note": gpu_note,
        "cpu_count": os.cpu_count(),
        "NNCLI_BACKEND": os.environ.get("NNCLI_BACKEND", ""),
    }


def _cpu_device_setting() -> int | str:
    """The CPU devices nncli asks JAX for (layers/batch_shards.py), or why the setting is wrong."""
    try:
        return backend.cpu_device_count()
    except ConfigError as exc:
        return exc.message


def lines(info: dict) -> list[str]:
    v = info["versions"]
    out = [f"nncli {v['nncli']}, pytensor {v['pytensor']}, numpy {v['numpy']}, python {v['python']} "
           f"({sys.platform}, {info['cpu_count']} cores)", "", "backends:"]
    for name, b in info["backends"].items():
        state = "available" if b["available"] else "unavailable"
        note = b["details"] if b["available"] else b["why_not"]
        out.append(f"  {name:<6} {state:<12} {note}")
    out.append("backend auto picks: " + ", ".join(f"{k} nets -> {v}" for k, v in info["auto"].items())
               + (f" (NNCLI_BACKEND={info['NNCLI_BACKEND']} overrides it)" if info["NNCLI_BACKEND"] else ""))
    blas = info["blas"]
    if blas is None:
        out.append("BLAS: none linked (the C backend is slow without one)")
    elif blas["ok"]:
        out.append(f"BLAS: {blas['name']}")
        if blas["library"]:
            out.append(f"  library {blas['library']}")
    else:
        out.append(f"BLAS: {blas['name']} found but not usable: {blas['problem']}")
    t = info["blas_threads"]
    out.append("BLAS threads (C backend): " + ", ".join(f"{k} {v}" for k, v in t.items())
               + " (NNCLI_BLAS_THREADS overrides)")
    cache = f"compile cache: {info['compile_cache']}"
    if info["cache_env"]:
        cache += f" (NNCLI_CACHE_DIR={info['cache_env']}" + ("" if info["cache_env_applied"] else
                                                              ", set after PyTensor was imported: not applied") + ")"
    else:
        cache += " (set NNCLI_CACHE_DIR to move it)"
    out.append(cache)
    if info["compile_cache_exposed"]:
        out.append(f"  WARNING: {info['compile_cache_exposed']}: the cache's entries run as code, keep it "
                   "writable by you alone (or set NNCLI_CACHE_DIR to a private folder)")
    n = info["cpu_devices"]
    out.append(f"recurrent layers (jax, CPU): the batch split over {n} CPU device{'s' if n != 1 else ''}, one "
               f"per core ({backend.CPU_DEVICES_ENV} overrides)" if isinstance(n, int) else f"CPU devices: {n}")
    out.append("devices: " + ", ".join(info["devices"]) + (f"; {info['gpu_note']}" if info["gpu_note"] else ""))
    return out
