"""Comparing experiments: how far two models' attention agrees on a slide, and over the cohort.

`/api/slides/<id>/agreement?a=A&b=B&k=`: Spearman's rho of the two attention maps and the Jaccard
overlap of their top-k (k = 10, 50 and the asked k), on the patches both scored or on the cells of
a common raster (scoremap.agreement), with both predictions. `/api/agreement?a=&b=`: the same
for every slide both scored, and the cohort mean of rho. `a` and `b` default to the first two
experiments; each experiment's attention is that of its predicted class, as percentiles.
"""
from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, jsonify, request

from scoremap.agreement import DEFAULT_KS, Bag, agreement
from viewer.errors import BadRequest, NotFound, ViewerError
from viewer.params import query_int
from viewer.serialize import class_ref, number
from viewer.state import ViewerState, viewer_state

bp = Blueprint("compare", __name__, url_prefix="/api")
MAX_K = 100_000


def _pair(state: ViewerState) -> tuple[str, str]:
    names = list(state.experiments)
    if len(names) < 2:
        raise NotFound("agreement needs two experiments; this viewer serves one "
                       "(give run_viewer.py --config A.yaml --config B.yaml)")
    a, b = request.args.get("a") or names[0], request.args.get("b") or names[1]
    state.experiment(a), state.experiment(b)
    if a == b:
        raise BadRequest(f"a and b must be two different experiments, got {a!r} twice")
    return a, b


def _side(state: ViewerState, record) -> tuple[dict, Bag]:
    scores = state.slide_scores(record)
    index = scores.resolve_class(None)
    p = record.prediction
    summary = {"experiment": record.experiment, "model_type": p.model_type,
               "prediction": {"index": p.pred, "name": p.class_names[p.pred]},
               "probabilities": [number(v) for v in p.probs], "attention_class": class_ref(record, index),
               "bag_size": scores.bag_size, "l0_patch": scores.l0_patch}
    # percentiles: the ranks of the raw scores (so the same figures on shared patches), and what
    # the heatmap paints and averages where patches overlap (so the cells of a common raster too)
    return summary, Bag(scores.l0_coords, scores.l0_patch, scores.normalized(index, "percentile"))


def slide_agreement(state: ViewerState, slide_id: str, a: str, b: str, ks: tuple[int, ...]) -> dict:
    ra, rb = state.record(slide_id, a), state.record(slide_id, b)
    (sa, bag_a), (sb, bag_b) = _side(state, ra), _side(state, rb)
    key = ("agreement", ra.blockmap_stamp, rb.blockmap_stamp, ks)
    figures = state.cache.get(key, lambda: (agreement(bag_a, bag_b, ks), 512))
    return {"slide_id": slide_id, "a": sa, "b": sb,
            "same_prediction": sa["prediction"]["name"] == sb["prediction"]["name"], **figures}


@bp.get("/slides/<slide_id>/agreement")
def agreement_route(slide_id: str) -> Response:
    state = viewer_state()
    a, b = _pair(state)
    k = query_int(request.args, "k", None, 1, MAX_K)
    ks = tuple(sorted(set(DEFAULT_KS) | ({k} if k else set())))
    return jsonify(slide_agreement(state, slide_id, a, b, ks))


@bp.get("/agreement")
def cohort_agreement() -> Response:
    """Every slide both experiments scored: rho, top-10 and top-50 Jaccard, the predictions; and
    the mean rho over the slides that have one."""
    state = viewer_state()
    a, b = _pair(state)
    slides = []
    for slide_id in state.slide_ids():
        if slide_id not in state.experiments[a] or slide_id not in state.experiments[b]:
            continue
        try:
            entry = slide_agreement(state, slide_id, a, b, DEFAULT_KS)
        except ViewerError:
            continue  # an unreadable blockmap: its own routes say why
        slides.append({k: entry[k] for k in ("slide_id", "unit", "n", "spearman", "jaccard", "same_prediction")}
                      | {"prediction_a": entry["a"]["prediction"]["name"],
                         "prediction_b": entry["b"]["prediction"]["name"]})
    rhos = [s["spearman"] for s in slides if s["spearman"] is not None]
    return jsonify({"a": a, "b": b, "slides": slides,
                    "mean_spearman": float(np.mean(rhos)) if rhos else None, "slides_with_rho": len(rhos),
                    "disagreeing": sum(not s["same_prediction"] for s in slides)})
