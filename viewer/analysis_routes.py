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

import json

import numpy as np
import shapely
from flask import Blueprint, Response, jsonify, request

from exports.options import ExportScores
from exports.qupath import region_feature
from scoremap.cache import file_identity
from scoremap.defaults import ANALYSIS
from scoremap.localization import localization
from scoremap.normalize import in_range
from scoremap.params import check_threshold
from scoremap.regions import union_area
from viewer.errors import ViewerError
from viewer.params import OverlayParams, query_float, query_int, score_range
from viewer.selection import selection
from viewer.serialize import class_ref, number
from viewer.state import viewer_state
from viewer.work_budget import WorkBudget

bp = Blueprint("analysis", __name__, url_prefix="/api/slides/<slide_id>")


@bp.get("/histogram")
def histogram(slide_id: str) -> Response:
    chosen = selection(slide_id)
    record, scores, params, class_index = (
        chosen.record,
        chosen.scores,
        chosen.params,
        chosen.class_index,
    )
    values = chosen.values
    bins = query_int(request.args, "bins", ANALYSIS["bins"], 1, ANALYSIS["bins_max"])
    lo, hi = score_range(request.args).values()
    finite = values[np.isfinite(values)]
    counts, edges = np.histogram(finite, bins=bins, range=(0.0, 1.0))
    raw = scores.raw(class_index)
    raw = raw[np.isfinite(raw)]
    return jsonify(
        {
            "slide_id": slide_id,
            "class": class_ref(record, class_index),
            "norm": params.norm,
            "bins": bins,
            "edges": [float(e) for e in edges],
            "counts": [int(c) for c in counts],
            "total": int(finite.size),
            "bag_size": scores.bag_size,
            "raw_min": number(raw.min()) if raw.size else None,
            "raw_max": number(raw.max()) if raw.size else None,
            "range": {"lo": lo, "hi": hi, "patches": int(in_range(values, lo, hi).sum())},
        }
    )


def _scored_area(state, record, scores) -> float:
    """The union of every patch of the slide (cached: it does not depend on class or range)."""
    key = ("scored_area", record.slide_id, scores.bag_size, record.blockmap_stamp)
    return state.cache.get(key, lambda: (union_area(scores.l0_coords, scores.l0_patch), 0))


@bp.get("/regions")
def regions(slide_id: str) -> Response:
    chosen = selection(slide_id)
    state, record, scores, params = chosen.state, chosen.record, chosen.scores, chosen.params
    class_index, values, mpp = chosen.class_index, chosen.values, chosen.mpp
    lo, hi = score_range(request.args).values()
    chosen = in_range(values, lo, hi)
    area_px = union_area(scores.l0_coords[chosen], scores.l0_patch)
    scored = _scored_area(state, record, scores)
    record.require_slide()
    body = {
        "slide_id": slide_id,
        "class": class_ref(record, class_index),
        "norm": params.norm,
        "range": {"lo": lo, "hi": hi},
        "patches": int(chosen.sum()),
        "bag_size": scores.bag_size,
        "area_px": area_px,
        "area_mm2": area_px * mpp[0] * mpp[1] * 1e-6 if mpp else None,
        "scored_area_px": scored,
        "share": area_px / scored if scored else None,
    }
    if request.args.get("geojson", "1") != "0":
        ranks = scores.class_scores(class_index)
        exported = ExportScores(
            scores.blockmap, class_index, ranks.raw, values, ranks.percentile, ranks.rank
        )
        body["geojson"] = {
            "type": "FeatureCollection",
            "features": [region_feature(exported, lo, params.cmap, mpp, hi)],
        }
    return jsonify(body)


def _annotation_body(record, classes, name, problem, mpp) -> dict:
    return {
        "slide_id": record.slide_id,
        "file": name,
        "error": problem,
        "classes": [
            {
                "name": c.name,
                "color": list(c.colour),
                "area_px": c.area,
                "area_mm2": c.area * mpp[0] * mpp[1] * 1e-6 if mpp else None,
            }
            for c in classes
        ],
        "geojson": {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "geometry": json.loads(shapely.to_geojson(c.geometry)),
                    "properties": {"classification": {"name": c.name, "color": list(c.colour)}},
                }
                for c in classes
            ],
        },
    }


@bp.get("/annotations")
def annotations(slide_id: str) -> Response:
    """The slide's ground-truth outlines by class (level-0 pixels), from --annotations."""
    state = viewer_state()
    record = state.record(slide_id)
    classes, name, problem = state.annotations(record)
    mpp = record.info.mpp if record.info is not None else None
    return jsonify(_annotation_body(record, classes, name, problem, mpp))


