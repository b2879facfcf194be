"""Third-party browser code installed by npm at set-up (`make install` runs `npm ci`), never committed.

Only OpenSeadragon's own build folder is served, at `/vendor/openseadragon/<path>`:

    node_modules/openseadragon/build/openseadragon/openseadragon.min.js
    node_modules/openseadragon/build/openseadragon/images/*.png    (navigation buttons)

Paths are joined with Werkzeug's `safe_join` (no `..`, no absolute paths, no encoded slashes), so
nothing else under node_modules or the repository can be reached. When node_modules is missing
the route answers 503 with a one-line message saying to run `make install`, and the templates
get `vendor_missing` to show the same message in the page instead of an empty viewer.
"""

from __future__ import annotations

import json
from functools import lru_cache

from flask import Blueprint, Response, abort, current_app, send_from_directory, url_for
from werkzeug.security import safe_join

from scoremap.checkout import REPO_ROOT

OSD_PACKAGE = REPO_ROOT / "node_modules" / "openseadragon"
OSD_BUILD = OSD_PACKAGE / "build" / "openseadragon"
OSD_SCRIPT = "openseadragon.min.js"
INSTALL_HINT = (
    "OpenSeadragon is not installed (node_modules/openseadragon is missing): "
    "run `make install` (it runs `npm ci`) and restart the viewer"
)

bp = Blueprint("vendor", __name__, url_prefix="/vendor")


@lru_cache(maxsize=1)
def osd_version() -> str | None:
    """The installed OpenSeadragon version, or None when npm has not installed it."""
    try:
        meta = json.loads((OSD_PACKAGE / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(meta.get("version")) if (OSD_BUILD / OSD_SCRIPT).is_file() else None


@bp.app_context_processor
def vendor_context() -> dict:
    """`osd_script_url` (versioned, so a cached copy never outlives an upgrade) or `vendor_missing`."""
    version = osd_version()
    if version is None:
        osd_version.cache_clear()  # `make install` may run while the viewer is up
        return {"vendor_missing": INSTALL_HINT, "osd_script_url": None, "osd_images_url": None}
    return {
        "vendor_missing": None,
        "osd_script_url": url_for("vendor.openseadragon", filename=OSD_SCRIPT, v=version),
        "osd_images_url": url_for("vendor.openseadragon", filename="images/"),
    }


@bp.get("/openseadragon/<path:filename>")
def openseadragon(filename: str) -> Response:
    if not OSD_BUILD.is_dir():
        return Response(INSTALL_HINT + "\n", status=503, mimetype="text/plain")
    if safe_join(str(OSD_BUILD), filename) is None:
        abort(404)
    # send_from_directory joins safely again and answers 404 for anything that is not a file
    return send_from_directory(
        OSD_BUILD, filename, max_age=current_app.config.get("TILE_MAX_AGE", 3600)
    )
