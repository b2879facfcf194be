"""Comparing experiments: how far two models' attention agrees on a slide, and over the cohort.

`/api/slides/<id>/agreement?a=A&b=B&k=`: Spearman's rho of the two attention maps and the Jaccard
overlap of their top-k (k = 10, 50 and the asked k), on the patches both scored or on the cells of
a common raster (scoremap.agreement), with both predictions. `/api/agreement?a=&b=`: the same
for every slide both scored, and the cohort mean of rho; slides whose figures are not cached yet
are computed until the request's time budget is spent (viewer.work_budget), the rest listed in
`pending` for the next request. `a` and `b` default to the first two
experiments; each experiment's attention is that of its predicted class, as percentiles.
"""

from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, jsonify, request

from scoremap.agreement import DEFAULT_KS, agreement
from scoremap.cache import file_identity
from scoremap.raster import ScoreSource
from viewer.errors import BadRequest, NotFound, ViewerError
from viewer.params import query_int
from viewer.serialize import class_ref, experiment_entry
from viewer.state import ViewerState, viewer_state
from viewer.work_budget import WorkBudget

bp = Blueprint("compare", __name__, url_prefix="/api")
MAX_K = 100_000


def _pair(state: ViewerState) -> tuple[str, str]:
    names = list(state.experiments)
    if len(names) < 2:
        raise NotFound(
            "agreement needs two experiments; this viewer serves one "
            "(give run_viewer.py --config A.yaml --config B.yaml)"
        )
    a, b = request.args.get("a") or names[0], request.args.get("b") or names[1]
    state.experiment(a), state.experiment(b)
    if a == b:
        raise BadRequest(f"a and b must be two different experiments, got {a!r} twice")
    return a, b


def _summary(record) -> dict:
    """The experiment's entry of the cohort table, and whose attention was compared."""
    return experiment_entry(record) | {"attention_class": class_ref(record, record.prediction.pred)}


def _bag(state: ViewerState, record) -> ScoreSource:
    # percentiles: the ranks of the raw scores (so the same figures on shared patches), and what
    # the heatmap paints and averages where patches overlap (so the cells of a common raster too)
    scores = state.slide_scores(record)
    return scores.source(scores.resolve_class(None), "percentile")


def _key(ra, rb, ks: tuple[int, ...]) -> tuple:
    return ("agreement", file_identity(ra.blockmap_path), file_identity(rb.blockmap_path), ks)


def slide_agreement(state: ViewerState, slide_id: str, a: str, b: str, ks: tuple[int, ...]) -> dict:
    """The figures of one slide (cached per pair of blockmap files; the blockmaps are read only
    when the figures are computed)."""
    ra, rb = state.record(slide_id, a), state.record(slide_id, b)
    figures = state.cache.get(
        _key(ra, rb, ks), lambda: (agreement(_bag(state, ra), _bag(state, rb), ks), 512)
    )
    sa, sb = _summary(ra), _summary(rb)
    return {
        "slide_id": slide_id,
        "a": sa,
        "b": sb,
        "same_prediction": sa["prediction"]["name"] == sb["prediction"]["name"],
        **figures,
    }


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
    slides, budget = [], WorkBudget(state.settings.cohort_budget_s)
    for slide_id in state.slide_ids():
        if slide_id not in state.experiments[a] or slide_id not in state.experiments[b]:
            continue
        if _key(
            state.record(slide_id, a), state.record(slide_id, b), DEFAULT_KS
        ) not in state.cache and not budget.allows(slide_id):
            continue  # in `pending`: the next request computes it
        try:
            entry = slide_agreement(state, slide_id, a, b, DEFAULT_KS)
        except ViewerError:
            continue  # an unreadable blockmap: its own routes say why
        slides.append(
            {
                k: entry[k]
                for k in ("slide_id", "unit", "n", "spearman", "jaccard", "same_prediction")
            }
            | {
                "prediction_a": entry["a"]["prediction"]["name"],
                "prediction_b": entry["b"]["prediction"]["name"],
            }
        )
    rhos = [s["spearman"] for s in slides if s["spearman"] is not None]
    return jsonify(
        {
            "a": a,
            "b": b,
            "slides": slides,
            "mean_spearman": float(np.mean(rhos)) if rhos else None,
            "slides_with_rho": len(rhos),
            "disagreeing": sum(not s["same_prediction"] for s in slides),
            "pending": budget.pending,
            "complete": not budget.pending,
        }
    )
