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

from scoremap.checkout import DATA_DIR, REPO_ROOT

BENCH_DIR = DATA_DIR / "bench"
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
