"""What the benches share: the cached 40000x30000 benchmark slide, an HTTP load client, a cold
page open (the browser is tests/chromium.py's, as the tests launch it).

bench_static, bench_tiles and bench_scale open the same file under data/bench/ (built once, from
real CMU-1 tissue by demo.tissue + demo.pyramid) and place their patches on it.
"""

from __future__ import annotations

import http.client
import queue
import threading
import time
from pathlib import Path

import numpy as np

from scoremap.checkout import DATA_DIR, REPO_ROOT

BENCH_DIR = DATA_DIR / "bench"
SLIDE_W, SLIDE_H = 40_000, 30_000
SLIDE_ID = f"bench_{SLIDE_W}x{SLIDE_H}"
PATCH = 256
N_PATCHES = 18_000
LABEL = "bench"  # the results folder of the benches' blockmaps


def write_bench_blockmap(
    path: Path,
    slide_id: str,
    slide: Path,
    l0_coords: np.ndarray,
    attention: np.ndarray,
    l0_patch: int = PATCH,
    model_type: str = "abmil",
    class_names: tuple[str, str] = ("normal", "tumor"),
) -> None:
    """A blockmap as create_heatmaps.py writes it for a two-class bag predicted as its second
    class (p = 0.7): the benches measure serving, not scoring, so the prediction is fixed."""
    from scoremap.blockmap import Blockmap, write_blockmap

    write_blockmap(
        path,
        Blockmap(
            slide_id=slide_id,
            slide_path=str(slide.resolve()),
            label=LABEL,
            model_type=model_type,
            class_names=list(class_names),
            pred=1,
            probs=np.array([0.3, 0.7]),
            logits=np.array([-0.4, 0.4]),
            l0_patch=l0_patch,
            attention=attention,
            l0_coords=l0_coords,
        ),
    )


def bench_slide(rebuild: bool = False) -> Path:
    """The cached 40000x30000 benchmark slide, built from real tissue when absent."""
    from demo.cmu import cmu_small_region
    from demo.pyramid import write_pyramid
    from demo.tissue import tissue_source

    path = BENCH_DIR / f"{SLIDE_ID}.svs"
    if rebuild or not path.exists():
        print(f"building {path.relative_to(REPO_ROOT)} ...", flush=True)
        t0 = time.perf_counter()
        write_pyramid(
            path,
            SLIDE_W,
            SLIDE_H,
            tissue_source(cmu_small_region()),
            tile=256,
            quality=75,
            mpp=0.5,
            seed=0,
        )
        print(f"  built in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def http_rate(port: int, urls: list[str], clients: int = 8) -> float:
    """Requests per second for `urls` fetched by `clients` threads over keep-alive connections;
    SystemExit naming a failed request (a benchmark of errors is no benchmark)."""
    work: queue.Queue[str] = queue.Queue()
    for url in urls:
        work.put(url)
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                try:
                    url = work.get_nowait()
                except queue.Empty:
                    return
                conn.request("GET", url)
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(f"{url}: {r.status}")
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return len(urls) / wall


def cold_open(browser, viewer_args: list[str], path: str, done_js: str, value_js: str) -> float:
    """One cold page load: a fresh viewer (nothing loaded) and a fresh browser context; navigates to
    `path`, waits until `done_js` holds, and returns `value_js` (a time in ms since navigation).
    `done_js` should also end on the page's error hook, which this raises as SystemExit."""
    from viewer.background import start_viewer, stop_viewer

    proc, base = start_viewer(viewer_args, quiet=True)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(base + path, wait_until="commit")
        page.wait_for_function(done_js, timeout=120_000, polling=20)
        error = page.evaluate("(window.milViewer || window.milCompare || {}).error")
        if error:
            raise SystemExit(f"{path}: the page reported {error}")
        return float(page.evaluate(value_js))
    finally:
        context.close()
        stop_viewer(proc)
