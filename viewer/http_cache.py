"""ETags and Cache-Control for tiles and images, checked before any pixel is rendered.

A tile's bytes are a pure function of the files it comes from (slide or blockmap), its address and
its rendering parameters, so the ETag is a hash of exactly those. A file enters as its
`scoremap.cache.file_identity` (path, inode, size, mtime), the same identity that keys the viewer's
cache: the ETag changes exactly when the cached pixels would be read afresh. A revalidating browser
or CDN whose If-None-Match matches gets a 304 without the tile being rendered; a rescored
blockmap (a new file renamed over the old) changes every overlay ETag.
"""

from __future__ import annotations

import hashlib

from flask import Response, request

ETAG_VERSION = "1"  # bump when tile rendering changes, to invalidate caches


def make_etag(*parts: object) -> str:
    """The ETag of a body made from `parts`: files as their `file_identity`, then the parameters."""
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
