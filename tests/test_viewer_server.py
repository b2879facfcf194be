"""The viewer as deployed: gunicorn (run_viewer.py and the factory string), and no torch import."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scoremap.checkout import REPO_ROOT
from viewer import cli as run_viewer
from viewer.background import free_port, start_viewer, stop_viewer, wait_until_serving

TILE = "/slide/pyramid_files/13/5_4.jpeg"
OVERLAY = "/overlay/pyramid_files/13/5_4.png?cmap=viridis"


def fetch(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def check_serving(port: int) -> None:
    with ThreadPoolExecutor(4) as pool:  # parallel requests, as a browser makes them
        results = list(pool.map(lambda p: fetch(port, p), [TILE, OVERLAY] * 4))
    for status, headers, _body in results:
        assert status == 200
        assert headers["server"].startswith("gunicorn")
        assert headers["etag"] and "max-age" in headers["cache-control"]
    assert results[0][1]["content-type"] == "image/jpeg" and results[0][2][:2] == b"\xff\xd8"
    assert (
        results[1][1]["content-type"] == "image/png" and results[1][2][:8] == b"\x89PNG\r\n\x1a\n"
    )
    status, _, body = fetch(port, "/slide/pyramid_files/99/0_0.jpeg")
    assert status == 404 and json.loads(body)["status"] == 404


def test_run_viewer_serves_tiles_through_gunicorn(viewer_cohort):
    proc, base = start_viewer(
        ["--config", str(viewer_cohort.config), "--workers", "2", "--threads", "2"], timeout=40
    )
    port = urlsplit(base).port
    try:
        check_serving(port)
    finally:
        stop_viewer(proc)
    out = proc.stdout.read()
    assert "Starting gunicorn" in out and "Running on" not in out  # never Flask's dev server
    assert f"http://127.0.0.1:{port}/" in out


def test_gunicorn_factory_string(viewer_cohort):
    port = free_port()
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if not gunicorn.exists():
        pytest.skip("gunicorn script not beside the interpreter")
    factory = f"viewer.app:create_app({{'SCORING_CONFIG': {str(viewer_cohort.config)!r}}})"
    proc = subprocess.Popen(
        [
            str(gunicorn),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--no-control-socket",
            factory,
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_serving(proc, f"http://127.0.0.1:{port}", timeout=40, name="gunicorn")
        check_serving(port)
    finally:
        stop_viewer(proc)


def test_viewer_never_imports_torch(viewer_cohort):
    """Import the app, serve every kind of request; torch must stay out of sys.modules."""
    code = f"""
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("the viewer must not import torch")
sys.meta_path.insert(0, NoTorch())
from viewer.app import create_app
client = create_app({{"SCORING_CONFIG": {str(viewer_cohort.config)!r}}}).test_client()
for url in ["/", "/api/slides", "/api/slides/pyramid", "{TILE}", "{OVERLAY}", "{OVERLAY}&blur=1",
            "/api/slides/pyramid/topk?k=3", "/slides/pyramid/patch/0.jpeg", "/api/colorbar"]:
    assert client.get(url).status_code == 200, url
print(sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_run_viewer_arguments(tmp_path, capsys):
    args = run_viewer.parse_args(["--demo"])
    assert (args.host, args.port) == ("127.0.0.1", 5000)
    assert run_viewer.viewer_config(run_viewer.parse_args(["--results", "r", "--slides", "s"])) == {
        "RESULTS_DIR": "r",
        "SLIDES_DIR": "s",
    }
    assert run_viewer.bind_address("::1", 80) == "[::1]:80"
    for bad in (
        ["--results", "r"],
        ["--slides", "s", "--demo"],
        [],
        ["--demo", "--port", "0"],
        ["--demo", "--config", "x"],
    ):
        with pytest.raises(SystemExit) as exc:
            run_viewer.parse_args(bad)
        assert exc.value.code == 2
    assert run_viewer.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
