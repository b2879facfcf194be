"""The app factory: `create_app(config)` for run_viewer.py, gunicorn and the tests.

    gunicorn 'viewer.app:create_app({"SCORING_CONFIG": "heatmaps/configs/my.yaml"})'
    MIL_VIEWER_RESULTS_DIR=... MIL_VIEWER_SLIDES_DIR=... gunicorn 'viewer.app:create_app()'

Settings come from `scoremap.defaults.VIEWER_SETTINGS`, then `MIL_VIEWER_*` environment
variables, then the mapping given. Exactly one cohort source is needed: `SCORING_CONFIG` (a
scoring YAML), `RESULTS_DIR` + `SLIDES_DIR`, `DEMO`, or an already built `COHORT` (tests, benches).
`SCORING_CONFIG`, `RESULTS_DIR` and `COHORT` may be lists: one experiment each (several models
scored on the same slides), named by their save_exp_code (the results folder's name), which must
differ; the first is the default wherever a request names none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flask import Flask

from scoremap.checkout import REPO_ROOT
from scoremap.colormap import check_colormap
from scoremap.defaults import VIEWER_SETTINGS
from scoremap.errors import ParameterError, UnknownColormap
from scoremap.memory import return_large_blocks
from scoremap.params import check_norm
from viewer import (
    analysis_routes,
    api_routes,
    compare_routes,
    export_routes,
    image_routes,
    page_routes,
    tile_routes,
    vendor_routes,
)
from viewer.cohort import Cohort, cohort_from_config, cohort_from_results, demo_cohorts
from viewer.errors import ViewerConfigError, register_error_handlers
from viewer.security import secure
from viewer.state import EXTENSION_KEY, Settings, ViewerState

#: Where the cohort comes from (exactly one); every other setting is `scoremap.defaults.VIEWER_SETTINGS`.
COHORT_SOURCES: dict[str, Any] = {
    "SCORING_CONFIG": None,  # path of a scoring config YAML (or a list: one experiment each)
    "RESULTS_DIR": None,  # {raw_save_dir}/{save_exp_code} (or a list), with SLIDES_DIR
    "SLIDES_DIR": None,
    "DEMO": False,  # data/demo/demo_config.yaml (and the demo's second experiment)
    "COHORT": None,  # a viewer.cohort.Cohort (or a list) built by the caller
    "ANNOTATIONS_DIR": None,  # ground truth per slide (overrides the config's annotations_dir)
}


def _many(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def distinct_experiments(cohorts: Sequence[Cohort]) -> list[Cohort]:
    """The experiments in order, or ViewerConfigError naming a name given twice and its sources."""
    seen: dict[str, Cohort] = {}
    for cohort in cohorts:
        if "," in cohort.experiment:  # links name experiments as exp=A,B
            raise ViewerConfigError(
                f"experiment name {cohort.experiment!r} ({cohort.source}) holds a comma; "
                "rename its save_exp_code (or results folder) without one"
            )
        if cohort.experiment in seen:
            raise ViewerConfigError(
                f"two experiments are named {cohort.experiment!r} ({seen[cohort.experiment].source} and "
                f"{cohort.source}): experiments are told apart by their save_exp_code (the results folder's "
                "name), which must differ"
            )
        seen[cohort.experiment] = cohort
    return list(cohorts)


def load_experiments(cfg: Mapping[str, Any]) -> list[Cohort]:
    """The experiments named by the settings, each a Cohort; ViewerConfigError when no source or
    several kinds of source are named, or two experiments share a name."""
    sources = [
        name
        for name, given in (
            ("COHORT", cfg.get("COHORT") is not None),
            ("SCORING_CONFIG", bool(cfg.get("SCORING_CONFIG"))),
            ("RESULTS_DIR", bool(cfg.get("RESULTS_DIR") or cfg.get("SLIDES_DIR"))),
            ("DEMO", bool(cfg.get("DEMO"))),
        )
        if given
    ]
    if len(sources) != 1:
        raise ViewerConfigError(
            "give exactly one cohort: a scoring config (--config FILE), a results folder "
            "with its slides (--results DIR --slides DIR), or --demo"
            + (f"; got {', '.join(sources)}" if sources else "")
        )
    source = sources[0]
    if source == "COHORT":
        return distinct_experiments(_many(cfg["COHORT"]))
    if source == "SCORING_CONFIG":
        return distinct_experiments([cohort_from_config(c) for c in _many(cfg["SCORING_CONFIG"])])
    if source == "DEMO":
        return distinct_experiments(demo_cohorts())
    if not cfg.get("RESULTS_DIR") or not cfg.get("SLIDES_DIR"):
        raise ViewerConfigError("--results DIR and --slides DIR go together")
    return distinct_experiments(
        [cohort_from_results(r, cfg["SLIDES_DIR"]) for r in _many(cfg["RESULTS_DIR"])]
    )


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A Flask app serving one cohort; raises ViewerConfigError for inputs it cannot serve."""
    app = Flask(
        "viewer", root_path=str(REPO_ROOT), template_folder="templates", static_folder="static"
    )
    app.config.from_mapping({**COHORT_SOURCES, **VIEWER_SETTINGS})
    app.config.from_prefixed_env("MIL_VIEWER")
    if config:
        app.config.from_mapping(config)
    settings = Settings.from_mapping(app.config)
    return_large_blocks()  # a pyramid level's temporaries go back to the OS (workers inherit it)
    try:
        check_colormap(settings.default_cmap)
    except UnknownColormap as exc:
        raise ViewerConfigError(f"DEFAULT_CMAP: {exc}") from None
    try:
        check_norm(settings.default_norm, "DEFAULT_NORM")
    except ParameterError as exc:
        raise ViewerConfigError(str(exc)) from None
    experiments = load_experiments(app.config)
    annotations = next(
        (c.annotations_dir for c in experiments if c.annotations_dir is not None), None
    )
    if app.config.get("ANNOTATIONS_DIR"):
        annotations = Path(app.config["ANNOTATIONS_DIR"]).expanduser()
        if not annotations.is_dir():
            raise ViewerConfigError(
                f"--annotations {annotations}: not a folder (expected {{slide_id}}.geojson or "
                ".xml files)"
            )
    state = ViewerState(experiments, settings, annotations)
    app.extensions[EXTENSION_KEY] = state
    app.json.sort_keys = False  # keep the documented field order
    secure(app)  # before the routes: slash merging is a property of the URL map's rules
    for blueprint in (
        page_routes.bp,
        api_routes.bp,
        analysis_routes.bp,
        analysis_routes.cohort_bp,
        compare_routes.bp,
        export_routes.bp,
        tile_routes.bp,
        image_routes.bp,
        vendor_routes.bp,
    ):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    return app
