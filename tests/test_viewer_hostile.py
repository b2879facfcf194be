"""Every hostile or malformed request gets a 4xx with a short message, never a 500 or a trace."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest

from viewer.background import start_viewer, stop_viewer

T = "/slide/pyramid_files"
OV = "/overlay/pyramid_files"
GOOD_OVERLAY = f"{OV}/13/5_4.png"

HOSTILE: list[tuple[str, int]] = [
    # unknown slides
    ("/slide/nope.dzi", 404),
    ("/overlay/nope.dzi", 404),
    ("/slide/nope_files/0/0_0.jpeg", 404),
    ("/overlay/nope_files/0/0_0.png", 404),
    ("/api/slides/nope", 404),
    ("/api/slides/nope/topk", 404),
    ("/api/slides/nope/patch?x=1&y=1", 404),
    ("/slides/nope/thumbnail.jpeg", 404),
    ("/slides/nope/patch/0.jpeg", 404),
    ("/slides/nope", 404),
    ("/slide/" + "a" * 5000 + ".dzi", 404),
    # level / column / row out of range
    (f"{T}/14/0_0.jpeg", 404),
    (f"{T}/13/999_0.jpeg", 404),
    (f"{T}/13/0_999.jpeg", 404),
    (f"{T}/0/1_0.jpeg", 404),
    (f"{OV}/14/0_0.png", 404),
    (f"{OV}/13/24_0.png", 404),
    (f"{OV}/13/0_18.png", 404),
    # not numbers
    (f"{T}/abc/0_0.jpeg", 400),
    (f"{T}/13/x_0.jpeg", 400),
    (f"{T}/13/0_y.jpeg", 400),
    (f"{T}/-1/0_0.jpeg", 400),
    (f"{T}/13/-1_0.jpeg", 400),
    (f"{T}/1e1/0_0.jpeg", 400),
    (f"{T}/%2B1/0_0.jpeg", 400),
    (f"{T}/%201/0_0.jpeg", 400),
    (f"{T}/%D9%A3/0_0.jpeg", 400),
    (f"{T}/1_0/0_0.jpeg", 400),
    (f"{T}/99999999999999999999/0_0.jpeg", 400),
    (f"{T}/13/0.5_0.jpeg", 400),
    (f"{OV}/13/a_b.png", 400),
    (f"{T}/13/5_4.png", 404),
    (f"{OV}/13/5_4.jpeg", 404),
    # overlay query parameters
    (f"{GOOD_OVERLAY}?cmap=notacolormap", 400),
    (f"{GOOD_OVERLAY}?cmap=..%2F..%2Fetc%2Fpasswd", 400),
    (f"{GOOD_OVERLAY}?class=abc", 400),
    (f"{GOOD_OVERLAY}?class=-1", 400),
    (f"{GOOD_OVERLAY}?class=2", 400),
    (f"{GOOD_OVERLAY}?class=0", 400),  # abmil: no attention for the other class
    (f"{GOOD_OVERLAY}?class=1.5", 400),
    (f"{GOOD_OVERLAY}?class=99999999999", 400),
    (f"{GOOD_OVERLAY}?norm=zscore", 400),
    (f"{GOOD_OVERLAY}?threshold=abc", 400),
    (f"{GOOD_OVERLAY}?threshold=1.5", 400),
    (f"{GOOD_OVERLAY}?threshold=-0.1", 400),
    (f"{GOOD_OVERLAY}?threshold=nan", 400),
    (f"{GOOD_OVERLAY}?threshold=inf", 400),
    (f"{GOOD_OVERLAY}?threshold=1e400", 400),
    (f"{GOOD_OVERLAY}?threshold=0x1", 400),
    (f"{GOOD_OVERLAY}?blur=maybe", 400),
    (f"{GOOD_OVERLAY}?blur=-1", 400),
    # API numbers
    ("/api/slides/pyramid/topk?k=abc", 400),
    ("/api/slides/pyramid/topk?k=0", 400),
    ("/api/slides/pyramid/topk?k=-5", 400),
    ("/api/slides/pyramid/topk?k=1e3", 400),
    ("/api/slides/pyramid/topk?k=100000", 400),
    ("/api/slides/pyramid/topk?order=sideways", 400),
    ("/api/slides/pyramid/topk?class=9", 400),
    ("/api/slides/pyramid/patch", 400),
    ("/api/slides/pyramid/patch?x=1", 400),
    ("/api/slides/pyramid/patch?x=abc&y=1", 400),
    ("/api/slides/pyramid/patch?x=nan&y=1", 400),
    ("/api/slides/pyramid/patch?x=inf&y=1", 400),
    ("/api/slides/pyramid/patch?x=1e400&y=1", 400),
    ("/api/slides/pyramid/patch?x=0&y=0", 404),
    ("/slides/pyramid/patch/abc.jpeg", 400),
    ("/slides/pyramid/patch/-1.jpeg", 400),
    ("/slides/pyramid/patch/99999.jpeg", 404),
    ("/slides/pyramid/thumbnail.jpeg?size=abc", 400),
    ("/slides/pyramid/thumbnail.jpeg?size=100000", 400),
    ("/slides/pyramid/thumbnail.jpeg?size=0", 400),
    ("/api/colorbar?cmap=nope", 400),
    ("/api/colorbar?width=abc", 400),
    ("/api/colorbar?width=0", 400),
    ("/api/colorbar?height=99999", 400),
    # path tricks
    ("/slide/..%2F..%2Fetc%2Fpasswd.dzi", 404),
    ("/slide/%2Fetc%2Fpasswd.dzi", 404),
    ("/slide/../../etc/passwd", 404),
    ("/slide//etc/passwd.dzi", 404),
    ("/slide/%2e%2e.dzi", 404),
    ("/slide/..%2Fslides%2Fpyramid.dzi", 404),
    ("/slides/..%2F..%2Fetc%2Fpasswd/thumbnail.jpeg", 404),
    ("/slide/pyramid%2F..%2F..%2Fetc_files/0/0_0.jpeg", 404),
    ("/slide/C:%5Cwindows%5Cwin.ini.dzi", 404),
    ("/slide/%00.dzi", 404),
    ("/overlay/..%5C..%5Cetc%5Cpasswd.dzi", 404),
    ("/static/../run_viewer.py", 404),
    ("/slide/%252e%252e%252fetc.dzi", 404),
    # slides outside the roots (symlink, absolute path), refused files, missing files
    ("/slide/escape.dzi", 403),
    ("/slide/escape_files/0/0_0.jpeg", 403),
    ("/overlay/escape.dzi", 403),
    ("/overlay/escape_files/0/0_0.png", 403),
    ("/slides/escape/thumbnail.jpeg", 403),
    ("/slides/escape/patch/0.jpeg", 403),
    ("/api/slides/escape", 403),
    ("/slide/outside.dzi", 403),
    ("/slide/outside_files/12/0_0.jpeg", 403),
    ("/slides/outside/thumbnail.jpeg", 403),
    ("/slide/not-a-slide.dzi", 422),
    ("/slide/not-a-slide_files/0/0_0.jpeg", 422),
    ("/slides/not-a-slide/thumbnail.jpeg", 422),
    ("/slide/missing.dzi", 404),
    ("/slides/missing/patch/0.jpeg", 404),
]


@pytest.mark.parametrize("url,status", HOSTILE, ids=[u[:80] for u, _ in HOSTILE])
def test_hostile_request_gets_short_4xx(client, url, status):
    r = client.get(url)
    assert r.status_code == status, (url, r.status_code, r.get_data(as_text=True)[:300])
    text = r.get_data(as_text=True)
    assert r.mimetype in ("application/json", "text/plain")
    assert len(text) < 1000 and "Traceback" not in text and 'File "' not in text
    if r.mimetype == "application/json":
        assert r.get_json()["status"] == status and r.get_json()["error"]


def test_wrong_method_is_4xx(client):
    r = client.post("/slide/pyramid_files/13/5_4.jpeg")
    assert r.status_code == 405 and r.get_json()["status"] == 405
    assert client.delete("/api/slides").status_code == 405


def test_secret_outside_the_roots_is_never_read(client, viewer_cohort):
    """The symlinked and absolute out-of-root slides are refused before any open."""
    api = client.get("/api/slides").get_json()
    entries = {s["id"]: s for s in api["slides"]}
    for slide_id in ("escape", "outside"):
        assert entries[slide_id]["readable"] is False
        assert entries[slide_id]["thumbnail_url"] is None


def test_weak_etags_revalidate(client):
    """RFC 9110: If-None-Match uses weak comparison; caches and CDNs send W/"..." back."""
    for url in (
        "/overlay/pyramid_files/13/5_4.png?cmap=viridis",
        "/slide/pyramid_files/13/5_4.jpeg",
        "/slides/pyramid/thumbnail.jpeg",
    ):
        etag = client.get(url).headers["ETag"].strip('"')
        for sent in (f'W/"{etag}"', f'"other", W/"{etag}"', f'"{etag}"'):
            assert client.get(url, headers={"If-None-Match": sent}).status_code == 304, (url, sent)
        assert client.get(url, headers={"If-None-Match": 'W/"stale"'}).status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/slides/pyramid",
        "/api/slides",
        "/api/slides/nope",
        "/overlay/pyramid_files/13/5_4.png",
        "/slide/pyramid_files/99/0_0.jpeg",
        "/static/js/cohort.js",
    ],
)
def test_every_answer_carries_the_security_headers(client, url):
    r = client.get(url)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Referrer-Policy"] == "same-origin"
    csp = r.headers["Content-Security-Policy"]
    assert (
        "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-eval" not in csp
    )


def test_doubled_slashes_with_a_forged_host_are_not_redirected(viewer_cohort):
    """Over a real socket (the test client parses '//api' as a host): Werkzeug's slash merging would
    answer 308 with a Location built from the forged Host header."""
    proc, base = start_viewer(["--config", str(viewer_cohort.config), "--workers", "1"], quiet=True)
    try:
        for path in (
            "//api//slides",
            "//slides//pyramid",
            "/api//slides/pyramid",
            "//evil.example/api/slides",
        ):
            conn = http.client.HTTPConnection("127.0.0.1", urlsplit(base).port, timeout=20)
            conn.putrequest("GET", path, skip_host=True)
            conn.putheader("Host", "evil.example")
            conn.endheaders()
            r = conn.getresponse()
            body = r.read().decode()
            conn.close()
            assert r.status == 404 and r.getheader("Location") is None, (path, r.status)
            assert "evil.example" not in body
    finally:
        stop_viewer(proc)
