#!/usr/bin/env python
"""Comparing experiments at real size: the 40000 x 30000 slide with three experiments of one bag each.

    python -m bench.bench_compare [--skip-browser] [--runs 3]

Experiments (blockmaps cached under data/bench/compare/raw):
    A  1,155,990 patches of 256 px every 32 px (bench_scale's 1M bag, its attention)
    C  the same coordinates, other noise (agreement on shared patches)
    B  18,252 patches of 512 px every 256 px at an offset of 100 px, the same smooth field (agreement on
       the cells of a common raster: another grid)

Figures, each against a baseline in the same run:
1. agreement, cold (computed, not cached): A vs C (patches) and A vs B (cells), seconds;
2. in process, median difference tile (percentile(A) - percentile(B)) over the median plain overlay
   tile of A, Deep Zoom levels 8-16, caches warm;
3. cold comparison page open (slide + A + B panes, Chromium) until every pane has loaded its view,
   over the cold slide page open of A alone, median of `--runs`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.bench_scale import attention, grid_coords
from bench.common import (
    BENCH_DIR,
    LABEL,
    PATCH,
    SLIDE_H,
    SLIDE_W,
    bench_slide,
    cold_open,
    write_bench_blockmap,
)
from tests.chromium import launch_chromium

COMPARE_DIR = BENCH_DIR / "compare"
RAW = COMPARE_DIR / "raw"
SLIDE_ID = "bag"
EXPERIMENTS = ("A", "C", "B")


def write_experiments(slide, rebuild: bool) -> dict[str, int]:
    from scoremap.blockmap import blockmap_path, read_blockmap

    sizes = {}
    for exp in EXPERIMENTS:
        path = blockmap_path(RAW / exp, LABEL, SLIDE_ID)
        if path.exists() and not rebuild and path.stat().st_mtime >= slide.stat().st_mtime:
            sizes[exp] = read_blockmap(path).bag_size
            continue
        if exp == "B":
            xs, ys = np.meshgrid(
                np.arange(100, SLIDE_W - 512 + 1, 256), np.arange(100, SLIDE_H - 512 + 1, 256)
            )
            coords, patch = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int32), 512
        else:
            coords, patch = grid_coords(32), PATCH
        scores = attention(coords, seed={"A": 0, "C": 1, "B": 2}[exp])
        write_bench_blockmap(path, SLIDE_ID, slide, coords, scores, patch)
        sizes[exp] = len(coords)
    return sizes


def viewer_args() -> list[str]:
    args = []
    for exp in ("A", "B", "C"):
        args += ["--results", str(RAW / exp)]
    return [*args, "--slides", str(BENCH_DIR), "--workers", "1", "--threads", "8"]


def agreement_times() -> dict[str, tuple[float, dict]]:
    from scoremap.agreement import agreement
    from scoremap.blockmap import blockmap_path, read_blockmap
    from scoremap.normalize import normalize_scores
    from scoremap.raster import ScoreSource

    bags = {}
    for exp in EXPERIMENTS:
        bm = read_blockmap(blockmap_path(RAW / exp, LABEL, SLIDE_ID))
        bags[exp] = ScoreSource(
            bm.l0_coords,
            normalize_scores(bm.attention.astype(np.float64), "percentile"),
            bm.l0_patch,
        )
    out = {}
    for a, b in (("A", "C"), ("A", "B")):
        t0 = time.perf_counter()
        figures = agreement(bags[a], bags[b])
        out[f"{a}-{b}"] = (time.perf_counter() - t0, figures)
    return out


def tile_times() -> tuple[float, float]:
    """(median difference tile, median plain tile) in ms, levels 8-16, warm."""
    from viewer.app import create_app
    from viewer.overlay import render_difference_tile, render_overlay_tile
    from viewer.params import OverlayParams
    from viewer.state import EXTENSION_KEY

    app = create_app(
        {"RESULTS_DIR": [str(RAW / e) for e in ("A", "B")], "SLIDES_DIR": str(BENCH_DIR)}
    )
    state = app.extensions[EXTENSION_KEY]
    with app.test_request_context():
        ra, rb = state.record(SLIDE_ID, "A"), state.record(SLIDE_ID, "B")
        geometry = state.geometry(ra)
        a, b = state.slide_scores(ra), state.slide_scores(rb)
        params = OverlayParams.from_query({})
        rng = np.random.default_rng(0)
        boxes = []
        for level in range(8, geometry.level_count):
            cols, rows = geometry.t_dimensions[level]
            for _ in range(6):
                boxes.append(
                    geometry.tile_box(level, int(rng.integers(0, cols)), int(rng.integers(0, rows)))
                )
        for box in boxes:  # warm: pyramids, ranks
            render_overlay_tile(a, geometry, box, params, a.resolve_class(None))
            render_difference_tile(a, b, geometry, box, "RdBu_r")
        plain, diff = [], []
        for box in boxes:
            t0 = time.perf_counter()
            render_overlay_tile(a, geometry, box, params, a.resolve_class(None))
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            render_difference_tile(a, b, geometry, box, "RdBu_r")
            diff.append(time.perf_counter() - t0)
    return statistics.median(diff) * 1e3, statistics.median(plain) * 1e3


def page_opens(runs: int) -> dict[str, list[float]]:
    """Cold opens in ms (navigation to every pane loaded): the comparison and A's slide page."""
    from playwright.sync_api import sync_playwright

    pages = {
        "compare": (
            "/slides/bag?exp=A,B",
            "window.milCompare && (window.milCompare.error || "
            "(window.milCompare.ready && window.milCompare.fullyLoaded()))",
        ),
        "slide": (
            "/slides/bag?exp=A",
            "window.milViewer && (window.milViewer.error || "
            "(window.milViewer.ready && window.milViewer.fullyLoaded()))",
        ),
    }
    out: dict[str, list[float]] = {name: [] for name in pages}
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            for _ in range(runs):
                for name, (path, done) in pages.items():
                    out[name].append(
                        cold_open(browser, viewer_args(), path, done, "performance.now()")
                    )
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-browser", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    slide = bench_slide()
    sizes = write_experiments(slide, args.rebuild)
    print("experiments:", ", ".join(f"{e} {n:,} patches" for e, n in sizes.items()))
    for pair, (seconds, figures) in agreement_times().items():
        print(
            f"agreement {pair}: {seconds:.2f} s cold, {figures['unit']} (n {figures['n']:,}), "
            f"rho {figures['spearman']:.3f}, top-10 Jaccard {figures['jaccard']['10']:.2f}"
        )
    diff_ms, plain_ms = tile_times()
    print(
        f"difference tile {diff_ms:.2f} ms vs plain overlay tile {plain_ms:.2f} ms "
        f"(ratio {diff_ms / plain_ms:.2f})"
    )
    if not args.skip_browser:
        opens = page_opens(args.runs)
        compare, single = statistics.median(opens["compare"]), statistics.median(opens["slide"])
        print(
            f"cold page open: comparison (slide + 2 heatmaps) {compare:.0f} ms vs slide page {single:.0f} ms "
            f"(ratio {compare / single:.2f}); runs {opens}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
