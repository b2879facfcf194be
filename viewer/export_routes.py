"""`/api/slides/<id>/export/...`: what export_heatmaps.py writes, for the slide on screen.

Query parameters are the overlay tiles' (`cmap`, `class`, `norm`, `threshold`, `blur`), so an
export shows what the pane shows: `regions.geojson` (QuPath regions above `threshold`),
`patches.csv` (the patch table), `view.png` (a level-0 box `x,y,w,h` at `width` px, opacity
`alpha`, legend burned in; defaults and limits `scoremap.defaults.EXPORT_VIEW`).
"""

from __future__ import annotations

import io
import json

from flask import Blueprint, Response, request

from exports.options import ExportOptions, ExportScores
from exports.qupath import region_feature
from exports.table import write_rows
from scoremap.defaults import EXPORT_VIEW
from scoremap.params import check_alpha
from viewer.errors import BadRequest
from viewer.export_view import render_view
from viewer.params import query_float, query_int
from viewer.selection import selection

bp = Blueprint("exports", __name__, url_prefix="/api/slides/<slide_id>/export")


def _scores(slide_id: str):
    s = selection(slide_id)
    options = ExportOptions(
        norm=s.params.norm,
        class_ref=s.class_index,
        cmap=s.params.cmap,
        threshold=s.params.threshold,
    )
    exported = ExportScores.of(s.scores.blockmap, options)
    return s.state, s.record, s.scores, s.params, s.class_index, exported


def _download(body: bytes | str, mimetype: str, name: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.get("/regions.geojson")
def regions(slide_id: str) -> Response:
    _state, record, _, params, _, exported = _scores(slide_id)
    if "threshold" not in request.args:
        raise BadRequest("threshold is required: the normalised score (0..1) the regions are above")
    _, info = record.require_slide()
    mpp = info.mpp
    feature = region_feature(exported, params.threshold, params.cmap, mpp)
    body = json.dumps({"type": "FeatureCollection", "features": [feature]})
    return _download(body, "application/geo+json", f"{slide_id}_regions.geojson")


@bp.get("/patches.csv")
def patches(slide_id: str) -> Response:
    *_, exported = _scores(slide_id)
    buf = io.StringIO()
    write_rows(exported, buf)
    return _download(buf.getvalue(), "text/csv", f"{slide_id}_patches.csv")


@bp.get("/view.png")
def view(slide_id: str) -> Response:
    state, record, scores, params, class_index, _ = _scores(slide_id)
    _, info = record.require_slide()
    width_l0, height_l0 = info.dimensions
    x = query_int(request.args, "x", 0, -width_l0, 2 * width_l0)
    y = query_int(request.args, "y", 0, -height_l0, 2 * height_l0)
    w = query_int(request.args, "w", width_l0, 1, 4 * width_l0)
    h = query_int(request.args, "h", height_l0, 1, 4 * height_l0)
    side_max = EXPORT_VIEW["side_max"]
    width = query_int(
        request.args, "width", EXPORT_VIEW["width"], EXPORT_VIEW["width_min"], side_max
    )
    alpha = check_alpha(float(query_float(request.args, "alpha", EXPORT_VIEW["alpha"])))
    if h * width / w > side_max:
        raise BadRequest(f"the view would be {round(h * width / w)} px tall; at most {side_max}")
    bm = scores.blockmap
    title = (
        f"{slide_id}  ·  {bm.model_type}, class {bm.class_names[class_index]}  ·  {params.norm} attention, "
        f"{params.cmap}" + (f", >= {params.threshold:g}" if params.threshold else "")
    )
    body = state.read(
        record,
        lambda opened: render_view(
            opened,
            info,
            scores.source(class_index, params.norm),
            (x, y, w, h),
            width,
            params.cmap,
            params.threshold,
            params.blur,
            alpha,
            title,
        ),
    )
    return _download(body, "image/png", f"{slide_id}_view.png")
