#!/usr/bin/env python
"""Soak: 32 clients for 5 minutes against the viewer as users run it; errors, latency, memory.

    python -m bench.bench_soak [--minutes 5] [--clients 32] [--workers 2]

Serves bench_scale's cohort (one 40000x30000 slide with an 18,252- and a 1,155,990-patch bag;
built on first use) with mil-viewer (gunicorn, default threads). Each client loops over a random
mix of what a viewer page asks: slide and overlay tiles at random levels and positions (random
colormap, class, normalisation, threshold, blur), slide metadata, top-k lists, patch lookups,
patch images, thumbnails, the cohort and the pages, plus hostile requests (bad levels, unknown
slides, malformed numbers) that must be 4xx. Reported: errors (5xx, wrong 4xx/2xx, timeouts,
connection failures), p50/p99 latency per route, and every worker's RSS every 10 s (it must stay
flat once the caches are full: they are bounded in bytes).
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import sys
import threading
import time
from collections import defaultdict
from urllib.parse import urlsplit

from bench.bench_scale import BAGS, viewer_args, vm_hwm_mb, worker_pids, write_bags
from bench.common import SLIDE_H, SLIDE_W, bench_slide
from viewer.background import start_viewer, stop_viewer

LEVELS = 17
CMAPS = ["jet", "viridis", "coolwarm", "magma", "hot_r"]


def vm_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def request_mix(rng: random.Random) -> tuple[str, str, int]:
    """(route name, path, expected status class: 2 or 4)."""
    sid = rng.choice(list(BAGS))
    level = rng.choice([rng.randrange(LEVELS), LEVELS - 1, LEVELS - 2, LEVELS - 3])
    d = 2 ** (LEVELS - 1 - level)
    col = rng.randrange(max(1, -(-SLIDE_W // (254 * d))))
    row = rng.randrange(max(1, -(-SLIDE_H // (254 * d))))
    kind = rng.random()
    if kind < 0.35:
        q = (
            f"cmap={rng.choice(CMAPS)}&norm={rng.choice(['percentile', 'raw'])}"
            f"&threshold={rng.choice([0, 0, 0.5, 0.9])}&blur={rng.choice([0, 0, 0, 1])}"
        )
        return "overlay tile", f"/overlay/{sid}_files/{level}/{col}_{row}.png?{q}", 2
    if kind < 0.60:
        return "slide tile", f"/slide/{sid}_files/{level}/{col}_{row}.jpeg", 2
    if kind < 0.66:
        return "metadata", f"/api/slides/{sid}", 2
    if kind < 0.71:
        return (
            "top-k",
            f"/api/slides/{sid}/topk?k={rng.choice([10, 50])}&order={rng.choice(['top', 'bottom'])}",
            2,
        )
    if kind < 0.78:
        x, y = rng.randrange(200, SLIDE_W - 200), rng.randrange(200, SLIDE_H - 200)
        return "patch lookup", f"/api/slides/{sid}/patch?x={x}&y={y}", 2
    if kind < 0.83:
        return "patch image", f"/slides/{sid}/patch/{rng.randrange(18252)}.jpeg", 2
    if kind < 0.86:
        return "thumbnail", f"/slides/{sid}/thumbnail.jpeg?size={rng.choice([96, 256])}", 2
    if kind < 0.90:
        return "pages", rng.choice(["/", f"/slides/{sid}", "/api/slides"]), 2
    bad = rng.choice(
        [
            f"/overlay/{sid}_files/99/0_0.png",
            "/slide/nope_files/3/0_0.jpeg",
            f"/overlay/{sid}_files/5/a_b.png",
            f"/api/slides/{sid}/patch?x=nan&y=1",
            f"/overlay/{sid}_files/3/0_0.png?cmap=no_such_map",
            f"/api/slides/{sid}/topk?k=-4",
            "/slide/..%2F..%2Fetc%2Fpasswd.dzi",
            f"/slides/{sid}/patch/99999999.jpeg",
        ]
    )
    return "hostile", bad, 4


def client(port: int, seed: int, until: float, latencies, errors, lock) -> None:
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < until:
        route, path, expected = request_mix(rng)
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            with lock:
                errors.append(f"{route} {path}: {type(exc).__name__}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        dt = time.perf_counter() - t0
        with lock:
            latencies[route].append(dt)
            if status >= 500 or status // 100 != expected:
                errors.append(f"{route} {path}: {status}")
    conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    write_bags(bench_slide(), rebuild=False)
    proc, base = start_viewer(viewer_args(workers=args.workers, threads=32), quiet=True)
    port = urlsplit(base).port
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    lock = threading.Lock()
    samples: list[tuple[float, list[float]]] = []
    start = time.monotonic()
    until = start + args.minutes * 60
    threads = [
        threading.Thread(target=client, args=(port, i, until, latencies, errors, lock), daemon=True)
        for i in range(args.clients)
    ]
    try:
        for th in threads:
            th.start()
        while time.monotonic() < until:
            samples.append(
                (time.monotonic() - start, [vm_rss_mb(pid) for pid in worker_pids(proc.pid)])
            )
            time.sleep(10)
        for th in threads:
            th.join(120)
        peaks = [vm_hwm_mb(pid) for pid in worker_pids(proc.pid)]
    finally:
        stop_viewer(proc)
    total = sum(len(v) for v in latencies.values())
    print(
        f"{args.clients} clients for {args.minutes:g} min "
        f"against {args.workers} gunicorn workers x 32 threads: "
        f"{total:,} requests ({total / (args.minutes * 60):.0f}/s), errors: {len(errors)}"
    )
    for e in errors[:10]:
        print("  ", e)
    print(f"\n  {'route':<14} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for route in sorted(latencies):
        values = sorted(latencies[route])
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
        print(
            f"  {route:<14} {len(values):>9,} {statistics.median(values) * 1e3:>8.1f} {p99 * 1e3:>8.1f}"
        )
    print("\n  worker RSS (MB) every 10 s:")
    for t, rss in samples:
        print(f"    {t:5.0f} s  " + "  ".join(f"{v:6.0f}" for v in rss))
    half = [rss for t, rss in samples if t >= args.minutes * 30]
    if half:
        growth = max(max(r) for r in half) - min(max(r) for r in half)
        print(
            f"  second half: the largest worker moved within {growth:.0f} MB; peaks (VmHWM) "
            + ", ".join(f"{p:.0f}" for p in peaks)
            + " MB"
        )
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
