"""The viewer served (gunicorn, as `mil-viewer` serves it) in a child process: for scripts, tests, benches.

Standard library only (the child imports the viewer, this module does not):

    proc, base = start_viewer(["--config", "config.yaml", "--workers", "2"])
    try:
        ...  # requests to base + "/api/slides", ...
    finally:
        stop_viewer(proc)
"""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from scoremap.checkout import REPO_ROOT


class ViewerStartError(RuntimeError):
    """The server exited, or did not answer /api/slides in time; the message holds its output."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _output(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """What the (stopped) server wrote, where it was captured; bounded in time."""
    if proc.stdout is None:
        return ""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        return "(its output could not be read)"
    return out if isinstance(out, str) else (out or b"").decode(errors="replace")


def _answers(base: str) -> bool:
    """Whether GET {base}/api/slides answers 200 (http.client: no proxy settings apply)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=2)
    try:
        conn.request("GET", "/api/slides")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def wait_until_serving(
    proc: subprocess.Popen, base: str, timeout: float = 60.0, name: str = "mil-viewer"
) -> None:
    """Until GET {base}/api/slides answers 200. Where the server exits first, or does not answer
    within `timeout` seconds, it is stopped and ViewerStartError raised with its output."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ViewerStartError(f"{name} exited with {proc.returncode}:\n{_output(proc)}")
        try:
            if _answers(base):
                return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            stop_viewer(proc)
            raise ViewerStartError(
                f"{name} did not start serving in {timeout:g} s:\n{_output(proc)}"
            )
        time.sleep(0.2)


def start_viewer(
    args: list[str],
    *,
    cwd: str | Path = REPO_ROOT,
    timeout: float = 60,
    port: int = 0,
    quiet: bool = False,
) -> tuple[subprocess.Popen, str]:
    """`mil-viewer ARGS --port PORT` (a free 127.0.0.1 port unless `port` is given), once it
    answers /api/slides: the process and its base URL. Its stdout and stderr go to one text pipe
    (proc.stdout), or nowhere with `quiet` (for long runs: nothing reads the pipe while it serves).
    Raises ViewerStartError, with the server's output, where it does not come up."""
    port = port or free_port()
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    proc = subprocess.Popen(
        [sys.executable, "-m", "viewer", *args, "--port", str(port)],
        cwd=cwd,
        stdout=out,
        stderr=subprocess.DEVNULL if quiet else subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(proc, base, timeout)
    return proc, base


def stop_viewer(proc: subprocess.Popen) -> None:
    """SIGTERM (gunicorn's graceful stop), then kill where it has not exited within 15 s.
    Its output pipe, if any, is left to the caller (readable to the end)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
