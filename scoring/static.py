"""Static heatmaps: the slide at `vis_level` with the attention colours blended where patches lie.

The `{slide_id}_heatmap.{ext}` and `{slide_id}_original.{ext}` images of SPEC §3, rendered fast
and in little memory. CLAM reads the whole level, paints a float overlay of the same size,
colours it with matplotlib and blends in float: ~6 full-size float copies (1.7 GB at 4x of a
40000x30000 slide). Here one uint8 numpy canvas holds the image; it is filled in horizontal strips
worked on by a thread pool (OpenSlide decoding and Pillow's resampling release the GIL):

    read_region(strip) -> RGB [box downsample for custom_downsample] -> canvas  => original
    window_indices(strip) (scoremap.raster) -> Pillow palette colours,
        alpha-masked paste onto the canvas (the blend, in C)                     => heatmap

imagecodecs (libjpeg-turbo, libpng) or tifffile encode both files straight from the numpy canvas,
each under a hidden name renamed when complete (`scoremap.atomic`).
Planes (see scoremap.grid): l0_ level-0 pixels, l_ pixels of the chosen level, o_ pixels of
the output image (l_ divided by `custom_downsample`).
"""

from __future__ import annotations

import math
import os
from collections import deque, namedtuple
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openslide
from PIL import Image

from scoremap.atomic import atomic_output
from scoremap.colormap import TRANSPARENT, palette
from scoremap.defaults import HEATMAP_ARGUMENTS
from scoremap.normalize import normalize_scores
from scoremap.patch_index import PatchIndex
from scoremap.raster import ScoreSource, Window, window_indices
from scoring.config.schema import check_heatmap_arguments
from scoring.errors import ConfigError, FeatureError

TARGET_DOWNSAMPLE = 32.0  # vis_level -1: the level whose downsample is closest to this
JPEG_QUALITY = 90
PNG_DEFLATE_LEVEL = 1  # ~3x faster than Pillow's default 6 (what CLAM writes), files ~15% larger
_STRIP_PIXELS = 2_600_000  # level pixels per strip: ~10 MB RGBA read, ~50 MB of work in flight
_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}
_JPEG_MAX_SIDE = 65_500


#: What shapes one static image: the `heatmap_arguments` (their names and defaults are
#: `scoremap.defaults.HEATMAP_ARGUMENTS`, each checked by the config's rule for its key) and `roi`,
#: the level-0 box x1, y1, x2, y2 to render instead of the whole slide.
HeatmapParams = namedtuple(
    "HeatmapParams", (*HEATMAP_ARGUMENTS, "roi"), defaults=(*HEATMAP_ARGUMENTS.values(), None)
)


def choose_vis_level(slide: openslide.AbstractSlide, vis_level: int) -> int:
    """The pyramid level to render: `vis_level` itself, or for -1 the level closest to 32x.

    "Closest" is by downsample distance, ties to the finer level. Unlike OpenSlide's
    `get_best_level_for_downsample(32)` (which CLAM uses), a level at 31.99x counts as 32x
    rather than falling back to 16x, because scanners rarely produce exact powers of two.
    """
    n = slide.level_count
    if (
        isinstance(vis_level, bool)
        or not isinstance(vis_level, (int, np.integer))
        or not -1 <= int(vis_level) < n
    ):
        raise ConfigError(
            f"heatmap_arguments.vis_level: {vis_level!r} is not a level of this slide; expected an "
            f"integer 0..{n - 1} ({n} levels) or -1 for the level closest to {TARGET_DOWNSAMPLE:g}x"
        )
    if int(vis_level) >= 0:
        return int(vis_level)
    gaps = [abs(ds - TARGET_DOWNSAMPLE) for ds in slide.level_downsamples]
    return int(np.argmin(gaps))


# ----------------------------------------------------------------------------------------------
# geometry


@dataclass(frozen=True)
class _Strip:
    """One horizontal band of the output image and the level rows needed to make it."""

    o_row0: int
    o_row1: int
    l_row0: int  # level rows read: o rows scaled, plus a resampling halo when downsampling
    l_row1: int


@dataclass(frozen=True)
class _Geometry:
    """Where the image lies on the slide and how it is cut into strips."""

    level: int
    downsample: float
    l0_window: tuple[int, int, int, int]  # x, y, w, h of the rendered box at level 0
    l_size: tuple[int, int]  # (w, h) of the box at the level
    o_size: tuple[int, int]  # (w, h) of the written images
    strips: tuple[_Strip, ...]
    o_strip_rows: int  # every strip but the last has this many output rows

    @property
    def resized(self) -> bool:
        return self.o_size != self.l_size


