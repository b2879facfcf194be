"""The rules for the values a user chooses, each written once.

The viewer's query parameters (`viewer.params`), the export command's options (`exports.cli`) and
the scoring config's keys (`scoring.config.values`) all call these. Each takes a value already
converted from its medium (query text, argparse, YAML) and the parameter's name as the caller
spells it (`class`, `--class`), and returns the checked value or raises `ParameterError`, whose
message is "<name> must be <expected>, got <value>". The colormap's rule is
`scoremap.colormap.check_colormap` (it suggests close names).
"""

from __future__ import annotations

import math
import re
from typing import Protocol

from scoremap.defaults import OVERLAY
from scoremap.errors import ParameterError
from scoremap.normalize import NORMS

_INDEX = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() also takes '١'


class SlideClasses(Protocol):
    """What a scored slide says about its classes (a `Blockmap` or a `BlockmapHeader`)."""

    @property
    def slide_id(self) -> str: ...
    @property
    def model_type(self) -> str: ...
    @property
    def class_names(self) -> list[str]: ...
    @property
    def pred(self) -> int: ...
    @property
    def has_per_class(self) -> bool: ...


def resolve_class(slide: SlideClasses, ref: str | int | None, name: str = "class") -> int:
    """The index of the class `ref` names: one of the slide's class names, else an index (an int
    or its ASCII digits); None: the predicted class. ParameterError when the slide has no such
    class, or keeps attention for its predicted class only."""
    if ref is None:
        return slide.pred
    names = slide.class_names
    if isinstance(ref, str) and ref in names:
        index = names.index(ref)
    elif isinstance(ref, int) and not isinstance(ref, bool):
        index = ref
    elif isinstance(ref, str) and _INDEX.fullmatch(ref):
        index = int(ref)
    else:
        index = -1
    if not 0 <= index < len(names):
        listing = ", ".join(f"{i} ({n})" for i, n in enumerate(names))
        raise ParameterError(name, ref, f"a class of slide {slide.slide_id}: {listing}")
    if index != slide.pred and not slide.has_per_class:
        raise ParameterError(
            name,
            ref,
            f"the predicted class of slide {slide.slide_id}, {slide.pred} "
            f"({names[slide.pred]}): {slide.model_type} stores attention for that class only",
        )
    return index


def check_norm(value: object, name: str = "norm") -> str:
    """A normalisation of the scores onto 0..1 (`scoremap.normalize.NORMS`)."""
    if isinstance(value, str) and value in NORMS:
        return value
    raise ParameterError(name, value, f"one of {', '.join(NORMS)}")


def _number_in(value: object, lo: float, hi: float) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and lo <= value <= hi
    )


def check_fraction(value: float, name: str, expected: str = "a number between 0 and 1") -> float:
    """A finite number in [0, 1]."""
    if _number_in(value, 0.0, 1.0):
        return float(value)
    raise ParameterError(name, value, expected)


def check_threshold(value: float, name: str = "threshold") -> float:
    """A score on the normalised scale (`OVERLAY` threshold_min..threshold_max): a threshold or
    an end of a score range."""
    lo, hi = OVERLAY["threshold_min"], OVERLAY["threshold_max"]
    assert isinstance(lo, float) and isinstance(hi, float)  # narrows the mapping's value type
    if _number_in(value, lo, hi):
        return float(value)
    raise ParameterError(name, value, f"a normalised score between {lo:g} and {hi:g}")


def check_score_range(
    lo: float, hi: float, names: tuple[str, str] = ("lo", "hi")
) -> tuple[float, float]:
    """Two ends of a band of normalised scores, lo <= hi, rounded to 1e-4 (a dragged slider must
    not make every position a new pyramid)."""
    lo = round(check_threshold(lo, names[0]), 4)
    hi = round(check_threshold(hi, names[1]), 4)
    if lo > hi:
        raise ParameterError(names[0], lo, f"at most {names[1]} ({hi:g})")
    return lo, hi


def check_alpha(value: float, name: str = "alpha") -> float:
    """The heatmap's opacity over the slide."""
    return check_fraction(value, name, "a number between 0 and 1 (0: slide only, 1: heatmap only)")
