"""HTML pages: the cohort table at `/` and the viewer at `/slides/<id>`.

The pages are thin shells (templates/); their data comes from the JSON API, whose URLs are
handed to the frontend in `data-` attributes so no URL is hard-coded in JavaScript.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request, url_for

from viewer.errors import BadRequest
from viewer.serialize import MAX_COMPARED, cohort_entry
from viewer.state import ViewerState, viewer_state

bp = Blueprint("pages", __name__)


@bp.get("/")
def cohort_page() -> str:
    state = viewer_state()
    slides = [cohort_entry(r, state) for r in state.primary_records()]
    for entry in slides:
        entry["by_experiment"] = {e["experiment"]: e for e in entry.get("experiments", [])}
    experiments = (
        [
            {
                "name": c.experiment,
                "model_types": ", ".join(sorted({r.prediction.model_type for r in c})),
            }
            for c in state.experiments.values()
        ]
        if state.compared
        else None
    )
    return render_template(
        "cohort.html",
        source=state.cohort.name,
        slides=slides,
        experiments=experiments,
        api_url=url_for("api.slides"),
        agreement_url=url_for("compare.cohort_agreement") if state.compared else None,
        localization_url=url_for("cohort_analysis.cohort_localization")
        if state.annotations_dir is not None
        else None,
    )


@bp.get("/slides/<slide_id>")
def viewer_page(slide_id: str) -> str:
    state = viewer_state()
    chosen = [n for n in (request.args.get("exp") or "").split(",") if n]
    if len(chosen) > 1:
        return compare_page(state, slide_id, chosen)
    record = state.record(slide_id, chosen[0] if chosen else None)
    state.prefetch(record)  # while the browser loads the page's scripts
    scored_by = list(state.records(slide_id)) if state.compared else []
    compare_url = (
        url_for("pages.viewer_page", slide_id=slide_id, exp=",".join(scored_by[:MAX_COMPARED]))
        if len(scored_by) > 1
        else None
    )
    return render_template(
        "viewer.html",
        slide=cohort_entry(record),
        compare_url=compare_url,
        experiment=record.experiment if state.compared else None,
        api_url=url_for(
            "api.slide_metadata",
            slide_id=slide_id,
            **({"exp": record.experiment} if state.compared else {}),
        ),
        cohort_url=url_for("pages.cohort_page"),
    )


def compare_page(state: ViewerState, slide_id: str, chosen: list[str]) -> str:
    """`/slides/<id>?exp=A,B[,C]`: the slide and one heatmap pane per experiment, locked."""
    if len(set(chosen)) != len(chosen) or len(chosen) > MAX_COMPARED:
        raise BadRequest(
            f"exp must name 2 to {MAX_COMPARED} different experiments, got {','.join(chosen)[:200]!r}"
        )
    records = [
        state.record(slide_id, name) for name in chosen
    ]  # 404 for an experiment without the slide
    for record in records:
        state.prefetch(record)
    return render_template(
        "compare.html",
        slide=cohort_entry(records[0]),
        experiments=chosen,
        api_url=url_for("api.slide_metadata", slide_id=slide_id),
        agreement_url=url_for("compare.agreement_route", slide_id=slide_id),
        cohort_url=url_for("pages.cohort_page"),
    )
