"""The app factory: `create_app(config)` for run_viewer.py, gunicorn and the tests.

    gunicorn 'viewer.app:create_app({"SCORING_CONFIG": "heatmaps/configs/my.yaml"})'
    MIL_VIEWER_RESULTS_DIR=... MIL_VIEWER_SLIDES_DIR=... gunicorn 'viewer.app:create_app()'

Settings come from `DEFAULTS`, then `MIL_VIEWER_*` environment variables, then the mapping
given. Exactly one cohort source is needed: `SCORING_CONFIG` (a scoring YAML), `RESULTS_DIR` +
`SLIDES_DIR`, `DEMO`, or an already built `COHORT` (tests, benchmarks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib
from flask import Flask

from viewer import api_routes, image_routes, page_routes, tile_routes, vendor_routes
from viewer.cohort import Cohort, cohort_from_config, cohort_from_results, demo_cohort
from viewer.errors import ViewerConfigError, register_error_handlers
from viewer.params import NORMS
from viewer.state import EXTENSION_KEY, Settings, ViewerState

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULTS: dict[str, Any] = {
    "SCORING_CONFIG": None,  # path of a scoring config YAML
    "RESULTS_DIR": None,  # {raw_save_dir}/{save_exp_code}, with SLIDES_DIR
    "SLIDES_DIR": None,
    "DEMO": False,  # data/demo/demo_config.yaml
    "COHORT": None,  # a viewer.cohort.Cohort built by the caller
    "SLIDE_CACHE_SIZE": 16,  # open OpenSlide handles per process
    "OPENSLIDE_CACHE_BYTES": 256 * 1024 * 1024,  # decoded slide tiles, shared by all slides
    "SCORE_CACHE_SIZE": 32,  # blockmaps held in memory per process
    "TILE_SIZE": 254,
    "TILE_OVERLAP": 1,
    "LIMIT_BOUNDS": True,
    "JPEG_QUALITY": 75,
    "TILE_MAX_AGE": 3600,  # Cache-Control max-age of tiles and images, seconds
    "DEFAULT_CMAP": "jet",
    "DEFAULT_NORM": "percentile",
    "THUMBNAIL_SIZE": 256,
    "TOPK_MAX": 1000,
}


def load_cohort(cfg: Mapping[str, Any]) -> Cohort:
    """The cohort named by the settings; ViewerConfigError when none or several are named."""
    sources = [name for name, given in (
        ("COHORT", cfg.get("COHORT") is not None),
        ("SCORING_CONFIG", bool(cfg.get("SCORING_CONFIG"))),
        ("RESULTS_DIR", bool(cfg.get("RESULTS_DIR") or cfg.get("SLIDES_DIR"))),
        ("DEMO", bool(cfg.get("DEMO"))),
    ) if given]
    if len(sources) != 1:
        raise ViewerConfigError("give exactly one cohort: a scoring config (--config FILE), a results folder "
                                "with its slides (--results DIR --slides DIR), or --demo"
                                + (f"; got {', '.join(sources)}" if sources else ""))
    source = sources[0]
    if source == "COHORT":
        return cfg["COHORT"]
    if source == "SCORING_CONFIG":
        return cohort_from_config(cfg["SCORING_CONFIG"])
    if source == "DEMO":
        return demo_cohort()
    if not cfg.get("RESULTS_DIR") or not cfg.get("SLIDES_DIR"):
        raise ViewerConfigError("--results DIR and --slides DIR go together")
    return cohort_from_results(cfg["RESULTS_DIR"], cfg["SLIDES_DIR"])


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A Flask app serving one cohort; raises ViewerConfigError for inputs it cannot serve."""
    app = Flask("viewer", root_path=str(REPO_ROOT), template_folder="templates", static_folder="static")
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("MIL_VIEWER")
    if config:
        app.config.from_mapping(config)
    cfg = app.config
    settings = Settings(
        tile_size=int(cfg["TILE_SIZE"]), overlap=int(cfg["TILE_OVERLAP"]), limit_bounds=bool(cfg["LIMIT_BOUNDS"]),
        jpeg_quality=int(cfg["JPEG_QUALITY"]), tile_max_age=int(cfg["TILE_MAX_AGE"]),
        default_cmap=str(cfg["DEFAULT_CMAP"]), default_norm=str(cfg["DEFAULT_NORM"]),
        thumbnail_size=int(cfg["THUMBNAIL_SIZE"]), topk_max=int(cfg["TOPK_MAX"]),
    )
    if settings.default_cmap not in matplotlib.colormaps:
        raise ViewerConfigError(f"DEFAULT_CMAP {settings.default_cmap!r} is not a matplotlib colormap")
    if settings.default_norm not in NORMS:
        raise ViewerConfigError(f"DEFAULT_NORM must be one of {', '.join(NORMS)}, got {settings.default_norm!r}")
    state = ViewerState(load_cohort(cfg), settings, int(cfg["SLIDE_CACHE_SIZE"]),
                        int(cfg["OPENSLIDE_CACHE_BYTES"]), int(cfg["SCORE_CACHE_SIZE"]))
    app.extensions[EXTENSION_KEY] = state
    app.json.sort_keys = False  # keep the documented field order
    for blueprint in (page_routes.bp, api_routes.bp, tile_routes.bp, image_routes.bp, vendor_routes.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    return app
