"""The score pyramid: normalised scores as a multi-resolution raster, for views that meet many patches.

Why. A tile of a coarse Deep Zoom level covers a large part of the slide: with a million
overlapping patches (256 px every 32 px, as TRIDENT and CLAM heatmap bags are cut) one tile meets
up to the whole bag, and painting it patch by patch costs 200-300 ms. The screen only shows
256 x 256 pixels of it, so such tiles are cut from a raster computed once per slide, class and
normalisation, and their cost follows the screen, not the bag.

What it holds. Level 0 of the pyramid is the raster of the finest Deep Zoom level it serves (its
downsample `base_downsample`, a power of two, origin at the Deep Zoom origin), painted by the same
rule as every other raster (`grid.cell_grid`: each pixel the plain mean of the patches touching it,
overlapping patches averaged, NaN where none lies). Each coarser level averages 2 x 2 cells of the
one below, weighted by how many of them patches cover (coverage-weighted: glass does not dilute
the tissue next to it, and a cell is coloured wherever a patch touches it), down to 1 x 1. Level k
is therefore exactly the Deep Zoom level of downsample `base_downsample * 2**k`, pixel for pixel,
so registration is the same as for directly painted tiles (within one screen pixel).
Scores are kept as float16 (error < 2.5e-4 on [0, 1], a sixteenth of a palette step), not colours:
colormap, threshold and opacity stay live.

How fine. The pyramid serves the levels whose tiles would meet more than `COARSE_PATCHES` patches
(deeper tiles are painted exactly from their few patches), but its base never has more than
`MAX_BASE_CELLS` cells: for a 40000 x 30000 slide that is a 2500 x 1875 base at 16x, 12.5 MB for
all levels. Levels between the two are painted directly; they meet at most a few times
`COARSE_PATCHES` patches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scoremap.grid import cell_grid
from scoremap.patch_index import PatchIndex

COARSE_PATCHES = 4096  # a tile meeting more patches than this is cut from the pyramid
MAX_BASE_CELLS = 1 << 23  # 8.4 M cells: 16 MB of float16 at the base, 21 MB for every level
_BLOCK_CELLS = 1 << 20  # base rows are painted in blocks of ~1 M cells (bounded build memory)


def max_patches_per_tile(index: PatchIndex, l0_coords: np.ndarray, l0_origin: tuple[float, float],
                         l0_tile: float) -> int:
    """The largest number of patches that meet one tile of side `l0_tile` (level-0 px) of the tile
    lattice anchored at `l0_origin`: a 2-D difference array over the tiles each patch spans."""
    if len(l0_coords) == 0:
        return 0
    s = index.l0_patch
    rel = np.asarray(l0_coords, np.float64) - np.asarray(l0_origin, np.float64)
    t0 = np.floor(rel / l0_tile).astype(np.int64)
    t1 = np.floor((rel + s - 1) / l0_tile).astype(np.int64) + 1  # exclusive
    lo = t0.min(axis=0)
    t0 -= lo
    t1 -= lo
    nx, ny = int(t1[:, 0].max()) + 1, int(t1[:, 1].max()) + 1
    stride = nx
    corners = np.concatenate((t0[:, 1] * stride + t0[:, 0], t1[:, 1] * stride + t1[:, 0],
                              t0[:, 1] * stride + t1[:, 0], t1[:, 1] * stride + t0[:, 0]))
    signs = np.repeat(np.array([1.0, 1.0, -1.0, -1.0]), len(rel))
    counts = np.bincount(corners, weights=signs, minlength=ny * stride).reshape(ny, stride)
    return int(round(counts.cumsum(0).cumsum(1).max()))


def coarse_downsample(index: PatchIndex, l0_coords: np.ndarray, l0_origin: tuple[float, float],
                      tile_size: int, max_downsample: int) -> int | None:
    """The smallest power-of-two downsample whose tiles meet more than COARSE_PATCHES patches
    (None: no level does). Tiles of coarser levels are unions of finer ones, so the count grows
    with the downsample and a binary search over the exponents finds the first."""
    top = int(math.log2(max(1, max_downsample)))
    if max_patches_per_tile(index, l0_coords, l0_origin, tile_size * 2 ** top) <= COARSE_PATCHES:
        return None
    lo, hi = 0, top  # the answer's exponent lies in (lo - 1, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if max_patches_per_tile(index, l0_coords, l0_origin, tile_size * 2 ** mid) > COARSE_PATCHES:
            hi = mid
        else:
            lo = mid + 1
    return 2 ** hi


def base_downsample_for(l0_window: tuple[float, float, float, float], coarse: int) -> int:
    """The pyramid's base: `coarse`, or coarser until the base raster fits MAX_BASE_CELLS."""
    d = max(1, int(coarse))
    while math.ceil(l0_window[2] / d) * math.ceil(l0_window[3] / d) > MAX_BASE_CELLS:
        d *= 2
    return d


