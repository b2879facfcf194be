"""JSON under /api/: the cohort, one slide's metadata, top/bottom-k patches, the patch at a point.

Also the colormap legend (`/api/colorbar`, a PNG drawn by the same colormap code as the tiles)
and the list of colormap names. Shapes are built in `viewer.serialize`.
"""

from __future__ import annotations

import io

from flask import Blueprint, Response, jsonify, request

from scoremap.colormap import available_colormaps
from scoremap.colormap import colorbar as draw_colorbar
from scoremap.defaults import ANALYSIS, SUGGESTED_CMAPS
from viewer import serialize
from viewer.errors import NotFound
from viewer.http_cache import cached_body, make_etag, not_modified
from viewer.params import parse_cmap, query_choice, query_float, query_int
from viewer.serialize import class_ref, cohort_entry, patch_entry
from viewer.state import viewer_state

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/slides")
def slides() -> Response:
    state = viewer_state()
    entries = [cohort_entry(record, state) for record in state.primary_records()]
    body = {"source": state.cohort.name, "count": len(entries), "slides": entries}
    if state.compared:
        body["experiments"] = [
            {"name": c.experiment, "source": c.name, "slides": len(c)}
            for c in state.experiments.values()
        ]
    return jsonify(body)


@bp.get("/slides/<slide_id>")
def slide_metadata(slide_id: str) -> Response:
    state = viewer_state()
    return jsonify(serialize.slide_metadata(state, state.record(slide_id)))


@bp.get("/slides/<slide_id>/topk")
def topk(slide_id: str) -> Response:
    state = viewer_state()
    record = state.record(slide_id)
    k = query_int(request.args, "k", ANALYSIS["topk"], 1, state.settings.topk_max)
    order = query_choice(request.args, "order", ("top", "bottom"), "top")
    scores = state.slide_scores(record)
    class_index = scores.resolve_class(request.args.get("class"))
    cls = scores.class_scores(class_index)
    chosen = cls.order[:k] if order == "top" else cls.order[::-1][:k]
    return jsonify(
        {
            "slide_id": slide_id,
            "class": class_ref(record, class_index),
            "order": order,
            "k": int(k),
            "bag_size": scores.bag_size,
            "patches": [patch_entry(record, scores, cls, int(i)) for i in chosen],
        }
    )


@bp.get("/slides/<slide_id>/patch")
def patch_at(slide_id: str) -> Response:
    state = viewer_state()
    record = state.record(slide_id)
    l0_x = query_float(request.args, "x", None, -1e9, 1e9, required=True)
    l0_y = query_float(request.args, "y", None, -1e9, 1e9, required=True)
    scores = state.slide_scores(record)
    class_index = scores.resolve_class(request.args.get("class"))
    hits = scores.patch_at(l0_x, l0_y)
    if hits.size == 0:
        raise NotFound(f"no patch at level-0 ({l0_x:g}, {l0_y:g})")
    cls = scores.class_scores(class_index)
    body = patch_entry(record, scores, cls, int(hits[0]))
    body.update(
        {
            "slide_id": slide_id,
            "class": class_ref(record, class_index),
            "bag_size": scores.bag_size,
            "covering": [int(i) for i in hits],
        }
    )
    return jsonify(body)


@bp.get("/colorbar")
def colorbar() -> Response:
    state = viewer_state()
    cmap = parse_cmap(request.args.get("cmap"), state.settings.default_cmap)
    width = query_int(request.args, "width", 256, 1, 2048)
    height = query_int(request.args, "height", 16, 1, 2048)
    etag = make_etag("colorbar", cmap, width, height)
    cached = not_modified(etag, state.settings.tile_max_age)
    if cached is not None:
        return cached
    buf = io.BytesIO()
    draw_colorbar(cmap, width, height).save(buf, "PNG")
    return cached_body(buf.getvalue(), "image/png", etag, state.settings.tile_max_age)


@bp.get("/colormaps")
def colormaps() -> Response:
    return jsonify({"suggested": list(SUGGESTED_CMAPS), "all": available_colormaps()})
