"""Backend/device selection (no GPU needed: jax_installed/gpu_available are monkeypatched: the `machine`
fixture of conftest.py) and `nncli doctor`. The BLAS of the C backend: test_blas.py."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from nncli import backend, blas
from nncli.cli import main
from nncli.errors import ConfigError
from nncli.layers import KINDS, LAYERS

from support import BLOBS_CONFIG, CONFIGS, error_line, nncli_executable


def kinds(types):
    """The kinds `choose` gets for a config's layer type words: each layer class's `kind`."""
    return [LAYERS.get(t).kind for t in types]


DENSE = kinds(["dense", "dropout", "dense"])
CONV = kinds(["reshape", "conv2d", "max_pool2d", "flatten", "dense"])
RNN = kinds(["lstm", "dense"])


def test_network_kind():
    assert backend.network_kind(DENSE) == "dense"
    assert backend.network_kind(CONV) == "conv"
    assert backend.network_kind(RNN) == "recurrent"
    assert backend.network_kind(kinds(["embedding", "gru", "dense"])) == "recurrent"
    assert backend.network_kind(kinds(["simple_rnn"])) == "recurrent"
    assert backend.network_kind(None) == "dense"


def _kind_from_type_words(types):
    """The rule `network_kind` used before layers declared their kind: substrings of the type words."""
    types = [str(t).lower() for t in types]
    if any(w in t for t in types for w in ("rnn", "lstm", "gru", "recurrent")):
        return "recurrent"
    if any(w in t for t in types for w in ("conv", "pool")):
        return "conv"
    return "dense"


def test_layer_kinds_give_every_config_the_backend_the_type_words_gave(machine):
    """Each shipped config, and a network of each layer type, gets the kind (so the backend) it got
    when the kind was guessed from the type words, on machines with and without JAX."""
    assert all(LAYERS.get(t).kind in KINDS for t in LAYERS.names())
    shipped = {p.stem: [l["type"] for l in yaml.safe_load(p.read_text())["layers"]]
               for p in sorted(CONFIGS.glob("*.yaml"))}
    assert {name: backend.network_kind(kinds(types)) for name, types in shipped.items()} == {
        "adding-lstm": "recurrent", "digits-cnn": "conv", "digits-mlp": "dense", "iris": "dense",
        "majority-tcn": "conv", "majority-transformer": "conv", "mnist1d-cnn": "conv",
        "mnist1d-residual-mlp": "dense", "mnist1d-transformer": "conv", "penguins": "dense",
        "penguins-mass": "dense",
        "sequence-rnn": "recurrent", "xor": "dense"}
    networks = list(shipped.values()) + [[t, "dense"] for t in LAYERS.names()]
    for jax in (True, False):
        machine["jax"] = jax
        for types in networks:
            assert backend.network_kind(kinds(types)) == _kind_from_type_words(types), types
            assert backend.choose("auto", "cpu", kinds(types)).backend == \
                backend.auto_backend(_kind_from_type_words(types)), types


def test_auto_picks_per_network(machine, monkeypatch):
    assert backend.choose("auto", "cpu", DENSE).backend == "jax"
    assert backend.choose("auto", "cpu", CONV).backend == "jax"
    assert backend.choose("auto", "cpu", RNN).backend == "jax"
    # the table is per kind of network: a dense-first order picks C where it is usable
    monkeypatch.setitem(backend.AUTO_ORDER, "dense", ("c", "jax", "numba"))
    assert backend.choose("auto", "cpu", DENSE).backend == "c"
    assert backend.choose("auto", "cpu", CONV).backend == "jax"


def test_auto_avoids_c_without_blas_or_compiler(machine):
    machine["jax"] = False
    assert backend.choose("auto", "cpu", DENSE).backend == "c"
    machine["blas"] = None
    assert backend.choose("auto", "cpu", DENSE).backend == "numba"
    machine["blas"] = blas.Blas("broken", "-lx", "/x/lib.so", ok=False, problem="does not link")
    assert backend.choose("auto", "cpu", DENSE).backend == "numba"
    machine["blas"] = blas.Blas("OpenBLAS", "-lopenblas")
    machine["cxx"] = ""
    assert backend.choose("auto", "cpu", DENSE).backend == "numba"


def test_jax_missing_falls_back(machine):
    machine["jax"] = False
    assert backend.choose("auto", "cpu", CONV).backend == "numba"
    assert backend.choose("auto", "auto", RNN).backend == "numba"
    assert backend.choose("auto", "cpu", DENSE).backend == "c"
    machine["blas"] = None
    assert backend.choose("auto", "cpu", DENSE).backend == "numba"
    machine["numba"] = False
    assert backend.choose("auto", "cpu", DENSE).backend == "c"  # the last resort always runs
    with pytest.raises(ConfigError, match="jax is not installed"):
        backend.choose("jax", "cpu", DENSE)


def test_explicit_backend_is_kept(machine):
    for name in ("c", "jax", "numba"):
        assert backend.choose(name, "cpu", CONV).backend == name


def test_env_overrides_auto(machine, monkeypatch):
    monkeypatch.setenv("NNCLI_BACKEND", "numba")
    assert backend.choose("auto", "cpu", DENSE).backend == "numba"
    assert backend.choose("c", "cpu", DENSE).backend == "c"  # an explicit config word wins
    monkeypatch.setenv("NNCLI_BACKEND", "tpu")
    with pytest.raises(ConfigError, match="NNCLI_BACKEND=tpu"):
        backend.choose("auto", "cpu", DENSE)


def test_gpu_without_gpu_is_a_clear_error(machine):
    with pytest.raises(ConfigError, match=r"device: gpu, but no CUDA GPU.*jax\[cuda12\]"):
        backend.choose("auto", "gpu", DENSE)
    machine["jax"] = False
    with pytest.raises(ConfigError, match="jax is not installed"):
        backend.choose("auto", "gpu", DENSE)
    with pytest.raises(ConfigError, match="device: gpu runs through the JAX backend"):
        backend.choose("c", "gpu", DENSE)


def test_auto_device_without_gpu_uses_cpu_with_notice(machine):
    choice = backend.choose("auto", "auto", CONV)
    assert (choice.backend, choice.device) == ("jax", "cpu")
    assert "no GPU found, using the CPU" in choice.describe()
    assert backend.choose("auto", "cpu", CONV).notice == ""


def test_gpu_when_present(machine):
    machine["gpu"] = True
    assert backend.choose("auto", "gpu", DENSE) == backend.Choice("jax", "gpu", kind="dense")
    assert backend.choose("auto", "auto", CONV).device == "gpu"
    assert backend.choose("c", "auto", DENSE).device == "cpu"  # C runs on the CPU only


def test_doctor_lists_backends():
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    out = result.output
    for word in ("backends:", "jax", "numba", "c ", "BLAS", "compile cache:", "devices: cpu", "backend auto picks"):
        assert word in out
    result = CliRunner().invoke(main, ["doctor", "--json"])
    assert result.exit_code == 0 and '"backends"' in result.output


def test_doctor_reports_the_cpu_devices_and_a_bad_setting(monkeypatch):
    import json

    monkeypatch.setenv("NNCLI_CPU_DEVICES", "3")
    result = CliRunner().invoke(main, ["doctor"])
    assert "the batch split over 3 CPU devices" in result.output
    assert json.loads(CliRunner().invoke(main, ["doctor", "--json"]).output)["cpu_devices"] == 3
    monkeypatch.setenv("NNCLI_CPU_DEVICES", "three")
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0
    assert "CPU devices: NNCLI_CPU_DEVICES=three: expected a whole number >= 1" in result.output


def test_doctor_warns_when_others_can_write_to_the_compile_cache(tmp_path, monkeypatch):
    """The cache's entries run as code (pickles, compiled modules): a folder that another user can write
    to, or swap (a folder above it writable by others without the sticky bit), is reported."""
    top = tmp_path / "top"
    cache = top / "nncli" / "pytensor"
    monkeypatch.setattr(backend, "cache_dir", lambda: cache)
    top.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    assert backend.cache_exposure() == ""                    # not made yet: top decides, and it is private
    cache.mkdir(parents=True)
    os.chmod(cache, 0o700)
    assert backend.cache_exposure() == ""
    os.chmod(cache, 0o775)
    assert backend.cache_exposure() == f"{cache} is writable by other users"
    os.chmod(cache, 0o755)
    os.chmod(top, 0o777)                                      # others could rename nncli/ and put theirs there
    assert backend.cache_exposure() == f"{top} is writable by other users"
    os.chmod(top, 0o1777)                                     # sticky, as /tmp: they cannot
    assert backend.cache_exposure() == ""
    result = CliRunner().invoke(main, ["doctor"])
    assert "WARNING" not in result.output
    os.chmod(top, 0o755)
    real = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real + 1)       # as if another user ran nncli
    assert backend.cache_exposure() == f"{cache} belongs to another user"
    monkeypatch.setattr(os, "getuid", lambda: real)
    os.chmod(cache, 0o777)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0
    assert (f"  WARNING: {cache} is writable by other users: the cache's entries run as code, keep it writable "
            "by you alone (or set NNCLI_CACHE_DIR to a private folder)") in result.output.splitlines()


def test_a_bad_cpu_device_count_is_one_line_before_training(blobs_csv, tmp_path):
    """train, like predict, activates the backend: a bad NNCLI_CPU_DEVICES is a config error (exit 2),
    before anything is written: a fresh run leaves no folder, a resumed run's files stay as they were."""
    config = tmp_path / "c.yaml"
    config.write_text(BLOBS_CONFIG.format(train=blobs_csv))
    run = tmp_path / "run"

    def train(devices, *extra):
        env = {**os.environ, "NNCLI_CPU_DEVICES": devices, "NNCLI_BACKEND": "jax"}
        return subprocess.run([nncli_executable(), "train", str(config), "-o", str(run), "-q", *extra],
                              env=env, capture_output=True, text=True, timeout=300)

    proc = train("0")
    assert proc.returncode == 2
    assert error_line(proc.stderr) == "Error: NNCLI_CPU_DEVICES=0: expected a whole number >= 1"
    assert not run.exists()
    assert train("1", "--epochs", "2").returncode == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    proc = train("two", "--resume", "--epochs", "4")
    assert proc.returncode == 2
    assert error_line(proc.stderr) == "Error: NNCLI_CPU_DEVICES=two: expected a whole number >= 1"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_doctor_cache_env_override(tmp_path):
    """NNCLI_CACHE_DIR moves PyTensor's compile cache (a fresh process: it is set before PyTensor loads)."""
    env = {**os.environ, "NNCLI_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([nncli_executable() or sys.executable, "doctor"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("compile cache:"))
    assert str(tmp_path / "cache" / "pytensor") in line and "not applied" not in line


XOR_GPU = """
seed: 0
data: {{train: {train}}}
layers:
  - {{type: dense, units: 4, activation: tanh}}
  - {{type: dense, units: 1, activation: sigmoid}}
loss: binary_crossentropy
epochs: 1
batch_size: 4
device: gpu
"""


def test_device_option_overrides_the_config(tmp_path, xor_csv):
    config = tmp_path / "xor.yaml"
    config.write_text(XOR_GPU.format(train=xor_csv))
    result = CliRunner().invoke(main, ["train", str(config), "--device", "cpu", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "device cpu" in result.output
    if not backend.gpu_available():  # on this CPU machine, the config's own `device: gpu` is a clear error
        result = CliRunner().invoke(main, ["train", str(config), "-o", str(tmp_path / "run2")])
        assert result.exit_code == 2 and "device: gpu, but no CUDA GPU" in result.output
        assert not (tmp_path / "run2" / "model.h5").exists()


def test_a_gpu_trained_checkpoint_predicts_anywhere(tmp_path, blobs_run, blobs_csv):
    """A checkpoint whose config says `device: gpu` predicts on a CPU-only machine (and on a GPU one)."""
    import shutil

    import h5py

    result, _ = blobs_run
    original = result.output / "model.h5"
    moved = tmp_path / "gpu-model.h5"
    shutil.copy(original, moved)
    with h5py.File(moved, "r+") as f:
        text = str(f["config"].attrs["yaml"])
        assert "device: auto" in text
        f["config"].attrs["yaml"] = text.replace("device: auto", "device: gpu")
    outs = []
    for model in (original, moved):
        out = CliRunner().invoke(main, ["predict", str(model), str(blobs_csv)])
        assert out.exit_code == 0, out.output
        outs.append(out.output)
    a = np.genfromtxt(outs[0].splitlines()[1:], delimiter=",", usecols=(1, 2, 3))
    b = np.genfromtxt(outs[1].splitlines()[1:], delimiter=",", usecols=(1, 2, 3))
    np.testing.assert_allclose(a, b, atol=1e-5)