def _localization_key(state, record, index: int, norm: str, lo: float, hi: float) -> tuple:
    """Figures are kept while the blockmap, the ground-truth file and the slide are unchanged: the
    cohort table asks for every slide's at each load, and a million-patch slide's take a second."""
    return (
        "localization",
        file_identity(record.blockmap_path),
        file_identity(state.annotation_path(record)),
        record.slide_stamp,
        index,
        norm,
        lo,
        hi,
    )


def slide_localization(
    state, record, class_index: str | int | None, norm: str, lo: float, hi: float = 1.0
) -> dict:
    classes, name, problem = state.annotations(record)
    if not classes:
        return {
            "slide_id": record.slide_id,
            "file": name,
            "error": problem,
            "range": {"lo": lo, "hi": hi},
            "classes": [],
        }
    index = (
        record.prediction.pred
        if class_index is None
        else state.slide_scores(record).resolve_class(class_index)
    )

    def compute():
        scores = state.slide_scores(record)  # read only when the figures are not cached
        raw, values = scores.raw(index), scores.normalized(index, norm)
        return [
            localization(scores.l0_coords, scores.l0_patch, raw, values, c, lo, hi) for c in classes
        ], 4096

    figures = state.cache.get(_localization_key(state, record, index, norm, lo, hi), compute)
    return {
        "slide_id": record.slide_id,
        "file": name,
        "error": problem,
        "attention_class": class_ref(record, index),
        "norm": norm,
        "range": {"lo": lo, "hi": hi},
        "classes": figures,
    }


def _dice_range() -> tuple[float, float]:
    """The region the Dice is of: [lo, hi] where given (the page's range), else [threshold, 1]
    (default `ANALYSIS["dice_threshold"]`)."""
    if request.args.get("lo") or request.args.get("hi"):
        found = score_range(request.args)
        return found["lo"], found["hi"]
    threshold = query_float(request.args, "threshold", ANALYSIS["dice_threshold"])
    return check_threshold(float(threshold)), 1.0


@bp.get("/localization")
def slide_localization_route(slide_id: str) -> Response:
    """Per annotated class: AUROC of attention against 'patch centre inside', the top-10 and
    top-5 % fractions inside, the Dice of the region in [lo, hi] (default: at or above
    `threshold`, 0.5) with it."""
    state = viewer_state()
    record = state.record(slide_id)
    params = OverlayParams.from_query(
        request.args, state.settings.default_cmap, state.settings.default_norm
    )
    return jsonify(slide_localization(state, record, params.class_ref, params.norm, *_dice_range()))


cohort_bp = Blueprint("cohort_analysis", __name__, url_prefix="/api")


@cohort_bp.get("/localization")
def cohort_localization() -> Response:
    """Every annotated slide's localisation figures (predicted class, percentile, threshold) and the
    cohort mean of each figure per annotated class: the table's columns. Within a time budget
    (viewer.work_budget): slides not computed yet are listed in `pending`."""
    state = viewer_state()
    lo, hi = _dice_range()
    slides, sums, budget = [], {}, WorkBudget(state.settings.cohort_budget_s)
    exp = request.args.get("exp")
    records = list(
        state.experiment(exp) if exp else state.cohort
    )  # one experiment's attention: the first by default
    for record in records:
        if state.annotations_dir is None:
            break
        classes, _, problem = state.annotations(record)
        if not classes and not problem:
            continue  # no ground truth for this slide
        key = (
            _localization_key(state, record, record.prediction.pred, "percentile", lo, hi)
            if classes
            else None
        )
        if key is not None and key not in state.cache and not budget.allows(record.slide_id):
            continue  # in `pending`: the next request computes it
        try:
            body = slide_localization(state, record, None, "percentile", lo, hi)
        except ViewerError:
            continue  # an unreadable blockmap: the slide's own page says why
        if not body["classes"] and not body["error"]:
            continue  # no ground truth for this slide
        slides.append(body)  # with its error where the file could not be read
        for c in body["classes"]:
            acc = sums.setdefault(c["class"], {"auroc": [], "top10": [], "top5pct": [], "dice": []})
            for key, value in (
                ("auroc", c["auroc"]),
                ("top10", c["top_inside"]["10"]),
                ("top5pct", c["top_inside"]["5%"]),
                ("dice", c["dice"]),
            ):
                if value is not None:
                    acc[key].append(value)
    means = {
        name: {k: (float(np.mean(v)) if v else None) for k, v in acc.items()}
        | {
            "slides": max(len(v) for v in acc.values()),
            "counts": {k: len(v) for k, v in acc.items()},
        }
        for name, acc in sums.items()
    }  # AUROC is undefined on a slide wholly inside (or outside)
    return jsonify(
        {
            "experiment": (exp or state.cohort.experiment),
            "threshold": lo,
            "range": {"lo": lo, "hi": hi},
            "slides": slides,
            "mean": means,
            "pending": budget.pending,
            "complete": not budget.pending,
        }
    )
