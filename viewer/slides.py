"""Slide pixels through OpenSlide: metadata probes, open slides, Deep Zoom slide tiles.

Slide tiles must equal openslide's `DeepZoomGenerator(tile_size=254, overlap=1,
limit_bounds=True)` pixel for pixel, so they are made by the generator itself; this module only
adds what a server needs around it: slides opened by the one `scoremap.slides.open_slide` that
scoring uses too (a plain PNG that scores also views) and their scale read by its `slide_mpp`,
one `OpenSlideCache` shared by every slide of the process (decoded tiles are reused across Deep
Zoom levels and neighbouring requests), and the slide's ICC profile applied to every tile, patch
and thumbnail, converting to sRGB with the profile's default rendering intent as openslide's own
Deep Zoom server does, so colours in the browser match other viewers. Open slides are entries of
the viewer's one cache (viewer.state).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image, ImageCms

from scoremap.errors import SlideOpenError
from scoremap.slides import READ_ERRORS, error_reason, open_slide, slide_mpp
from viewer.errors import SlideUnreadable
from viewer.geometry import DeepZoomGeometry

_SRGB = ImageCms.createProfile("sRGB")
#: Longest side of a patch image (top-k list, inspector): patches up to 1024 px are shown at level 0.
PATCH_IMAGE_MAX_SIDE = 1024
#: What an open slide is counted as in the byte-bounded cache: OpenSlide's own tables of a
#: large SVS or NDPI (decoded tiles live in the shared OpenSlideCache, counted apart).
OPEN_SLIDE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class SlideInfo:
    """What the API and the tile geometry need of a slide, read once when the cohort loads."""

    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: tuple[float, float] | None  # microns per level-0 pixel (x, y): scoremap.slides.slide_mpp
    objective_power: float | None
    vendor: str | None
    background: str  # hex RGB, '#ffffff' when the slide does not say
    bounds: tuple[int, int, int, int] | None  # openslide.bounds-* (x, y, w, h) when present
    properties: dict[str, str] = field(default_factory=dict)  # only those the geometry reads

    @property
    def mpp_x(self) -> float | None:
        return self.mpp[0] if self.mpp is not None else None

    @property
    def mpp_y(self) -> float | None:
        return self.mpp[1] if self.mpp is not None else None

    def geometry(self, tile_size: int, overlap: int, limit_bounds: bool) -> DeepZoomGeometry:
        return DeepZoomGeometry.for_slide(
            self.dimensions,
            self.level_dimensions,
            self.properties,
            tile_size,
            overlap,
            limit_bounds,
        )


def _float_prop(props, key: str) -> float | None:
    try:
        value = float(props[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if value > 0 else None


def _open(path: Path) -> openslide.AbstractSlide:
    """`scoremap.slides.open_slide`, its refusal as the viewer's 422, naming the file but not its
    folder."""
    try:
        return open_slide(path)
    except SlideOpenError as exc:
        raise SlideUnreadable(f"cannot open {Path(path).name}: {exc.reason}") from None


def _unreadable(path: Path, exc: BaseException) -> SlideUnreadable:
    """A read that failed on a slide that opened (a corrupt tile), as the viewer's 422."""
    return SlideUnreadable(f"OpenSlide cannot read {Path(path).name}: {error_reason(exc)}")


