"""The JSON shapes of the API, in one place, so the frontend has one file to read.

All URLs are built with `url_for` (slide ids are percent-quoted: ids with spaces or parentheses
work). Non-finite numbers become null: JSON has no NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from flask import url_for

from scoremap.defaults import EXPORT_VIEW, OVERLAY, SUGGESTED_CMAPS
from scoremap.normalize import NORM_LABELS, NORMS
from viewer.cohort import SlideRecord
from viewer.params import BLUR_WORDS
from viewer.scores import ClassScores, SlideScores
from viewer.state import ViewerState, viewer_state

#: Experiments one comparison page shows: with the slide, 3-4 panes (and the difference pane).
MAX_COMPARED = 3


def number(value: Any) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None


def experiment_query(record: SlideRecord) -> dict:
    """`exp=` for the URLs of a record's scores when several experiments are served."""
    return {"exp": record.experiment} if viewer_state().compared else {}


def _prediction(record: SlideRecord) -> dict:
    p = record.prediction
    return {"index": p.pred, "name": p.class_names[p.pred]}


def experiment_entry(record: SlideRecord) -> dict:
    """What one experiment said about a slide (a column group of the cohort table)."""
    p = record.prediction
    return {
        "experiment": record.experiment,
        "prediction": _prediction(record),
        "probabilities": [number(v) for v in p.probs],
        "class_names": list(p.class_names),
        "bag_size": p.bag_size,
        "model_type": p.model_type,
        "l0_patch": p.l0_patch,
    }


def cohort_entry(record: SlideRecord, state: ViewerState | None = None) -> dict:
    """One row of `/api/slides`: the slide, its first experiment's prediction, and where several
    experiments are served, each one's (`experiments`) and whether they disagree."""
    p = record.prediction
    entry = {
        "id": record.slide_id,
        "label": record.label,
        "prediction": _prediction(record),
        "probabilities": [number(v) for v in p.probs],
        "class_names": list(p.class_names),
        "bag_size": p.bag_size,
        "model_type": p.model_type,
        "readable": record.readable,
        "error": record.problem,
        "viewer_url": url_for("pages.viewer_page", slide_id=record.slide_id),
        "api_url": url_for("api.slide_metadata", slide_id=record.slide_id),
        "thumbnail_url": url_for("images.thumbnail", slide_id=record.slide_id)
        if record.readable
        else None,
    }
    if state is not None and state.compared:
        records = state.records(record.slide_id)
        entry["experiments"] = [experiment_entry(r) for r in records.values()]
        entry["disagree"] = (
            len({r.prediction.class_names[r.prediction.pred] for r in records.values()}) > 1
        )
        shown = list(records)[
            :MAX_COMPARED
        ]  # the comparison page's limit: the first experiments that scored it
        entry["viewer_url"] = url_for(
            "pages.viewer_page", slide_id=record.slide_id, exp=",".join(shown)
        )
    return entry


def class_info(record: SlideRecord, scores: SlideScores) -> list[dict]:
    p = record.prediction
    out = []
    for i, name in enumerate(p.class_names):
        available = scores.class_available(i)
        entry = {
            "index": i,
            "name": name,
            "probability": number(p.probs[i]),
            "available": available,
            "score_min": None,
            "score_max": None,
        }
        if available:
            raw = scores.raw(i)
            finite = raw[np.isfinite(raw)]
            if finite.size:
                entry["score_min"], entry["score_max"] = float(finite.min()), float(finite.max())
        out.append(entry)
    return out


