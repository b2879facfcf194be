"""Benchmark: scoring memory is bounded by the largest slide, not by the cohort.

    .venv/bin/python bench/bench_cohort.py [--copies 8]

Runs `create_heatmaps.py` in a fresh process on the demo cohort's largest slide alone, then on a
cohort of N copies of it (symlinks with their own features, so every copy is scored and drawn),
and prints each run's wall time and peak RSS (getrusage of the child). Streaming holds: the
N-slide peak stays within a few MB of the 1-slide peak while the time grows with N.
Needs the demo cohort (`python -m demo.build`, or `make demo`).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from scoremap.checkout import DATA_DIR, DEMO_DIR, REPO_ROOT

WORK = DATA_DIR / "bench" / "cohort"
SLIDE_ID = "CMU-tiled-large"


def make_cohort(copies: int) -> Path:
    """A config scoring `copies` copies of the demo's largest slide into its own output folders."""
    base = yaml.safe_load((DEMO_DIR / "demo_config.yaml").read_text())
    folder = WORK / f"n{copies}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "slides").mkdir(parents=True)
    features = DEMO_DIR / "features" / "trident" / f"{SLIDE_ID}.h5"
    rows = ["slide_id,label,process,features_path,coords_path"]
    for i in range(copies):
        sid = f"{SLIDE_ID}-{i}"
        os.symlink(DEMO_DIR / "slides" / f"{SLIDE_ID}.svs", folder / "slides" / f"{sid}.svs")
        rows.append(f"{sid},copy,1,{features},{features}")
    (folder / "process_list.csv").write_text("\n".join(rows) + "\n")
    base["exp_arguments"].update(
        save_exp_code=f"N{copies}",
        raw_save_dir=str(folder / "raw"),
        production_save_dir=str(folder / "prod"),
    )
    base["data_arguments"].update(
        data_dir=str(folder / "slides"), process_list=str(folder / "process_list.csv")
    )
    base["data_arguments"].pop("features_dir", None)
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(base))
    return config


def run(config: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one create_heatmaps.py process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "create_heatmaps.py", "--config", str(config), "--no-progress"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"create_heatmaps.py failed:\n{proc.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        raise SystemExit(
            "run the sizes from smallest to largest: RUSAGE_CHILDREN keeps the maximum"
        )
    return wall, peak / 1024


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--copies", type=int, default=8)
    args = ap.parse_args()
    if not (DEMO_DIR / "demo_config.yaml").exists():
        raise SystemExit("demo cohort missing: run `python -m demo.build` (or `make demo`) first")
    results = {}
    for n in (1, args.copies):
        # each size in its own interpreter: RUSAGE_CHILDREN is a running maximum
        code = (
            "from bench.bench_cohort import make_cohort, run; "
            f"w, m = run(make_cohort({n})); print(w, m)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT
        )
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        wall, peak = (float(v) for v in out.stdout.split())
        results[n] = (wall, peak)
        print(f"{n:>3} slide(s) of {SLIDE_ID}: {wall:6.2f} s, peak RSS {peak:6.0f} MB", flush=True)
    (w1, m1), (wn, mn) = results[1], results[args.copies]
    print(
        f"\n{args.copies}x the slides: {wn / w1:.1f}x the time, {mn / m1:.2f}x the peak memory "
        f"({mn - m1:+.0f} MB)"
    )
    print(
        f"{'PASS' if mn <= m1 * 1.15 else 'FAIL'} memory bounded by the largest slide "
        f"({mn:.0f} MB for {args.copies} slides <= 1.15 x {m1:.0f} MB for one)"
    )


if __name__ == "__main__":
    main()