def probe_slide(path: Path) -> SlideInfo:
    """Open the slide, read its metadata and one pixel of its smallest level, close it.

    Reading a pixel catches files that open but cannot be decoded (a corrupt JPEG tile table),
    so the cohort page can say so before anyone asks for a tile.
    """
    slide = _open(path)
    try:
        props = slide.properties
        level = slide.level_count - 1
        slide.read_region((0, 0), level, (1, 1))
        bounds = None
        keys = (
            "openslide.bounds-x",
            "openslide.bounds-y",
            "openslide.bounds-width",
            "openslide.bounds-height",
        )
        if all(k in props for k in keys):
            bounds = tuple(int(props[k]) for k in keys)
        geometry_props = {k: props[k] for k in keys if k in props}
        return SlideInfo(
            dimensions=tuple(slide.dimensions),
            level_dimensions=tuple(tuple(d) for d in slide.level_dimensions),
            level_downsamples=tuple(float(d) for d in slide.level_downsamples),
            mpp=slide_mpp(props),
            objective_power=_float_prop(props, openslide.PROPERTY_NAME_OBJECTIVE_POWER),
            vendor=props.get(openslide.PROPERTY_NAME_VENDOR),
            background="#" + props.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff"),
            bounds=bounds,  # type: ignore[arg-type]
            properties=geometry_props,
        )
    except READ_ERRORS as exc:
        raise _unreadable(path, exc) from None
    finally:
        slide.close()


def srgb_transform(slide: openslide.AbstractSlide) -> ImageCms.ImageCmsTransform | None:
    """The slide profile -> sRGB transform (default intent of the profile), or None without one."""
    profile = slide.color_profile
    if profile is None:
        return None
    intent = ImageCms.getDefaultIntent(profile)
    return ImageCms.buildTransform(profile, _SRGB, "RGB", "RGB", intent, 0)


def to_srgb(image: Image.Image, transform: ImageCms.ImageCmsTransform | None) -> Image.Image:
    """Apply the ICC transform in place (RGB images); no-op without a profile."""
    if transform is not None:
        ImageCms.applyTransform(image, transform, inPlace=True)
        image.info.pop("icc_profile", None)
    return image


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


class OpenedSlide:
    """An open slide with its Deep Zoom generator and ICC transform (thread-safe to read)."""

    def __init__(
        self,
        path: Path,
        cache: openslide.OpenSlideCache | None,
        tile_size: int,
        overlap: int,
        limit_bounds: bool,
    ):
        self.path = path
        self.slide = _open(path)
        if cache is not None:
            self.slide.set_cache(cache)
        self.deepzoom = DeepZoomGenerator(self.slide, tile_size, overlap, limit_bounds)
        self.transform = srgb_transform(self.slide)
        self.background = "#" + self.slide.properties.get(
            openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff"
        )

    def tile(self, dz_level: int, t_col: int, t_row: int) -> Image.Image:
        """The Deep Zoom tile exactly as `DeepZoomGenerator.get_tile` makes it, then to sRGB."""
        try:
            image = self.deepzoom.get_tile(dz_level, (t_col, t_row))
        except READ_ERRORS as exc:
            raise _unreadable(self.path, exc) from None
        return to_srgb(image, self.transform)

    def region(
        self, l0_x: int, l0_y: int, l0_w: int, l0_h: int, max_side: int = PATCH_IMAGE_MAX_SIDE
    ) -> Image.Image:
        """Pixels of a level-0 box on the slide's background colour, in sRGB (patch images): at
        level 0, or for a box wider than `max_side` from the coarsest level that still gives that
        many pixels, scaled to fit (a blockmap with 20,000-px patches must not read 1.6 GB)."""
        side = max(l0_w, l0_h)
        level = 0 if side <= max_side else self.slide.get_best_level_for_downsample(side / max_side)
        ds = self.slide.level_downsamples[level]
        size = (max(1, math.ceil(l0_w / ds)), max(1, math.ceil(l0_h / ds)))
        try:
            rgba = self.slide.read_region((l0_x, l0_y), level, size)
        except READ_ERRORS as exc:
            raise _unreadable(self.path, exc) from None
        if max(rgba.size) > max_side:
            rgba.thumbnail((max_side, max_side), Image.Resampling.BOX)
        image = Image.new("RGB", rgba.size, self.background)
        image.paste(rgba, (0, 0), rgba)
        return to_srgb(image, self.transform)

    def thumbnail(self, size: int) -> Image.Image:
        try:
            image = self.slide.get_thumbnail((size, size))
        except READ_ERRORS as exc:
            raise _unreadable(self.path, exc) from None
        return to_srgb(image.convert("RGB"), self.transform)
