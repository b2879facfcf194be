#!/usr/bin/env python
"""A cohort scored as a SLURM job array on a real single-node cluster, against one process.

    python -m bench.bench_slurm [--copies 6] [--tasks 3]

The cohort: `--copies` copies of the demo's 32768x24576 slide (bench_cohort.make_cohort; build the
demo first with `make demo`). Scored once by one `create_heatmaps.py` process, then by
`sbatch --array=1-TASKS slurm/create_heatmaps.sbatch` on a cluster started here (Debian's slurm-wlm
and munge, as root; tests/slurm_cluster.py), each task with one CPU. Per task: its slides, wall
time and peak RSS (measured around mil-heatmaps by a wrapper, from wait4's rusage); and whether
results.csv lists every slide once the array ends.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.bench_cohort import make_cohort, run
from scoremap.checkout import REPO_ROOT
from tests.slurm_cluster import SLURMCTLD, slurm_cluster

MEASURE = """import os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
print(f"measured: wall {time.perf_counter() - t0:.1f} s, "
      f"peak RSS {usage.ru_maxrss / 1024:.0f} MB", flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=6)
    ap.add_argument("--tasks", type=int, default=3)
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or not Path(SLURMCTLD).exists():
        raise SystemExit(
            "needs root and Debian's slurm-wlm + munge (make test-deps, as root, installs them)"
        )
    config = make_cohort(args.copies)
    t0 = time.perf_counter()
    single_wall, single_peak = run(config)
    print(
        f"one process: {args.copies} slides in {single_wall:.1f} s, peak RSS {single_peak:.0f} MB",
        flush=True,
    )

    array_config = config.with_name("array.yaml")
    cfg = yaml.safe_load(config.read_text())
    cfg["exp_arguments"]["save_exp_code"] += "_ARRAY"
    array_config.write_text(yaml.safe_dump(cfg))
    work = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    wrapper = work / "measured-mil-heatmaps"
    wrapper.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c '{MEASURE}' {Path(sys.executable).parent}/mil-heatmaps \"$@\"\n"
    )
    wrapper.chmod(0o755)
    try:
        with slurm_cluster(work / "cluster") as env:
            env = {**env, "MIL_HEATMAPS": str(wrapper)}
            t1 = time.perf_counter()
            done = subprocess.run(
                [
                    "sbatch",
                    "--wait",
                    f"--array=1-{args.tasks}",
                    "--cpus-per-task=1",
                    "--mem=2G",
                    f"--output={work}/task-%a.out",
                    str(REPO_ROOT / "slurm" / "create_heatmaps.sbatch"),
                    str(array_config),
                ],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            array_wall = time.perf_counter() - t1
        print(
            f"\nsbatch --array=1-{args.tasks} (1 CPU, --mem=2G each, 2 CPUs in the cluster): "
            f"{array_wall:.1f} s until the array ended (exit {done.returncode})"
        )
        for log in sorted(work.glob("task-*.out")):
            lines = log.read_text().splitlines()
            scored = next((ln for ln in lines if ln.startswith("scored ")), "?")
            measured = next((ln for ln in lines if ln.startswith("measured:")), "?")
            print(
                f"  task {log.stem.split('-')[1]}: {scored.split(';')[0]}; {measured.split(': ', 1)[-1]}"
            )
        results = config.parent / "prod" / cfg["exp_arguments"]["save_exp_code"] / "results.csv"
        with open(results, newline="") as fh:
            listed = [r["slide_id"] for r in csv.DictReader(fh)]
        print(
            f"  results.csv lists {len(listed)} of {args.copies} slides; "
            f"total bench {time.perf_counter() - t0:.0f} s"
        )
        return 0 if done.returncode == 0 and len(listed) == args.copies else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
