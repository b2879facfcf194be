"""Response headers every page, tile and answer carries, and the URL rules that keep Host out.

- `X-Content-Type-Options: nosniff`: a PNG tile is never run as a script, a JSON error never
  rendered as HTML.
- A Content-Security-Policy the pages satisfy: scripts and styles only from this server (ES
  modules under /static, OpenSeadragon under /vendor), images from here and `data:`/`blob:`
  URLs (OpenSeadragon's tiles fetched with XHR), no plugins, no framing (`frame-ancestors 'none'`,
  and `X-Frame-Options: DENY` for older browsers), forms and `<base>` pinned to this origin.
  Inline styles are allowed (OpenSeadragon writes them, the cohort table's probability bars use
  style attributes): they cannot run code. No 'unsafe-eval', no inline scripts.
- `Referrer-Policy: same-origin`: slide ids in URLs never leave for another site.

Werkzeug answers `//api//slides` with a redirect to the merged path built from the request's
Host header (an open redirect with a forged Host); the viewer turns slash merging off, so such
a path is a plain 404.
"""

from __future__ import annotations

from flask import Flask, Response

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def secure(app: Flask) -> None:
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response
