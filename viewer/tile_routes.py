"""Deep Zoom routes: the slide (JPEG tiles) and the attention overlay (PNG tiles), same geometry.

Both .dzi documents come from one `DeepZoomGeometry`, so OpenSeadragon lays the two sources out
identically (and the difference of two experiments, `?exp=A&minus=B`, the same again); tile
addresses are checked against it before any work, and ETags are computed before rendering so
that revalidation costs no pixels.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from scoremap.cache import file_identity
from scoremap.defaults import OVERLAY
from viewer.errors import BadRequest
from viewer.http_cache import cached_body, make_etag, not_modified
from viewer.overlay import render_difference_tile, render_overlay_tile
from viewer.params import OverlayParams, parse_blur, parse_cmap, parse_tile_address
from viewer.selection import selection
from viewer.slides import encode_jpeg
from viewer.state import viewer_state

bp = Blueprint("tiles", __name__)

DZI_MIMETYPE = "application/xml"


def _dzi(slide_id: str, tile_format: str) -> Response:
    state = viewer_state()
    geometry = state.geometry(state.record(slide_id))
    return Response(geometry.dzi(tile_format), mimetype=DZI_MIMETYPE)


@bp.get("/slide/<slide_id>.dzi")
def slide_dzi(slide_id: str) -> Response:
    return _dzi(slide_id, "jpeg")


@bp.get("/overlay/<slide_id>.dzi")
def overlay_dzi(slide_id: str) -> Response:
    return _dzi(slide_id, "png")


@bp.get("/slide/<slide_id>_files/<level>/<col>_<row>.jpeg")
def slide_tile(slide_id: str, level: str, col: str, row: str) -> Response:
    state = viewer_state()
    record = state.record(slide_id)
    dz_level, t_col, t_row = parse_tile_address(level, col, row)
    state.geometry(record).check_address(dz_level, t_col, t_row)
    s = state.settings
    etag = make_etag(
        "slide",
        file_identity(record.slide_path),
        dz_level,
        t_col,
        t_row,
        s.jpeg_quality,
        s.tile_size,
        s.tile_overlap,
        s.limit_bounds,
    )
    cached = not_modified(etag, s.tile_max_age)
    if cached is not None:
        return cached
    body = state.read(
        record, lambda opened: encode_jpeg(opened.tile(dz_level, t_col, t_row), s.jpeg_quality)
    )
    return cached_body(body, "image/jpeg", etag, s.tile_max_age)


@bp.get("/overlay/<slide_id>_files/<level>/<col>_<row>.png")
def overlay_tile(slide_id: str, level: str, col: str, row: str) -> Response:
    state = viewer_state()
    record = state.record(slide_id)
    dz_level, t_col, t_row = parse_tile_address(level, col, row)
    geometry = state.geometry(record)
    box = geometry.tile_box(dz_level, t_col, t_row)
    s = state.settings
    minus = request.args.get("minus")
    if minus is not None:  # the difference pane: percentile(exp) - percentile(minus)
        if not minus:
            raise BadRequest("minus must name an experiment")
        other = state.record(slide_id, minus)
        if other.blockmap_path == record.blockmap_path:
            raise BadRequest(f"minus must name another experiment than {record.experiment!r}")
        return _difference_tile(state, record, other, geometry, box, dz_level, t_col, t_row)
    chosen = selection(slide_id)
    params, scores, class_index = chosen.params, chosen.scores, chosen.class_index
    etag = make_etag(
        "overlay",
        file_identity(record.blockmap_path),
        dz_level,
        t_col,
        t_row,
        params.key(class_index),
        s.tile_size,
        s.tile_overlap,
        s.limit_bounds,
    )
    cached = not_modified(etag, s.tile_max_age)
    if cached is not None:
        return cached
    body = render_overlay_tile(scores, geometry, box, params, class_index)
    return cached_body(body, "image/png", etag, s.tile_max_age)


def _difference_tile(
    state, record, other, geometry, box, dz_level: int, t_col: int, t_row: int
) -> Response:
    s = state.settings
    OverlayParams.from_query(
        request.args, s.default_cmap, s.default_norm
    )  # the same checks as any overlay
    cmap = parse_cmap(request.args.get("cmap"), OVERLAY["difference_cmap"])
    blur = parse_blur(request.args.get("blur"))
    etag = make_etag(
        "difference",
        file_identity(record.blockmap_path),
        file_identity(other.blockmap_path),
        dz_level,
        t_col,
        t_row,
        cmap,
        blur,
        s.tile_size,
        s.tile_overlap,
        s.limit_bounds,
    )
    cached = not_modified(etag, s.tile_max_age)
    if cached is not None:
        return cached
    body = render_difference_tile(
        state.slide_scores(record), state.slide_scores(other), geometry, box, cmap, blur
    )
    return cached_body(body, "image/png", etag, s.tile_max_age)
