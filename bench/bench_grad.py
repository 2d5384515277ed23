"""How fast does `nncli grad "exp(sin(x**2))" --at 15` answer, as a whole process?

    python bench/bench_grad.py            # the command, cold and warm (target: warm < 1.5 s)
    python bench/bench_grad.py --modes    # also: the same one-off evaluation in each PyTensor mode

cold = a fresh, empty PyTensor compile cache (PYTENSOR_FLAGS=base_compiledir=<new tmpdir>);
warm = the same cache again (median of --repeat runs). Times include the interpreter's start.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_S = 1.5
EXPECTED = "4.347404090286685"

MODE_SNIPPET = """
import sys
import pytensor, pytensor.tensor as pt
from pytensor.compile.mode import Mode
x = pt.scalar("x", dtype="float64")
f = pt.exp(pt.sin(x ** 2))
name = sys.argv[1]
mode = Mode(linker="py", optimizer="fast_run").excluding("fusion", "inplace") if name == "py (nncli)" else name
fn = pytensor.function([x], pytensor.grad(f, x), mode=mode)
print(repr(float(fn(15.0))))
"""


def nncli_command() -> list:
    exe = os.path.join(os.path.dirname(sys.executable), "nncli")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "nncli.cli"]


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


CPU: list = []  # CPU seconds of each timed run: wall time is inflated on a loaded machine


def timed(cmd: list, compiledir: str) -> tuple:
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={compiledir}")
    cpu, start = _child_cpu(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    seconds = time.perf_counter() - start
    CPU.append(_child_cpu() - cpu)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return seconds, out.stdout.strip()


def cold_warm(cmd: list, repeat: int) -> tuple:
    with tempfile.TemporaryDirectory(prefix="nncli-bench-") as cache:
        cold, output = timed(cmd, cache)
        cold_cpu = CPU[-1]
        warm = statistics.median(timed(cmd, cache)[0] for _ in range(repeat))
        warm_cpu = statistics.median(CPU[-repeat:])
    return f"{cold:5.2f} s (cpu {cold_cpu:.2f})", f"{warm:5.2f} s (cpu {warm_cpu:.2f})", output, warm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--modes", action="store_true", help="also compare PyTensor modes")
    args = parser.parse_args()

    floor, _ = timed([sys.executable, "-c", "pass"], tempfile.gettempdir())
    print(f"python start (no imports): {floor:.2f} s")
    cmd = nncli_command() + ["grad", "exp(sin(x**2))", "--at", "15"]
    cold, warm, output, warm_s = cold_warm(cmd, args.repeat)
    ok = "ok" if output == EXPECTED else f"WRONG: {output}"
    verdict = "meets" if warm_s < TARGET_S else "MISSES"
    print(f"nncli grad \"exp(sin(x**2))\" --at 15 -> {output} ({ok})")
    print(f"  cold {cold}   warm {warm}   ({verdict} the {TARGET_S} s warm target)")
    print(f"  load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    if args.modes:
        print("one-off evaluation of the gradient per PyTensor mode (whole process):")
        for mode in ("py (nncli)", "FAST_COMPILE", "FAST_RUN", "NUMBA"):
            try:
                c, w, out, _ = cold_warm([sys.executable, "-c", MODE_SNIPPET, mode], max(1, args.repeat // 2))
            except SystemExit as exc:
                print(f"  {mode:<14} failed: {exc}")
                continue
            print(f"  {mode:<14} cold {c}   warm {w}   -> {out}")
    return 0 if output == EXPECTED else 1


if __name__ == "__main__":
    sys.exit(main())