def _roi_window(
    slide: openslide.AbstractSlide, roi: tuple[int, int, int, int] | None
) -> tuple[int, int, int, int]:
    """The level-0 box to render: the ROI clipped to the slide, or the whole slide."""
    l0_w, l0_h = slide.dimensions
    if roi is None:
        return 0, 0, l0_w, l0_h
    try:
        x1, y1, x2, y2 = (round(float(v)) for v in roi)
    except (TypeError, ValueError):
        raise ConfigError(
            f"ROI x1,y1,x2,y2: expected four level-0 pixel numbers, got {roi!r}"
        ) from None
    cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(l0_w, x2), min(l0_h, y2)
    if cx2 <= cx1 or cy2 <= cy1:
        raise ConfigError(
            f"ROI x1,y1,x2,y2: ({x1}, {y1}, {x2}, {y2}) is empty or outside the "
            f"{l0_w}x{l0_h} slide; expected x1 < x2, y1 < y2 within the slide"
        )
    return cx1, cy1, cx2 - cx1, cy2 - cy1


def _geometry(slide: openslide.AbstractSlide, params: HeatmapParams) -> _Geometry:
    level = choose_vis_level(slide, params.vis_level)
    ds = float(slide.level_downsamples[level])
    l0_window = _roi_window(slide, params.roi)
    if params.roi is None:
        l_w, l_h = slide.level_dimensions[level]
    else:
        l_w = max(1, math.ceil(l0_window[2] / ds - 1e-9))
        l_h = max(1, math.ceil(l0_window[3] / ds - 1e-9))
    cd = float(params.custom_downsample)
    o_w, o_h = (l_w, l_h) if cd == 1 else (max(1, int(l_w / cd)), max(1, int(l_h / cd)))

    tile_h = int(slide.properties.get(f"openslide.level[{level}].tile-height", 0) or 0)
    l_rows = max(16, _STRIP_PIXELS // max(1, l_w))
    if o_h == l_h:
        if 0 < tile_h <= l_rows:  # whole tile rows per strip: no tile is decoded twice
            l_rows = l_rows // tile_h * tile_h
        o_rows = min(l_rows, o_h)
        strips = tuple(
            _Strip(r, min(o_h, r + o_rows), r, min(o_h, r + o_rows)) for r in range(0, o_h, o_rows)
        )
    else:
        sy = l_h / o_h
        o_rows = max(1, min(o_h, int(l_rows / sy)))
        halo = 2  # box filter support is half an output pixel; 2 level rows cover rounding
        strips = tuple(
            _Strip(
                r,
                min(o_h, r + o_rows),
                max(0, math.floor(r * sy) - halo),
                min(l_h, math.ceil(min(o_h, r + o_rows) * sy) + halo),
            )
            for r in range(0, o_h, o_rows)
        )
    return _Geometry(level, ds, l0_window, (l_w, l_h), (o_w, o_h), strips, o_rows)


def _format(path: Path) -> str:
    fmt = _FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"heatmap_arguments.save_ext: cannot write {Path(path).name!r}; expected "
            f"one of png, jpg, jpeg, tiff (tif)"
        )
    return fmt