def slide_metadata(state: ViewerState, record: SlideRecord) -> dict:
    """`/api/slides/<id>`: everything the viewer page needs to set itself up."""
    _, info = record.require_slide()
    geometry = state.geometry(record)
    scores = state.slide_scores(record)
    p = record.prediction
    sid = record.slide_id
    s = state.settings
    q = experiment_query(record)  # the URLs of this experiment's scores
    return {
        "id": sid,
        "experiment": record.experiment,
        "experiments": [experiment_entry(r) for r in state.records(sid).values()],
        "label": record.label,
        "readable": record.readable,
        "error": record.problem,
        "dimensions": list(info.dimensions),
        "mpp": {"x": info.mpp_x, "y": info.mpp_y},
        "objective_power": info.objective_power,
        "vendor": info.vendor,
        "background": info.background,
        "level_count": len(info.level_dimensions),
        "levels": [
            {"level": i, "dimensions": list(dims), "downsample": ds}
            for i, (dims, ds) in enumerate(
                zip(info.level_dimensions, info.level_downsamples, strict=True)
            )
        ],
        "bounds": (
            None
            if info.bounds is None
            else dict(zip(("x", "y", "width", "height"), info.bounds, strict=True))
        ),
        "deepzoom": {
            "tile_size": geometry.tile_size,
            "overlap": geometry.overlap,
            "limit_bounds": s.limit_bounds,
            "level_count": geometry.level_count,
            "l0_offset": list(geometry.l0_offset),
            "l0_dimensions": list(geometry.l0_dimensions),
            "level_dimensions": [list(d) for d in geometry.z_dimensions],
        },
        "dzi": {
            "slide": url_for("tiles.slide_dzi", slide_id=sid, **q),
            "overlay": url_for("tiles.overlay_dzi", slide_id=sid, **q),
        },
        "classes": class_info(record, scores),
        "prediction": _prediction(record),
        "probabilities": [number(v) for v in p.probs],
        "class_names": list(p.class_names),
        "patch_size": p.l0_patch,
        "bag_size": p.bag_size,
        "model_type": p.model_type,
        "attention_definition": p.attention_definition,
        "defaults": overlay_defaults(state, p.pred),
        "choices": overlay_choices(),
        "urls": {
            "topk": url_for("api.topk", slide_id=sid, **q),
            "patch": url_for("api.patch_at", slide_id=sid, **q),
            "thumbnail": url_for("images.thumbnail", slide_id=sid, **q),
            "colorbar": url_for("api.colorbar"),
            "patch_image": url_for("images.patch_image", slide_id=sid, index=0, **q).replace(
                "/0.jpeg", "/{index}.jpeg"
            ),
            "viewer": url_for("pages.viewer_page", slide_id=sid),
            "histogram": url_for("analysis.histogram", slide_id=sid, **q),
            "annotations": url_for("analysis.annotations", slide_id=sid),
            "localization": url_for("analysis.slide_localization_route", slide_id=sid, **q),
            "regions": url_for("analysis.regions", slide_id=sid, **q),
            "export_view": url_for("exports.view", slide_id=sid, **q),
            "export_regions": url_for("exports.regions", slide_id=sid, **q),
            "export_patches": url_for("exports.patches", slide_id=sid, **q),
        },
    }


def overlay_defaults(state: ViewerState, class_index: int) -> dict:
    """How the page colours the overlay until the user (or the URL) says otherwise."""
    s = state.settings
    return {
        "cmap": s.default_cmap,
        "norm": s.default_norm,
        "class": int(class_index),
        "threshold": OVERLAY["threshold"],
        "blur": OVERLAY["blur"],
        "alpha": OVERLAY["alpha"],
        "difference_cmap": OVERLAY["difference_cmap"],
    }


def overlay_choices() -> dict:
    """What the page's controls offer: the server's ranges, so the page keeps no copies."""
    return {
        "colormaps": list(SUGGESTED_CMAPS),
        "colormaps_url": url_for("api.colormaps"),
        "norms": [
            {"name": n, "label": NORM_LABELS[n][0], "title": NORM_LABELS[n][1]} for n in NORMS
        ],
        "threshold": {
            "min": OVERLAY["threshold_min"],
            "max": OVERLAY["threshold_max"],
            "step": OVERLAY["threshold_step"],
        },
        "alpha": {"min": 0.0, "max": 1.0, "step": 0.01},
        "blur": dict(BLUR_WORDS),  # the words a link's `blur` may be (lower case): on or off
        # the view export's picture: the widths (and heights) the route accepts
        "export_view": {"width_min": EXPORT_VIEW["width_min"], "side_max": EXPORT_VIEW["side_max"]},
    }


def class_ref(record: SlideRecord, class_index: int) -> dict:
    return {"index": class_index, "name": record.prediction.class_names[class_index]}


def patch_entry(record: SlideRecord, scores: SlideScores, cls: ClassScores, index: int) -> dict:
    """One patch: where it is (level 0), its score, percentile (0..1, the unit of threshold, lo and
    hi), rank (1 = most attended)."""
    x, y = scores.patch(index)
    return {
        "index": int(index),
        "x": x,
        "y": y,
        "size": scores.l0_patch,
        "score": number(cls.raw[index]),
        "percentile": number(cls.percentile[index]),
        "rank": int(cls.rank[index]),
        "image_url": url_for(
            "images.patch_image",
            slide_id=record.slide_id,
            index=int(index),
            **experiment_query(record),
        ),
    }
