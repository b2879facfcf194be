"""The current heatmap view as a PNG: what the pane shows, with its legend burned in.

A level-0 box of the slide, read at the pyramid level nearest the asked width and scaled to it,
with the overlay blended at the page's opacity (painted by the one window rasteriser for exactly
that box and downsample), and under it a band with the slide id, the class, the colormap and
normalisation, the colorbar and a scale bar from the slide's MPP. For figures and reports: the
pixels are the viewer's, at a resolution the user chose.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scoremap.colormap import TRANSPARENT, colorbar, palette
from scoremap.raster import ScoreSource, Window, window_indices
from viewer.errors import SlideUnreadable
from viewer.slides import READ_ERRORS, OpenedSlide, SlideInfo, to_srgb

BAND = 64  # px of legend under the picture
_NICE_UM = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def _scale_bar(mpp: float | None, um_per_px: float, width: int) -> tuple[int, str] | None:
    if mpp is None:
        return None
    for um in _NICE_UM:
        px = um / um_per_px
        if px >= width / 8:
            return round(px), (f"{um} µm" if um < 1000 else f"{um // 1000} mm")
    return None


def render_view(
    opened: OpenedSlide,
    info: SlideInfo,
    source: ScoreSource,
    box: tuple[int, int, int, int],
    width: int,
    cmap: str,
    threshold: float,
    blur: bool,
    alpha: float,
    title: str,
) -> bytes:
    x, y, w, h = box
    d = w / width
    height = max(1, round(h / d))
    level = opened.slide.get_best_level_for_downsample(d)
    ds = opened.slide.level_downsamples[level]
    try:
        region = opened.slide.read_region(
            (x, y), level, (max(1, math.ceil(w / ds)), max(1, math.ceil(h / ds)))
        )
    except READ_ERRORS as exc:
        raise SlideUnreadable(f"cannot read the view: {exc}") from None
    base = Image.new("RGB", region.size, opened.background)
    base.paste(region, (0, 0), region)
    picture = to_srgb(base, opened.transform).resize((width, height), Image.Resampling.LANCZOS)
    indices = window_indices(
        source, Window((x, y, w, h), d, height, width), threshold=threshold or None, blur=blur
    )
    if indices is not None:
        colours = Image.fromarray(palette(cmap)[indices], "RGB")
        mask = Image.fromarray(
            np.where(indices == TRANSPARENT, 0, round(alpha * 255)).astype(np.uint8), "L"
        )
        picture.paste(colours, (0, 0), mask)
    out = Image.new("RGB", (width, height + BAND), "white")
    out.paste(picture, (0, 0))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    draw.text((8, height + 6), title, fill="black", font=font)
    bar_w = min(256, width // 3)
    out.paste(colorbar(cmap, bar_w, 12), (8, height + 26))
    draw.text((8, height + 42), "low", fill="black", font=font)
    draw.text((8 + bar_w - 24, height + 42), "high", fill="black", font=font)
    mpp = info.mpp_x
    bar = _scale_bar(mpp, (mpp or 0) * d, width)
    if bar is not None:
        px, label = bar
        x1 = width - 12
        draw.rectangle((x1 - px, height + 30, x1, height + 34), fill="black")
        draw.text((x1 - px, height + 40), label, fill="black", font=font)
    buf = io.BytesIO()
    out.save(buf, "PNG", compress_level=6)
    return buf.getvalue()
