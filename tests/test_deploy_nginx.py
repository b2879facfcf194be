"""The README's deployment: Debian's nginx in front of gunicorn, with deploy/nginx-mil-viewer.conf
as shipped (only ports and paths filled in). Tiles, headers and revalidation pass through; tiles
are cached; and slow clients are nginx's business, not the viewer's."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import time
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO_ROOT, require_system_tool, slow_clients
from viewer.background import free_port, start_viewer, stop_viewer

RECIPE = REPO_ROOT / "deploy" / "nginx-mil-viewer.conf"
TILE = "/overlay/pyramid_files/13/5_4.png?cmap=viridis"


@pytest.fixture()
def nginx(tmp_path, viewer_cohort):
    binary = require_system_tool(
        "/usr/sbin/nginx", "the nginx deployment tests", "apt-get install -y nginx-light"
    )
    viewer, base = start_viewer(
        ["--config", str(viewer_cohort.config), "--workers", "1", "--threads", "4"], quiet=True
    )
    port = free_port()
    site = RECIPE.read_text()
    site = site.replace("127.0.0.1:8000", f"127.0.0.1:{urlsplit(base).port}")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    site = site.replace("/var/cache/nginx/mil_viewer", str(tmp_path / "cache"))
    temp = tmp_path / "temp"
    temp.mkdir()
    conf = tmp_path / "nginx.conf"
    user = (
        "user root;\n" if os.geteuid() == 0 else ""
    )  # workers may then write the test's own folders
    conf.write_text(f"""daemon off;
{user}pid {tmp_path / "nginx.pid"};
error_log {tmp_path / "error.log"} warn;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy; fastcgi_temp_path {temp}/fcgi;
    uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
{site}
}}
""")
    check = subprocess.run(
        [str(binary), "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [str(binary), "-c", str(conf), "-p", str(tmp_path)], stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        stop_viewer(viewer)


def get(
    port: int, path: str, headers: dict | None = None, timeout: float = 10
) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_pages_tiles_and_revalidation_pass_through_and_tiles_are_cached(nginx):
    status, headers, body = get(nginx, "/api/slides")
    assert status == 200 and b'"pyramid"' in body
    assert (
        headers["x-content-type-options"] == "nosniff"
        and "frame-ancestors" in headers["content-security-policy"]
    )
    status, first, png = get(nginx, TILE)
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n" and first["x-cache-status"] == "MISS"
    status, again, png2 = get(nginx, TILE)
    assert status == 200 and again["x-cache-status"] == "HIT" and png2 == png
    etag = first["etag"]
    assert get(nginx, TILE, {"If-None-Match": etag})[0] == 304
    assert get(nginx, TILE, {"If-None-Match": f"W/{etag}"})[0] == 304
    status, _, body = get(nginx, "/slide/pyramid_files/99/0_0.jpeg")
    assert status == 404 and json.loads(body)["status"] == 404


def test_a_hundred_slow_clients_do_not_reach_the_viewer(nginx):
    """gunicorn here has 4 threads: 100 trickling clients straight at it would starve it."""
    with slow_clients(nginx, 100):
        for path in [
            "/api/slides",
            TILE,
            "/slides/pyramid",
            "/slide/pyramid_files/13/5_4.jpeg",
        ] * 3:
            assert get(nginx, path, timeout=5)[0] == 200, path
