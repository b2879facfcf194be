#!/usr/bin/env python
"""Page load to first heatmap tile drawn, in Chromium, on the demo cohort (target: under 1 s).

    python bench/bench_first_tile.py [--runs 5] [--slide ID] [--port P]

Serves the demo cohort with run_viewer.py --demo (gunicorn, as a user runs it; build the demo
first with `make demo`, or `python -m demo.build` and `python create_heatmaps.py --config
data/demo/demo_config.yaml`), then opens each slide's viewer page in headless Chromium (Debian's,
launched as the tests launch it: tests/chromium.py), each time in a fresh browser context, so the
browser's cache is cold: HTML, CSS, the ES modules, OpenSeadragon, the slide metadata, both .dzi files and
the tiles are all fetched again. The figure is `performance.now()` (milliseconds since navigation
start) when OpenSeadragon raises 'tile-drawn' for the first tile of the heatmap TiledImage.

One load per slide is made first and not counted, so that the server's per-process caches (the
open slide, the blockmap's scores) are warm: the figure is what a user sees on every page load but
the very first after the server starts. That first figure is printed too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import urllib.request

from tests.chromium import CHROMIUM, launch_chromium
from viewer.background import ViewerStartError, start_viewer, stop_viewer

TARGET_MS = 1000.0
FIRST_TILE_JS = (
    "window.milViewer && (window.milViewer.error || "
    "(window.milViewer.overlay && window.milViewer.overlay.firstTileDrawnAt !== null))"
)


def one_load(browser, url: str) -> dict:
    """A cold page load (fresh context: empty cache); milliseconds since navigation start."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(url, wait_until="commit")
        page.wait_for_function(FIRST_TILE_JS, timeout=30_000, polling=10)
        timings = page.evaluate("""() => {
          const m = window.milViewer;
          if (m.error) return {error: m.error};
          const nav = performance.getEntriesByType('navigation')[0];
          return {first_tile: m.overlay.firstTileDrawnAt, metadata: m.timings.meta,
                  open: m.timings.open ?? null, html: nav ? nav.responseEnd : null,
                  dom: nav ? nav.domContentLoadedEventEnd : null};
        }""")
        if "error" in timings:
            sys.exit(f"the viewer reported an error on {url}: {timings['error']}")
        return timings
    finally:
        context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=5, help="cold loads per slide (median reported)"
    )
    parser.add_argument(
        "--slide", action="append", help="slide id (default: every readable demo slide)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port for the demo server (default: a free one)"
    )
    args = parser.parse_args(argv)
    if not CHROMIUM.is_file():
        sys.exit(
            f"{CHROMIUM} missing: install Debian's chromium "
            "(`apt-get install -y chromium`, or `make test-deps` as root)"
        )
    from playwright.sync_api import sync_playwright

    try:
        server, base = start_viewer(["--demo"], port=args.port)
    except ViewerStartError as exc:
        sys.exit(f"{exc}\n(build the demo first: make demo)")
    try:
        with urllib.request.urlopen(base + "/api/slides") as r:
            cohort = json.load(r)
        slides = args.slide or [s["id"] for s in cohort["slides"] if s["readable"]]
        if not slides:
            sys.exit("the demo cohort has no readable slide")
        medians = []
        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                for slide in slides:
                    url = f"{base}/slides/{urllib.request.quote(slide)}"
                    first = one_load(browser, url)  # warms the server's caches; not counted
                    runs = [one_load(browser, url) for _ in range(args.runs)]
                    figures = [r["first_tile"] for r in runs]
                    median = statistics.median(figures)
                    medians.append(median)
                    meta = statistics.median(r["metadata"] for r in runs)
                    print(
                        f"{slide}: first heatmap tile drawn {median:.0f} ms after navigation start "
                        f"(median of {args.runs} cold loads: {', '.join(f'{v:.0f}' for v in figures)}; "
                        f"metadata at {meta:.0f} ms; "
                        f"first load after server start {first['first_tile']:.0f} ms)"
                    )
            finally:
                browser.close()
    finally:
        stop_viewer(server)
    worst = max(medians)
    verdict = "PASS" if worst < TARGET_MS else "FAIL"
    print(
        f"page load -> first heatmap tile: {worst:.0f} ms (worst slide median) "
        f"vs target {TARGET_MS:.0f} ms: {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
