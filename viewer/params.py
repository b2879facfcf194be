"""Parsing what a client sends (path segments and query strings) into checked values, or a 400.

Every number is matched against a strict ASCII pattern before conversion: Python's `int()`
accepts ' 7', '+7', '7_0' and Arabic-Indic digits, and `float()` accepts 'nan' and 'inf'; none of
these is a tile address or a threshold. Out-of-range tile addresses are 404 (the tile does not
exist), malformed ones 400. What a parsed value may be (a class of the slide, a normalisation, a
score on the 0..1 scale) is the core's rule (`scoremap.params`), shared with the exports and the
config; its ParameterError is a 400 too (viewer/errors.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from scoremap.colormap import check_colormap
from scoremap.defaults import OVERLAY
from scoremap.errors import UnknownColormap
from scoremap.params import check_norm, check_score_range, check_threshold
from viewer.errors import BadRequest

_INT = re.compile(r"[0-9]{1,9}")
_SIGNED_INT = re.compile(r"-?[0-9]{1,9}")
_FLOAT = re.compile(r"-?(?:[0-9]{1,12}(?:\.[0-9]{0,12})?|\.[0-9]{1,12})(?:[eE][-+]?[0-9]{1,3})?")
#: The words `blur` takes (in any case), and what each means.
BLUR_WORDS = {
    "0": False,
    "1": True,
    "false": False,
    "true": True,
    "off": False,
    "on": True,
    "no": False,
    "yes": True,
}


def parse_index(name: str, text: str) -> int:
    """A non-negative integer path segment (level, column, row, patch index)."""
    if not isinstance(text, str) or not _INT.fullmatch(text):
        raise BadRequest(f"{name} must be a non-negative integer, got {text[:40]!r}")
    return int(text)


def parse_tile_address(level: str, col: str, row: str) -> tuple[int, int, int]:
    return parse_index("level", level), parse_index("column", col), parse_index("row", row)


def query_int(
    args: Mapping[str, str], name: str, default: int | None, lo: int, hi: int
) -> int | None:
    """An optional integer query parameter within [lo, hi]."""
    text = args.get(name)
    if text is None or text == "":
        return default
    if not _SIGNED_INT.fullmatch(text):
        raise BadRequest(f"{name} must be an integer, got {text[:40]!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def query_float(
    args: Mapping[str, str],
    name: str,
    default: float | None,
    lo: float = -math.inf,
    hi: float = math.inf,
    required: bool = False,
) -> float | None:
    """An optional finite decimal number query parameter within [lo, hi]."""
    text = args.get(name)
    if text is None or text == "":
        if required:
            raise BadRequest(f"{name} is required")
        return default
    if not _FLOAT.fullmatch(text):
        raise BadRequest(f"{name} must be a decimal number, got {text[:40]!r}")
    value = float(text)
    if not (math.isfinite(value) and lo <= value <= hi):
        raise BadRequest(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def query_choice(args: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    text = args.get(name)
    if text is None or text == "":
        return default
    if text not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}, got {text[:40]!r}")
    return text


def parse_cmap(text: str | None, default: str) -> str:
    """A matplotlib colormap name (any registered one, `_r` variants included)."""
    try:
        return check_colormap(default if text is None or text == "" else text)
    except UnknownColormap as exc:
        raise BadRequest(f"cmap: {exc}") from None


def parse_blur(text: str | None) -> bool:
    """`blur`: on/off. Its sigma is tied to the patch size (as in CLAM and the static heatmaps)."""
    if text is None or text == "":
        return bool(OVERLAY["blur"])
    value = BLUR_WORDS.get(text.lower())
    if value is None:
        raise BadRequest(f"blur must be 0 or 1, got {text[:40]!r}")
    return value


def query_text(args: Mapping[str, str], name: str) -> str | None:
    """A query parameter's text, None when it is absent or empty."""
    text = args.get(name)
    return None if text is None or text == "" else text


@dataclass(frozen=True)
class OverlayParams:
    """How to colour an overlay tile: the query string of `/overlay/...` made explicit.

    `class_ref` is the `class` parameter as sent (a class name or index; None: the predicted
    class); the route resolves it against the slide (`SlideScores.resolve_class`).
    """

    cmap: str
    class_ref: str | None
    norm: str
    threshold: float
    blur: bool
    lo: float = OVERLAY["threshold_min"]  # patches scored outside [lo, hi] are not shown at all
    hi: float = OVERLAY["threshold_max"]

    @property
    def range(self) -> tuple[float, float] | None:
        """The patch range, None when it is the whole 0..1 scale."""
        whole = (OVERLAY["threshold_min"], OVERLAY["threshold_max"])
        return None if (self.lo, self.hi) == whole else (self.lo, self.hi)

    @classmethod
    def from_query(
        cls,
        args: Mapping[str, str],
        default_cmap: str | None = None,
        default_norm: str | None = None,
    ) -> OverlayParams:
        """The parameters of a request; what it leaves out comes from the viewer's settings
        (`default_cmap`, `default_norm`) or else `scoremap.defaults.OVERLAY`."""
        threshold = query_float(args, "threshold", OVERLAY["threshold"])
        return cls(
            cmap=parse_cmap(args.get("cmap"), default_cmap or OVERLAY["cmap"]),
            class_ref=query_text(args, "class"),
            norm=check_norm(query_text(args, "norm") or default_norm or OVERLAY["norm"]),
            threshold=check_threshold(float(threshold)),
            blur=parse_blur(args.get("blur")),
            **score_range(args),
        )

    def key(self, class_index: int) -> tuple:
        """What the rendered pixels depend on (with the resolved class), for ETags."""
        return (self.cmap, class_index, self.norm, round(self.threshold, 6), self.blur, self.range)


def score_range(args: Mapping[str, str]) -> dict[str, float]:
    """`lo` and `hi` on the normalised 0..1 scale (default the whole scale), checked and rounded
    by `scoremap.params.check_score_range`."""
    lo = query_float(args, "lo", OVERLAY["threshold_min"])
    hi = query_float(args, "hi", OVERLAY["threshold_max"])
    lo, hi = check_score_range(float(lo), float(hi))
    return {"lo": lo, "hi": hi}
