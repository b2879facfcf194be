"""ETags and Cache-Control for tiles and images, checked before any pixel is rendered.

A tile's bytes are a pure function of the files it comes from (slide or blockmap: path, size,
modification time), its address and its rendering parameters, so the ETag is a hash of exactly
those. A revalidating browser or CDN whose If-None-Match matches gets a 304 without the tile
being rendered; a rescored blockmap changes its mtime and so every overlay ETag.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from flask import Response, request

ETAG_VERSION = "1"  # bump when tile rendering changes, to invalidate caches


def file_stamp(path: Path | None) -> tuple:
    """Identity of a file's content as far as the OS tells cheaply."""
    if path is None:
        return ()
    try:
        st = os.stat(path)
    except OSError:
        return (str(path),)
    return (str(path), st.st_size, st.st_mtime_ns)


def make_etag(*parts: object) -> str:
    return hashlib.sha1(repr((ETAG_VERSION, *parts)).encode("utf-8")).hexdigest()[:24]


def cache_control(max_age: int) -> str:
    return f"public, max-age={int(max_age)}"


def not_modified(etag: str, max_age: int) -> Response | None:
    """A 304 when the client already holds this ETag, else None (render the body)."""
    # If-None-Match compares weakly (RFC 9110 13.1.2): W/"x" matches "x", as caches and CDNs send it
    if request.if_none_match and request.if_none_match.contains_weak(etag):
        response = Response(status=304)
        response.set_etag(etag)
        response.headers["Cache-Control"] = cache_control(max_age)
        return response
    return None


def cached_body(body: bytes, mimetype: str, etag: str, max_age: int) -> Response:
    response = Response(body, mimetype=mimetype)
    response.set_etag(etag)
    response.headers["Cache-Control"] = cache_control(max_age)
    return response
