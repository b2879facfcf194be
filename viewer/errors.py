"""Error types of the viewer, each carrying its HTTP status, turned into JSON in one place.

Modules raise these at the edge where they find the problem (an unknown slide id, a tile address
off the pyramid, a query number that does not parse); the core's rule for a chosen value
(`scoremap.params`: a class the slide lacks, a threshold off the scale) raises its own
`ParameterError`, named by the query parameter, which is a 400 here. `register_error_handlers`
answers each with its 4xx status and a one-line JSON message. Nothing a client can send is
allowed to reach a 500 with a traceback: every hostile or malformed request ends here.
"""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from scoremap.errors import ParameterError
from viewer.geometry import TileAddressError


class ViewerError(Exception):
    """Base: a request the viewer refuses, with a message fit to show to the user."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ViewerError):
    """A malformed number, an unknown colormap or normalisation, a class the slide lacks."""

    status = 400


class SlideForbidden(ViewerError):
    """The slide file lies outside the configured slide roots (directly or through a symlink)."""

    status = 403


class NotFound(ViewerError):
    """An unknown slide id, a tile off the pyramid, a patch index or point with no patch."""

    status = 404


class SlideUnreadable(ViewerError):
    """OpenSlide refuses the slide file (unsupported format, corrupt data)."""

    status = 422


class ViewerConfigError(ValueError):
    """The viewer was started with inputs it cannot serve (missing folder, bad scoring config)."""


def error_body(status: int, message: str) -> dict:
    return {"error": message, "status": status}


def register_error_handlers(app: Flask) -> None:
    """JSON for our errors and for Werkzeug's own (unknown route, wrong method)."""

    @app.errorhandler(ViewerError)
    def _viewer_error(exc: ViewerError):
        return jsonify(error_body(exc.status, exc.message)), exc.status

    @app.errorhandler(ParameterError)
    def _parameter(exc: ParameterError):
        return jsonify(error_body(BadRequest.status, str(exc))), BadRequest.status

    @app.errorhandler(TileAddressError)
    def _tile_address(exc: TileAddressError):
        return jsonify(error_body(404, str(exc))), 404

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        message = exc.description if status < 500 else exc.name
        return jsonify(error_body(status, message or exc.name)), status