def _halve(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2 x 2 coverage-weighted means of a level (odd edges padded with empty cells) and the cells'
    coverage (how many base-level cells below each are covered)."""
    h, w = values.shape
    ph, pw = h + (h & 1), w + (w & 1)
    if (ph, pw) != (h, w):
        values = np.pad(values, ((0, ph - h), (0, pw - w)), constant_values=0.0)
        weights = np.pad(weights, ((0, ph - h), (0, pw - w)), constant_values=0.0)
    wsum = weights.reshape(ph // 2, 2, pw // 2, 2).sum(axis=(1, 3))
    vsum = (values * weights).reshape(ph // 2, 2, pw // 2, 2).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(wsum > 0, vsum / np.maximum(wsum, 1e-30), 0.0)
    return mean.astype(np.float32), wsum


@dataclass(frozen=True)
class ScorePyramid:
    """Normalised scores of one slide, class and normalisation at downsamples base * 2**k."""

    l0_window: tuple[int, int, int, int]  # the Deep Zoom window: origin and extent, level 0
    base_downsample: int
    coarse_downsample: int  # tiles at this downsample or coarser come from here
    levels: tuple[np.ndarray, ...]  # float16, NaN where no patch lies; levels[k] at base * 2**k

    @property
    def nbytes(self) -> int:
        return int(sum(level.nbytes for level in self.levels))

    @classmethod
    def build(cls, l0_coords: np.ndarray, values01: np.ndarray, l0_patch: int, index: PatchIndex,
              l0_window: tuple[int, int, int, int], tile_size: int) -> ScorePyramid | None:
        """The pyramid of a bag on a Deep Zoom window, or None when no tile meets many patches."""
        wx, wy, ww, wh = (int(v) for v in l0_window)
        top = 2 ** math.ceil(math.log2(max(ww, wh, 1)))
        coarse = coarse_downsample(index, l0_coords, (wx, wy), tile_size, top)
        if coarse is None:
            return None
        d = base_downsample_for(l0_window, coarse)
        rows, cols = math.ceil(wh / d), math.ceil(ww / d)
        base = np.empty((rows, cols), np.float32)
        block = max(1, _BLOCK_CELLS // cols)
        for r0 in range(0, rows, block):
            r1 = min(rows, r0 + block)
            near = index.overlapping(wx - d, wy + r0 * d - d, wx + ww + d, wy + r1 * d + d)
            if near.size == 0:
                base[r0:r1] = np.nan
                continue
            cells = cell_grid(l0_coords[near], values01[near], l0_patch, d, l0_window, (r1 - r0, cols), (r0, 0))
            base[r0:r1] = cells.expand()
        covered = np.isfinite(base)
        weights = covered.astype(np.float32)
        values = np.where(covered, base, 0.0).astype(np.float32)
        levels = [np.where(covered, base, np.nan).astype(np.float16)]
        del base
        while values.shape[0] > 1 or values.shape[1] > 1:
            values, weights = _halve(values, weights)
            levels.append(np.where(weights > 0, values, np.nan).astype(np.float16))
        for level in levels:
            level.setflags(write=False)
        return cls((wx, wy, ww, wh), d, max(coarse, d), tuple(levels))

    def serves(self, downsample: float, l0_origin: tuple[float, float]) -> bool:
        """Whether a raster of this downsample and origin is one of the pyramid's coarse levels."""
        if (float(l0_origin[0]), float(l0_origin[1])) != (float(self.l0_window[0]), float(self.l0_window[1])):
            return False
        if downsample < self.coarse_downsample:
            return False
        k = math.log2(downsample / self.base_downsample)
        return k.is_integer() and int(k) < len(self.levels)

    def cut(self, downsample: float, o_row0: int, o_col0: int, rows: int, cols: int) -> np.ndarray:
        """Scores (float32, NaN = no patch) of output pixels [row0, row0+rows) x [col0, col0+cols)
        of the level at `downsample`; pixels past the level's edge are NaN."""
        level = self.levels[int(round(math.log2(downsample / self.base_downsample)))]
        out = np.full((rows, cols), np.nan, np.float32)
        r0, c0 = max(0, o_row0), max(0, o_col0)
        r1, c1 = min(level.shape[0], o_row0 + rows), min(level.shape[1], o_col0 + cols)
        if r1 > r0 and c1 > c0:
            out[r0 - o_row0:r1 - o_row0, c0 - o_col0:c1 - o_col0] = level[r0:r1, c0:c1]
        return out
