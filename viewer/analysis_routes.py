"""Reading the attention: the score histogram and the regions of a score range, with their area.

`/api/slides/<id>/histogram?bins=&class=&norm=&lo=&hi=`: bin edges over the normalised 0..1 scale
and the number of patches in each (the counts add up to the patches with a score), plus how many
lie in [lo, hi]. `/api/slides/<id>/regions?lo=&hi=&class=&norm=&cmap=`: the patches in [lo, hi],
the area of their union (level-0 px^2, and mm^2 where the slide has an MPP; overlapping patches
counted once, exactly: scoremap.regions), its share of the scored area (the union of every patch),
and the regions as QuPath GeoJSON (as `export_heatmaps.py --to qupath --threshold lo` writes them).
The page's histogram, threshold range and read-out come from these.
"""
from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, jsonify, request

from exports.options import ExportScores
from exports.qupath import region_feature
from scoremap.normalize import in_range
from scoremap.regions import union_area
from viewer.params import OverlayParams, query_int, score_range
from viewer.serialize import class_ref, number
from viewer.state import viewer_state

bp = Blueprint("analysis", __name__, url_prefix="/api/slides/<slide_id>")
MAX_BINS = 1000


def _selection(slide_id: str):
    state = viewer_state()
    record = state.record(slide_id)
    scores = state.slide_scores(record)
    params = OverlayParams.from_query(request.args, state.settings.default_cmap, state.settings.default_norm)
    class_index = scores.resolve_class(params.class_index)
    values = scores.normalized(class_index, params.norm)
    return state, record, scores, params, class_index, values


@bp.get("/histogram")
def histogram(slide_id: str) -> Response:
    _, record, scores, params, class_index, values = _selection(slide_id)
    bins = query_int(request.args, "bins", 50, 1, MAX_BINS)
    lo, hi = score_range(request.args).values()
    finite = values[np.isfinite(values)]
    counts, edges = np.histogram(finite, bins=bins, range=(0.0, 1.0))
    raw = scores.raw(class_index)
    raw = raw[np.isfinite(raw)]
    return jsonify({
        "slide_id": slide_id, "class": class_ref(record, class_index), "norm": params.norm, "bins": bins,
        "edges": [float(e) for e in edges], "counts": [int(c) for c in counts], "total": int(finite.size),
        "bag_size": scores.bag_size,
        "raw_min": number(raw.min()) if raw.size else None, "raw_max": number(raw.max()) if raw.size else None,
        "range": {"lo": lo, "hi": hi, "patches": int(in_range(values, lo, hi).sum())},
    })


def _scored_area(state, record, scores) -> float:
    """The union of every patch of the slide (cached: it does not depend on class or range)."""
    key = ("scored_area", record.slide_id, scores.bag_size, record.blockmap_stamp)
    return state.cache.get(key, lambda: (union_area(scores.l0_coords, scores.l0_patch), 0))


@bp.get("/regions")
def regions(slide_id: str) -> Response:
    state, record, scores, params, class_index, values = _selection(slide_id)
    lo, hi = score_range(request.args).values()
    chosen = in_range(values, lo, hi)
    area_px = union_area(scores.l0_coords[chosen], scores.l0_patch)
    scored = _scored_area(state, record, scores)
    _, info = record.require_slide()
    mpp = (info.mpp_x, info.mpp_y) if info.mpp_x and info.mpp_y else None
    body = {
        "slide_id": slide_id, "class": class_ref(record, class_index), "norm": params.norm,
        "range": {"lo": lo, "hi": hi}, "patches": int(chosen.sum()), "bag_size": scores.bag_size,
        "area_px": area_px, "area_mm2": area_px * mpp[0] * mpp[1] * 1e-6 if mpp else None,
        "scored_area_px": scored, "share": area_px / scored if scored else None,
    }
    if request.args.get("geojson", "1") != "0":
        ranks = scores.class_scores(class_index)
        exported = ExportScores(scores.blockmap, class_index, ranks.raw, values, ranks.percentile, ranks.rank)
        body["geojson"] = {"type": "FeatureCollection",
                           "features": [region_feature(exported, lo, params.cmap, mpp, hi)]}
    return jsonify(body)
