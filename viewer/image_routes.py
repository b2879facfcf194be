"""Slide images besides tiles: a patch at level 0 (top-k list, click-to-inspect) and thumbnails.

Both honour the slide's ICC profile like the tiles, carry ETags, and are kept in a small
per-process LRU (the cohort table and top-k list ask for the same images repeatedly).
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from scoremap.cache import file_identity
from viewer.http_cache import cached_body, make_etag, not_modified
from viewer.params import parse_index, query_int
from viewer.slides import encode_jpeg
from viewer.state import viewer_state

bp = Blueprint("images", __name__)


@bp.get("/slides/<slide_id>/patch/<index>.jpeg")
def patch_image(slide_id: str, index: str) -> Response:
    state = viewer_state()
    record = state.record(slide_id)
    record.require_slide()
    patch = parse_index("patch index", index)
    scores = state.slide_scores(record)
    l0_x, l0_y = scores.patch(patch)
    s = state.settings
    etag = make_etag(
        "patch", file_identity(record.slide_path), l0_x, l0_y, scores.l0_patch, s.jpeg_quality
    )
    cached = not_modified(etag, s.tile_max_age)
    if cached is not None:
        return cached
    size = scores.l0_patch
    body = state.image(
        record,
        ("patch", l0_x, l0_y, size),
        lambda: state.read(
            record,
            lambda opened: encode_jpeg(opened.region(l0_x, l0_y, size, size), s.jpeg_quality),
        ),
    )
    return cached_body(body, "image/jpeg", etag, s.tile_max_age)


@bp.get("/slides/<slide_id>/thumbnail.jpeg")
def thumbnail(slide_id: str) -> Response:
    state = viewer_state()
    record = state.record(slide_id)
    record.require_slide()
    s = state.settings
    size = query_int(request.args, "size", s.thumbnail_size, 16, 1024)
    etag = make_etag("thumbnail", file_identity(record.slide_path), size, s.jpeg_quality)
    cached = not_modified(etag, s.tile_max_age)
    if cached is not None:
        return cached
    body = state.image(
        record,
        ("thumbnail", size),
        lambda: state.read(
            record, lambda opened: encode_jpeg(opened.thumbnail(size), s.jpeg_quality)
        ),
    )
    return cached_body(body, "image/jpeg", etag, s.tile_max_age)
