"""Benchmark: PDE data-generation throughput, reference solver against the fast generator.

    python benchmarks/data_generation.py [--resolution 64] [--samples 200] [--seed 0]
                                         [--pde darcy] [--repeats 1]

For each PDE row it times, in the same run and on the same draws: the plain baseline (Darcy:
one ``scipy.sparse.linalg.spsolve`` per sample, one process), the generator as the pipeline
calls it (Darcy: ``generate_darcy`` with its defaults, i.e. the nested-dissection solver on the
usable cores, at most 4 processes) and the generator on one process. It prints samples/s, the
speed-up over the baseline and the largest per-sample relative difference
``max|u - u_ref| / max|u_ref|`` (must be <= 1e-8), then the command line and the machine.
Timings include drawing the coefficient fields (the same in every variant); the elimination
plan of the fast solver is built once per resolution and process and is timed separately.
With ``--repeats`` > 1 each variant's best time is kept (the machine may be shared: the load
average is printed). Exit code 1 if a solution disagrees.

New PDEs join by adding ``name -> callable(n, resolution, seed) -> list[Variant]`` to ``ROWS``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy

TOLERANCE = 1e-8  # max-norm relative difference allowed between a variant and the baseline


@dataclass(frozen=True)
class Variant:
    """One timed way of generating ``samples`` samples; the first variant is the baseline."""

    name: str
    seconds: float
    samples: int
    solution: np.ndarray  # (samples, ...) the generated targets, compared with the baseline


def _best_time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    """Best wall time of ``repeats`` calls of ``fn`` and the output of the last call."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def darcy(n: int, resolution: int, seed: int, repeats: int = 1) -> list[Variant]:
    """Darcy rows: spsolve per sample (baseline), ``generate_darcy`` default, one process."""
    from pdes.darcy import generate_darcy

    t0 = time.perf_counter()
    generate_darcy(1, resolution, seed, workers=1)  # builds the cached elimination plan
    print(f"darcy: first call (builds the elimination plan, once per resolution and process; "
          f"not in the times below): {time.perf_counter() - t0:.3f} s")
    calls = {
        "spsolve per sample (baseline)": dict(method="spsolve"),
        "generate_darcy (default)": {},
        "generate_darcy (workers=1)": dict(workers=1),
    }
    out = []
    for name, kwargs in calls.items():
        seconds, u = _best_time(lambda kw=kwargs: generate_darcy(n, resolution, seed, **kw)[1],
                                repeats)
        out.append(Variant(name, seconds, n, u))
    return out


def registry_row(pde: str) -> Callable[..., list[Variant]]:
    """One row for a time-dependent PDE: its generator at the PDE's own default resolution and
    parameters (``--resolution`` is Darcy's), as the pipeline calls it."""
    def row(n: int, resolution: int, seed: int, repeats: int = 1) -> list[Variant]:
        from pdes.registry import build_split, generating_config, get_spec

        gen = generating_config(pde, "bench", n, get_spec(pde).default_resolution, seed)
        seconds, u = _best_time(lambda: build_split(gen).targets, repeats)
        return [Variant(f"generate_{pde} (R={gen['resolution']})", seconds, n, u)]

    return row


ROWS: dict[str, Callable[..., list[Variant]]] = {
    "darcy": darcy, **{p: registry_row(p) for p in ("burgers", "ks", "navier_stokes")}}


def max_relative_difference(u: np.ndarray, ref: np.ndarray) -> float:
    """Largest per-sample ``max|u - ref| / max|ref|`` over the leading (sample) axis."""
    axes = tuple(range(1, ref.ndim))
    return float(np.max(np.max(np.abs(u - ref), axis=axes) / np.max(np.abs(ref), axis=axes)))


def machine() -> str:
    """Cores, CPU model, load and library versions, in one line."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        model = names[0] if names else model
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.node()}: {os.cpu_count()} cores ({usable} usable), {model}{load}; "
            f"Python {platform.python_version()}, numpy {np.__version__}, "
            f"scipy {scipy.__version__}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pde", choices=sorted(ROWS), action="append")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    ok = True
    results = {pde: ROWS[pde](args.samples, args.resolution, args.seed, args.repeats)
               for pde in args.pde or sorted(ROWS)}
    print(f"{'pde':<14}{'variant':<32}{'samples/s':>12}{'ms/sample':>12}{'speed-up':>10}"
          f"{'max rel diff':>15}")
    for pde, variants in results.items():
        base = variants[0]
        for v in variants:
            diff = max_relative_difference(v.solution, base.solution)
            ok &= diff <= TOLERANCE
            print(f"{pde:<14}{v.name:<32}{v.samples / v.seconds:>12.1f}"
                  f"{1e3 * v.seconds / v.samples:>12.3f}{base.seconds / v.seconds:>9.2f}x"
                  f"{diff:>15.2e}")
    print(f"command:  {' '.join([sys.executable, *sys.argv])}")
    print(f"machine:  {machine()}")
    print(f"agreement within {TOLERANCE:g}: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
