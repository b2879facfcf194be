"""Benchmark: overlay tiles vs slide tiles, in-process and over HTTP through gunicorn.

    .venv/bin/python bench/bench_tiles.py [--tiles-per-level 100] [--requests 1600] [--workers N]

Slide: the 40000x30000 pyramidal Aperio-style TIFF of real H&E tissue that bench_static.py uses
(demo.pyramid from the CMU-1 scan; built once, cached under data/bench/). Patches: a lattice of
256-px level-0 patches over the tissue (demo.patches' tissue mask), its step chosen to give
~18,000 patches; scores random; one blockmap written with scoremap.blockmap under
data/bench/viewer_results/ (rebuilt when the slide is newer).

Tile set: up to --tiles-per-level random tiles (fixed seed) of each of the 8 deepest Deep Zoom
levels, the same addresses for slide and overlay tiles.

In-process: one pass over the tile set, timing exactly what a request renders: for slide tiles
DeepZoomGenerator.get_tile + ICC + JPEG encode (viewer.slides.OpenedSlide, the server's path,
with an OpenSlideCache as the server has); for overlay tiles viewer.overlay.render_overlay_tile
(percentile, jet). Target: overlay >= 3x faster per tile.

HTTP: run_viewer.py (gunicorn, gthread) on a free 127.0.0.1 port; 8 client threads, each with
its own keep-alive http.client connection, fetch --requests tiles from the tile set (cycled,
shuffled), first slide tiles, then overlay tiles; tiles/s = requests / wall time. No
If-None-Match: every request renders. Target: overlay rate >= 2x the slide rate.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import (
    BENCH_DIR,
    LABEL,
    N_PATCHES,
    PATCH,
    SLIDE_H,
    SLIDE_ID,
    SLIDE_W,
    bench_slide,
    http_rate,
    write_bench_blockmap,
)
from scoremap.checkout import REPO_ROOT
from viewer.background import ViewerStartError, start_viewer, stop_viewer

RESULTS_DIR = BENCH_DIR / "viewer_results" / "BENCH"
IN_PROCESS_TARGET, HTTP_TARGET = 3.0, 2.0


def bench_blockmap(slide: Path, rebuild: bool = False) -> Path:
    """~18,000 tissue patches with random scores, as a blockmap the viewer serves."""
    import numpy as np

    from demo.patches import patch_grid, tissue_mask
    from scoremap.blockmap import blockmap_path

    path = blockmap_path(RESULTS_DIR, LABEL, SLIDE_ID)
    if path.exists() and not rebuild and path.stat().st_mtime >= slide.stat().st_mtime:
        return path
    mask = tissue_mask(slide)
    area = mask.mask.mean() * SLIDE_W * SLIDE_H
    step = max(32, round((area / N_PATCHES) ** 0.5))
    coords = patch_grid(slide, PATCH, step, mask=mask)
    # the mask's area is an estimate: correct the step once from the count it gave
    step = max(32, round(step * (len(coords) / N_PATCHES) ** 0.5))
    coords = patch_grid(slide, PATCH, step, mask=mask).astype(np.int32)
    rng = np.random.default_rng(0)
    scores = rng.normal(size=len(coords)).astype(np.float32)
    write_bench_blockmap(path, SLIDE_ID, slide, coords, scores, PATCH, class_names=("0", "1"))
    print(f"wrote {path.relative_to(REPO_ROOT)}: {len(coords)} patches, step {step}", flush=True)
    return path


def tile_set(
    geometry, per_level: int, levels: int = 8, seed: int = 0
) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)
    tiles = []
    for level in range(max(0, geometry.level_count - levels), geometry.level_count):
        cols, rows = geometry.t_dimensions[level]
        picks = rng.sample(range(cols * rows), min(per_level, cols * rows))
        tiles.extend((level, i % cols, i // cols) for i in picks)
    return tiles


def in_process(tiles: list[tuple[int, int, int]]) -> tuple[float, float, dict]:
    """Mean ms/tile for slide and overlay tiles over the same tile set, and per-level figures."""
    from viewer.app import create_app
    from viewer.overlay import render_overlay_tile
    from viewer.params import OverlayParams
    from viewer.slides import encode_jpeg
    from viewer.state import EXTENSION_KEY

    app = create_app({"RESULTS_DIR": str(RESULTS_DIR), "SLIDES_DIR": str(BENCH_DIR)})
    state = app.extensions[EXTENSION_KEY]
    record = state.record(SLIDE_ID)
    geometry = state.geometry(record)
    opened = state.opened(record)
    scores = state.slide_scores(record)
    params = OverlayParams("jet", None, "percentile", 0.0, False)
    quality = state.settings.jpeg_quality
    scores.normalized(
        scores.blockmap.pred, "percentile"
    )  # cached per (slide, class, norm) by the server

    def slide_tile(t):
        return encode_jpeg(opened.tile(*t), quality)

    def overlay_tile(t):
        return render_overlay_tile(
            scores, geometry, geometry.tile_box(*t), params, scores.blockmap.pred
        )

    per_level: dict[int, list[float]] = {}
    totals = []
    for name, render in (("slide", slide_tile), ("overlay", overlay_tile)):
        for t in tiles[:20]:  # warm imports and code paths (not the tiles measured below)
            render(t)
        total = 0.0
        for t in tiles:
            t0 = time.perf_counter()
            render(t)
            dt = time.perf_counter() - t0
            total += dt
            per_level.setdefault(t[0], [0.0, 0.0, 0])
            per_level[t[0]][0 if name == "slide" else 1] += dt
        totals.append(total / len(tiles) * 1000)
    for level in per_level:
        per_level[level][2] = sum(1 for t in tiles if t[0] == level)
    return totals[0], totals[1], per_level


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles-per-level", type=int, default=100)
    parser.add_argument(
        "--requests", type=int, default=1600, help="HTTP requests per tile kind (bounded)"
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="gunicorn processes"
    )
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn process")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the blockmap")
    parser.add_argument(
        "--rebuild-slide",
        action="store_true",
        help="rebuild the slide too (shared with bench_static.py)",
    )
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args(argv)

    slide = bench_slide(args.rebuild_slide)
    bench_blockmap(slide, args.rebuild or args.rebuild_slide)
    from viewer.slides import probe_slide

    geometry = probe_slide(slide).geometry(254, 1, True)
    tiles = tile_set(geometry, args.tiles_per_level)
    print(
        f"slide {SLIDE_W}x{SLIDE_H}, {geometry.level_count} Deep Zoom levels; {len(tiles)} tiles from the "
        f"{min(8, geometry.level_count)} deepest levels; CPUs: {os.cpu_count()}",
        flush=True,
    )

    slide_ms, overlay_ms, per_level = in_process(tiles)
    print("\nin-process, ms/tile (slide = get_tile + JPEG, overlay = score grid + palette PNG)")
    print(f"  {'level':>5} {'tiles':>5} {'slide':>8} {'overlay':>8}")
    for level in sorted(per_level):
        s_tot, o_tot, n = per_level[level]
        print(f"  {level:>5} {n:>5} {s_tot / n * 1000:>8.3f} {o_tot / n * 1000:>8.3f}")
    ratio = slide_ms / overlay_ms
    print(
        f"  all: slide {slide_ms:.3f} ms/tile, overlay {overlay_ms:.3f} ms/tile, overlay {ratio:.1f}x faster "
        f"(target >= {IN_PROCESS_TARGET:.0f}x): {verdict(ratio >= IN_PROCESS_TARGET)}",
        flush=True,
    )
    ok = ratio >= IN_PROCESS_TARGET

    if not args.skip_http:
        rng = random.Random(1)
        order = [tiles[i % len(tiles)] for i in range(args.requests)]
        rng.shuffle(order)
        slide_urls = [f"/slide/{SLIDE_ID}_files/{lv}/{c}_{r}.jpeg" for lv, c, r in order]
        overlay_urls = [f"/overlay/{SLIDE_ID}_files/{lv}/{c}_{r}.png" for lv, c, r in order]
        try:
            proc, base = start_viewer(
                [
                    "--results",
                    str(RESULTS_DIR),
                    "--slides",
                    str(BENCH_DIR),
                    "--host",
                    "127.0.0.1",
                    "--workers",
                    str(args.workers),
                    "--threads",
                    str(args.threads),
                ],
                quiet=True,
            )
        except ViewerStartError as exc:
            raise SystemExit(str(exc)) from exc
        port = urlsplit(base).port
        try:
            http_rate(port, slide_urls[:64] + overlay_urls[:64])  # warm the workers
            slide_rate = http_rate(port, slide_urls)
            overlay_rate = http_rate(port, overlay_urls)
        finally:
            stop_viewer(proc)
        http_ratio = overlay_rate / slide_rate
        print(
            f"\nHTTP, gunicorn ({args.workers} workers x {args.threads} threads), 8 clients, "
            f"{args.requests} requests each kind"
        )
        print(
            f"  slide {slide_rate:.0f} tiles/s, overlay {overlay_rate:.0f} tiles/s, ratio {http_ratio:.1f}x "
            f"(target >= {HTTP_TARGET:.0f}x): {verdict(http_ratio >= HTTP_TARGET)}"
        )
        ok = ok and http_ratio >= HTTP_TARGET
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
