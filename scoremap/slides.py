"""Opening a slide file and reading its scale: the one rule that scoring, the viewer and the exports
share (which file belongs to a blockmap is `scoremap.slide_paths`).

OpenSlide for every format it reads (Aperio SVS, Hamamatsu NDPI, generic tiled TIFF, DICOM,
MIRAX, ...), and Pillow (openslide's `ImageSlide`) for plain images such as PNG or JPEG crops, so a
slide that scores is a slide that views. A file neither can read raises `SlideOpenError` naming
the file and the reason, on both sides alike.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import openslide
import PIL
from PIL import Image

from scoremap.errors import SlideOpenError

#: What OpenSlide and Pillow raise for a file they cannot read (a decompression-bomb refusal too).
READ_ERRORS: tuple[type[BaseException], ...] = (
    openslide.OpenSlideError,
    OSError,
    ValueError,
    Image.DecompressionBombError,
)


def error_reason(exc: BaseException) -> str:
    """The first line of an exception's message (OpenSlide's can be long), its type when empty."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def slide_mpp(properties: Mapping[str, str]) -> tuple[float, float] | None:
    """Microns per level-0 pixel (x, y) as the slide records them (`openslide.mpp-x`, `-y`); None
    unless both are positive finite numbers (areas and scale bars need both axes)."""
    try:
        x = float(properties[openslide.PROPERTY_NAME_MPP_X])
        y = float(properties[openslide.PROPERTY_NAME_MPP_Y])
    except (KeyError, TypeError, ValueError):
        return None
    return (x, y) if all(math.isfinite(v) and v > 0 for v in (x, y)) else None


def open_slide(path: os.PathLike[str] | str) -> openslide.AbstractSlide:
    """An open slide; SlideOpenError (with `.path` and `.reason`) when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise SlideOpenError(
            f"{path}: slide file not found", path=path, reason="slide file not found"
        )
    try:
        return openslide.open_slide(str(path))
    except PIL.UnidentifiedImageError:
        reason = (
            "OpenSlide cannot open it: not a format OpenSlide reads, nor a plain image Pillow reads"
        )
    except READ_ERRORS as exc:
        reason = f"OpenSlide cannot open it ({error_reason(exc)})"
    raise SlideOpenError(f"{path}: {reason}", path=path, reason=reason)
