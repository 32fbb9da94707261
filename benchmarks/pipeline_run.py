"""Benchmark: wall time and peak memory of one `pno run` in a fresh folder.

    python benchmarks/pipeline_run.py [--preset default] [--pde NAME] [--method NAME ...]
                                      [--set key=value ...]

Runs the installed `pno` command in a new temporary folder (nothing cached, fresh MLflow store),
then prints wall time, peak resident memory of the run (including its children: the temporary
Prefect server), the overall status and the stage timings found in the report.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--pde", default=None, help="the PDE (with its own defaults)")
    parser.add_argument("--method", dest="methods", action="append", default=[],
                        help="a method to train (repeatable; 'all': every method)")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy the run's report folder (report.md, report.json, plots) here")
    args = parser.parse_args()
    pno = shutil.which("pno") or str(Path(sys.executable).parent / "pno")
    cmd = [pno, "run", "--preset", args.preset, *(["--pde", args.pde] if args.pde else []),
           *[f"--method={m}" for m in args.methods], *[f"--set={s}" for s in args.sets]]
    with tempfile.TemporaryDirectory(prefix="pno-bench-") as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        reports = sorted(Path(tmp).glob("pno-output/runs/*/report.json"))
        report = json.loads(reports[-1].read_text()) if reports else None
        if reports and args.keep:
            shutil.copytree(reports[-1].parent, args.keep, dirs_exist_ok=True)
    print(f"command:      {' '.join(cmd[1:])}")
    print(f"machine:      {platform.node()}, {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} cores")
    print(f"exit code:    {proc.returncode}")
    print(f"wall time:    {wall:.1f} s")
    print(f"peak RSS:     {peak_mb:.0f} MB (largest single process of the run)")
    if report is None:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        return 1
    print(f"status:       {report['overall_status']} "
          f"({report['gates_passed']}/{report['gates_total']} gates)")
    for check in report["checks"]:
        if check["section"] == "Infrastructure" and check["status"] == "INFO":
            print(f"  {check['name']}: {check['value']}")
    print("gates:")
    for check in report["checks"]:
        if check["status"] in ("PASS", "FAIL"):
            print(f"  {check['status']} {check['name']}: {check['value']} "
                  f"(threshold {check['threshold']})")
    for method, scores in report["scores"].items():
        print(f"  {method}: " + ", ".join(f"{k}={v:.4g}" for k, v in scores.items()))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