def _png_bytes(canvas: np.ndarray) -> bytes | memoryview:
    """libpng's fast settings (zlib level 1, Sub filter, RLE strategy: OpenCV's), into a buffer a
    third of the raw size: H&E compresses to about a quarter, and letting imagecodecs size the
    buffer itself would reserve as much again as the canvas. Incompressible images retry."""
    import imagecodecs

    options = {
        "level": PNG_DEFLATE_LEVEL,
        "strategy": imagecodecs.PNG.STRATEGY.RLE,
        "filter": imagecodecs.PNG.FILTER.SUB,
    }
    try:
        return imagecodecs.png_encode(canvas, out=bytearray(canvas.nbytes // 3 + 65536), **options)
    except imagecodecs.PngError:
        return imagecodecs.png_encode(canvas, **options)


def _save(canvas: np.ndarray, path: Path, fmt: str) -> None:
    """Encode the (h, w, 3) canvas straight from numpy (imagecodecs' libjpeg-turbo and libpng,
    tifffile): no 4-byte-per-pixel Pillow copy of a full-size image. Written under a temporary
    name; the rename makes the file appear complete."""
    import imagecodecs
    import tifffile

    h, w, _ = canvas.shape
    if fmt == "jpeg" and max(h, w) > _JPEG_MAX_SIDE:
        raise ConfigError(
            f"heatmap_arguments.save_ext: a {w}x{h} image is too large for JPEG (at most {_JPEG_MAX_SIDE} px "
            f"a side); use png or tiff, a coarser vis_level or a custom_downsample"
        )
    with atomic_output(path) as tmp:
        if fmt == "jpeg":
            tmp.write_bytes(imagecodecs.jpeg8_encode(canvas, level=JPEG_QUALITY))
        elif fmt == "png":
            tmp.write_bytes(_png_bytes(canvas))
        else:
            tifffile.imwrite(
                tmp,
                canvas,
                photometric="rgb",
                compression="zlib",
                compressionargs={"level": 1},
                rowsperstrip=256,
                software="MIL Heatmap Viewer",
            )


# ----------------------------------------------------------------------------------------------
# rendering


def _workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _ordered_map(
    fn: Callable[[_Strip], Any], items: Iterable[_Strip], workers: int
) -> Iterator[Any]:
    """fn over items on a thread pool, results in order, at most ~2 per worker in flight.

    Bounding the look-ahead bounds memory: finished strips wait only for earlier ones.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="heatmap-strip") as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def _background(slide: openslide.AbstractSlide) -> tuple[int, int, int]:
    """The slide's declared background (OpenSlide property), else white: shown where it has no pixels."""
    value = slide.properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR)
    try:
        if value and len(value) == 6:
            r, g, b = bytes.fromhex(value)
            return r, g, b
    except ValueError:
        pass
    return 255, 255, 255


def _binary_shown(grid: np.ndarray) -> np.ndarray:
    """binarize: pixels whose patches are mostly above the threshold show the top colour, the
    rest stay uncoloured (slide or blank canvas), so only the selected patches stand out."""
    return np.where(np.rint(grid) >= 1, 1.0, np.nan)


class _Painter:
    """Renders strips onto one output canvas: slide pixels first, then the colour blend."""

    def __init__(
        self,
        slide: openslide.AbstractSlide,
        geo: _Geometry,
        params: HeatmapParams,
        l0_coords: np.ndarray,
        values01: np.ndarray,
        l0_patch: float,
    ):
        self.slide, self.geo, self.params = slide, geo, params
        # the index finds each strip's patches without visiting the whole bag
        coords = np.asarray(l0_coords, np.int64)
        index = PatchIndex(coords, int(l0_patch)) if len(coords) else None
        self.source = ScoreSource(coords, np.asarray(values01, np.float64), int(l0_patch), index)
        self.background = _background(slide)
        self.palette_bytes = palette(params.cmap).tobytes()
        opacity = round(params.alpha * 255)
        self.mask_lut = [opacity] * TRANSPARENT + [0]
        # The colour is painted on the output raster: its downsample from level 0 includes
        # custom_downsample, so registration holds on the written image whatever its size.
        l_w, o_w = geo.l_size[0], geo.o_size[0]
        self.o_downsample = geo.downsample * l_w / o_w if geo.resized else geo.downsample

    def slide_strip(self, strip: _Strip) -> np.ndarray:
        """The strip's slide pixels at output size, (rows, o_w, 3 or 4) uint8 of which the first
        three channels are RGB; transparent scan areas show the slide's background colour rather
        than black. Opaque strips (most) go to the canvas with a single copy."""
        geo = self.geo
        l_w, rows = geo.l_size[0], strip.l_row1 - strip.l_row0
        l0_x = geo.l0_window[0]
        l0_y = round(geo.l0_window[1] + strip.l_row0 * geo.downsample)
        region = self.slide.read_region((l0_x, l0_y), geo.level, (l_w, rows))
        if not geo.resized:
            pixels = np.asarray(region)
            if pixels[..., 3].min() == 255:
                return pixels
        if region.getchannel("A").getextrema()[0] < 255:
            base = Image.new("RGBA", region.size, (*self.background, 255))
            base.alpha_composite(region)
            region = base
        region = region.convert("RGB")
        if geo.resized:
            (l_w, l_h), (o_w, o_h) = geo.l_size, geo.o_size
            sy = l_h / o_h
            box = (
                0.0,
                strip.o_row0 * sy - strip.l_row0,
                float(l_w),
                strip.o_row1 * sy - strip.l_row0,
            )
            region = region.resize(
                (o_w, strip.o_row1 - strip.o_row0), Image.Resampling.BOX, box=box
            )
        return np.asarray(region)

    def indices(self, strip: _Strip) -> tuple[np.ndarray, int] | None:
        """Palette indices of the strip's output rows (the one window rasteriser, as tiles and
        exports use it), cropped to the columns that show colour (glass on either side of the
        tissue is neither coloured nor copied), with the crop's first column; None when no patch
        colours the strip."""
        geo, p = self.geo, self.params
        window = Window(
            geo.l0_window,
            self.o_downsample,
            strip.o_row1 - strip.o_row0,
            geo.o_size[0],
            strip.o_row0,
            0,
        )
        idx = window_indices(
            self.source, window, blur=p.blur, transform=_binary_shown if p.binarize else None
        )
        if idx is None:
            return None
        cols = np.flatnonzero((idx != TRANSPARENT).any(axis=0))
        if cols.size == 0:
            return None
        return np.ascontiguousarray(idx[:, cols[0] : cols[-1] + 1]), int(cols[0])

    def blend(
        self, canvas: np.ndarray, strip: _Strip, found: tuple[np.ndarray, int] | None
    ) -> None:
        """alpha * colour + (1 - alpha) * canvas where a patch lies, in place (Pillow's masked
        paste does the arithmetic in C, on a copy of just the block that patches touch)."""
        if found is None:
            return
        idx, o_col0 = found
        h, w = idx.shape
        block = canvas[strip.o_row0 : strip.o_row0 + h, o_col0 : o_col0 + w]
        colour = Image.frombuffer("P", (w, h), idx, "raw", "P", 0, 1)
        colour.putpalette(self.palette_bytes, "RGB")
        mask = Image.frombuffer("L", (w, h), idx, "raw", "L", 0, 1).point(self.mask_lut)
        mixed = Image.fromarray(block)
        mixed.paste(colour.convert("RGB"), (0, 0), mask)
        block[...] = np.asarray(mixed)


def _check_params(params: HeatmapParams) -> None:
    """Parameters built in code get the config's checks: ConfigError naming the config key."""
    check_heatmap_arguments(params._asdict())


def render_static(
    slide: openslide.AbstractSlide,
    l0_coords: np.ndarray,
    scores: np.ndarray,
    l0_patch: int,
    params: HeatmapParams,
    heatmap_path: Path,
    original_path: Path | None,
) -> None:
    """Write the heatmap (and, when `original_path` is given, the plain slide) at `params.vis_level`.

    The heatmap is the slide with each pixel under a patch replaced by alpha * colour + (1 -
    alpha) * slide, colour being the colormap at the patch's normalised score (the mean where
    patches overlap); pixels outside every patch keep the slide's values. Both images have the
    same size and registration: the level (or ROI) size, divided by `custom_downsample`.
    The file format follows each path's extension (png, jpg/jpeg, tif/tiff).
    """
    _check_params(params)
    heat_fmt = _format(heatmap_path)
    orig_fmt = _format(original_path) if original_path is not None else None
    coords = np.asarray(l0_coords)
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if coords.ndim != 2 or coords.shape[1] != 2 or values.shape != (coords.shape[0],):
        raise FeatureError(
            f"coords {coords.shape} and scores {np.shape(scores)} do not match: "
            f"expected (N, 2) level-0 coordinates and N scores"
        )
    if not l0_patch or l0_patch <= 0:
        raise FeatureError(f"level-0 patch size must be positive, got {l0_patch!r}")
    geo = _geometry(slide, params)
    if params.roi is not None:
        # As CLAM does for an ROI: only the patches that reach into it are drawn and ranked, so
        # percentiles (and raw min-max) describe the region being looked at.
        l0_x, l0_y, l0_w, l0_h = geo.l0_window
        inside = (
            (coords[:, 0] < l0_x + l0_w)
            & (coords[:, 0] + l0_patch > l0_x)
            & (coords[:, 1] < l0_y + l0_h)
            & (coords[:, 1] + l0_patch > l0_y)
        )
        coords, values = coords[inside], values[inside]

    values01 = normalize_scores(values, "percentile" if params.convert_to_percentiles else "raw")
    if params.binarize:
        thresh = params.binary_thresh if params.binary_thresh >= 0 else 1.0 / max(1, len(values01))
        values01 = np.where(np.isnan(values01), np.nan, (values01 >= thresh).astype(np.float64))

    painter = _Painter(slide, geo, params, coords, values01, float(l0_patch))
    workers = _workers()
    # One canvas for both images: the slide first (saved as the original), then the colours
    # blended into it in place. Peak memory is one output image plus a few strips in flight.
    o_w, o_h = geo.o_size
    canvas = np.empty((o_h, o_w, 3), np.uint8)
    if original_path is not None or not params.blank_canvas:
        for strip, pixels in zip(
            geo.strips, _ordered_map(painter.slide_strip, geo.strips, workers), strict=True
        ):
            canvas[strip.o_row0 : strip.o_row1] = pixels[..., :3]
            del pixels
        if original_path is not None:
            _save(canvas, original_path, orig_fmt)  # type: ignore[arg-type]
    if params.blank_canvas:
        canvas.fill(255)
    if params.alpha > 0:
        for strip, found in zip(
            geo.strips, _ordered_map(painter.indices, geo.strips, workers), strict=True
        ):
            painter.blend(canvas, strip, found)
    _save(canvas, heatmap_path, heat_fmt)
