"""What bench_static.py and bench_tiles.py share: the cached 40000x30000 benchmark slide.

Both benches open the same file under data/bench/ (built once, from real CMU-1 tissue by
demo.pyramid) and place ~18,000 level-0 patches of 256 px on it (each its own way).
"""
from __future__ import annotations

import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "data" / "bench"
SLIDE_W, SLIDE_H = 40_000, 30_000
SLIDE_ID = f"bench_{SLIDE_W}x{SLIDE_H}"
PATCH = 256
N_PATCHES = 18_000


def bench_slide(rebuild: bool = False) -> Path:
    """The cached 40000x30000 benchmark slide, built from real tissue when absent."""
    from demo.cmu import cmu_small_region
    from demo.pyramid import write_pyramid
    from demo.tissue import tissue_source

    path = BENCH_DIR / f"{SLIDE_ID}.svs"
    if rebuild or not path.exists():
        print(f"building {path.relative_to(REPO_ROOT)} ...", flush=True)
        t0 = time.perf_counter()
        write_pyramid(path, SLIDE_W, SLIDE_H, tissue_source(cmu_small_region()), tile=256,
                      quality=75, mpp=0.5, seed=0)
        print(f"  built in {time.perf_counter() - t0:.1f} s", flush=True)
    return path
