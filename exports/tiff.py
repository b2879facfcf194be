"""The heatmap as slides of its own: a pyramidal RGBA TIFF, and ASAP's likelihood map.

`{slide_id}_heatmap.tif`: the coloured heatmap at a power-of-two downsample D of level 0 (default:
the largest D <= 32 at which a patch still spans >= 8 pixels), transparent where no patch lies or
the score is under the threshold, as a tiled (256 px), deflate-compressed RGBA TIFF with reduced
levels (each half the previous, down to one tile) marked as such, and resolution tags saying
slide MPP x D: OpenSlide opens it (generic TIFF), and with it openslide's own Deep Zoom servers,
QuPath and our viewer; pixel (i, j) of its level 0 is level-0 [j D, (j+1) D) x [i D, (i+1) D) of
the slide, so it overlays the slide exactly when scaled by D.

`{slide_id}_likelihood_map.tif`: the same geometry, one uint8 channel: the normalised score x 255,
0 where no patch lies (the CAMELYON / ASAP convention: ASAP loads `<slide>_likelihood_map.tif` as an
overlay).

Both are written tile by tile by the window rasteriser (`scoremap.raster`), coarse levels cut from
the score pyramid: a million-patch slide never becomes a full-size canvas.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from exports.options import ExportScores
from scoremap.atomic import atomic_output
from scoremap.colormap import TRANSPARENT, palette
from scoremap.patch_index import PatchIndex
from scoremap.pyramid import ScorePyramid
from scoremap.raster import ScoreSource, Window, window_cells, window_indices

TILE = 256
MAX_DOWNSAMPLE = 32
MIN_PATCH_PIXELS = 8


def default_downsample(l0_patch: int) -> int:
    """The largest power of two <= 32 at which a patch still spans at least 8 pixels."""
    d = 1
    while d * 2 <= MAX_DOWNSAMPLE and l0_patch / (d * 2) >= MIN_PATCH_PIXELS:
        d *= 2
    return d


def _levels(l0_size: tuple[int, int], downsample: int) -> list[tuple[int, int, int]]:
    """(downsample, width, height) of each TIFF level, halving down to one tile."""
    out = []
    d = downsample
    while True:
        w, h = math.ceil(l0_size[0] / d), math.ceil(l0_size[1] / d)
        out.append((d, w, h))
        if w <= TILE and h <= TILE:
            return out
        d *= 2


def _source(scores: ExportScores, l0_size: tuple[int, int]) -> ScoreSource:
    bm = scores.blockmap
    coords = np.asarray(bm.l0_coords, np.int64)
    window = (0, 0, int(l0_size[0]), int(l0_size[1]))
    pyramid = ScorePyramid.build(coords, scores.values01, bm.l0_patch, window, TILE)
    return ScoreSource(
        coords,
        np.asarray(scores.values01, np.float32),
        bm.l0_patch,
        PatchIndex(coords, bm.l0_patch),
        pyramid,
    )


def _tiles(level: tuple[int, int, int], l0_size, paint) -> Iterator[np.ndarray]:
    d, w, h = level
    for r0 in range(0, h, TILE):
        for c0 in range(0, w, TILE):
            rows, cols = min(TILE, h - r0), min(TILE, w - c0)
            tile = paint(Window((0, 0, l0_size[0], l0_size[1]), d, rows, cols, r0, c0))
            if (rows, cols) != (TILE, TILE):  # TIFF tiles are whole: pad the edge ones
                full = np.zeros((TILE, TILE, *tile.shape[2:]), tile.dtype)
                full[:rows, :cols] = tile
                tile = full
            yield tile


def _write(
    path: Path, levels, l0_size, paint, shape_tail: tuple, photometric: str, mpp, extrasamples=None
) -> Path:
    with atomic_output(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=False) as tif:
        for k, level in enumerate(levels):
            d, w, h = level
            kwargs = {}
            if mpp is not None:
                kwargs = {
                    "resolution": (1e4 / (mpp[0] * d), 1e4 / (mpp[1] * d)),
                    "resolutionunit": "CENTIMETER",
                }
            tif.write(
                _tiles(level, l0_size, paint),
                shape=(h, w, *shape_tail),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric=photometric,
                extrasamples=extrasamples,
                compression="zlib",
                compressionargs={"level": 6},
                subfiletype=1 if k else 0,
                metadata=None,
                software="MIL Heatmap Viewer export",
                **kwargs,
            )
    return path


def write_heatmap_tiff(
    scores: ExportScores,
    l0_size: tuple[int, int],
    mpp,
    cmap: str,
    threshold: float | None,
    downsample: int,
    path: Path,
) -> Path:
    source = _source(scores, l0_size)
    colours = np.zeros((256, 4), np.uint8)
    colours[:, :3] = palette(cmap)
    colours[:TRANSPARENT, 3] = 255

    def paint(window: Window) -> np.ndarray:
        indices = window_indices(source, window, threshold=threshold)
        if indices is None:
            return np.zeros((window.rows, window.cols, 4), np.uint8)
        return colours[indices]

    return _write(
        path, _levels(l0_size, downsample), l0_size, paint, (4,), "rgb", mpp, ["UNASSALPHA"]
    )


def write_likelihood_map(
    scores: ExportScores, l0_size: tuple[int, int], mpp, downsample: int, path: Path
) -> Path:
    source = _source(scores, l0_size)

    def paint(window: Window) -> np.ndarray:
        values = window_cells(source, window).expand()
        return np.where(np.isfinite(values), np.rint(np.clip(values, 0, 1) * 255), 0).astype(
            np.uint8
        )

    return _write(path, _levels(l0_size, downsample), l0_size, paint, (), "minisblack", mpp)
