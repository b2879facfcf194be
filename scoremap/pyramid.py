"""The score pyramid: normalised scores as a multi-resolution raster, for views that meet many patches.

Why. A tile of a coarse Deep Zoom level covers a large part of the slide: with a million
overlapping patches (256 px every 32 px, as TRIDENT and CLAM heatmap bags are cut) one tile meets
up to the whole bag, and painting it patch by patch costs 200-300 ms. The screen only shows
256 x 256 pixels of it, so such tiles are cut from rasters computed once per slide, class and
normalisation, and their cost follows the screen, not the bag.

What it holds. One raster per coarse Deep Zoom level, from the finest one it serves (downsample
`base_downsample`, a power of two, origin at the Deep Zoom origin) down to 1 x 1, each pixel
painted by the registration rule of `scoremap.grid`: the mean of the scores of the patches that
cover it (overlapping patches averaged as everywhere; a pixel a patch only partly covers counts
that patch), NaN where none lies. Level k is exactly the Deep Zoom level of downsample
`base_downsample * 2**k`, pixel for pixel and value for value, so a tile cut from it equals the
tile painted from its patches, and registration is the same (within one screen pixel).
A coverage-weighted (area) mean would look alike to the eye but not to the numbers: on noisy
attention it differs from the exact tile by more than one palette step on 15 % of the pixels at
128x, and a user comparing a coarse view with a zoomed one would see the colours shift.

How, cheaply. Patches come on a lattice, so the bag is held as sums and counts over its distinct
(y, x) positions, and each level is painted by difference arrays along x and then y (`BagPainter`):
O(distinct rows x columns + pixels) per level, no per-patch work and no slide pixels read. Bags off
any lattice are painted patch by patch (`grid.BoxSums`: a 2-D difference array, four corners
per patch).
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
import threading

import numpy as np
from scipy import sparse

from scoremap.grid import BoxSums, o_edges

COARSE_PATCHES = 4096  # a tile meeting more patches than this is cut from the pyramid
MAX_BASE_CELLS = 1 << 23  # 8.4 M cells: 16 MB of float16 at the base, 21 MB for every level
_MAX_LATTICE_CELLS = 1 << 22  # distinct x times distinct y up to which the separable path is used


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct integers and each value's position among them (a table, not a sort)."""
    lo = int(values.min())
    present = np.zeros(int(values.max()) - lo + 1, bool)
    present[values - lo] = True
    where = np.cumsum(present) - 1
    return np.flatnonzero(present) + lo, where[values - lo]


def _edge_matrix(f0: np.ndarray, f1: np.ndarray, n: int) -> sparse.csr_matrix:
    """(n + 1, len(f0)) difference operator: +1 at (f0[i], i), -1 at (f1[i], i). Multiplying a table
    of positions by it and summing cumulatively paints each position over its footprint [f0, f1)."""
    m = len(f0)
    rows = np.concatenate((f0, f1))
    cols = np.concatenate((np.arange(m), np.arange(m)))
    data = np.concatenate((np.ones(m, np.float32), -np.ones(m, np.float32)))
    return sparse.csr_matrix((data, (rows, cols)), shape=(n + 1, m))


class BagPainter:
    """The bag's finite scores, prepared for painting whole rasters by the touching rule.

    Patches come on a lattice (a few thousand distinct x and y for a million patches), so the bag is
    held as dense tables over (distinct x, distinct y): the sum of scores and the number of patches
    at each position. A raster then needs no per-patch work: a patch column's footprint
    (the raster columns it touches) depends only on its x, so painting is a difference array along
    x (a sparse +1/-1 operator times the tables), a cumulative sum, the same along y:
    O(distinct y * columns + pixels) per raster. Bags off any
    lattice (too many distinct positions for the tables) are painted patch by patch instead
    (`grid.BoxSums`).
    """

    def __init__(self, l0_coords: np.ndarray, values01: np.ndarray, l0_patch: int):
        values = np.asarray(values01, np.float64).reshape(-1)
        keep = np.isfinite(values)
        coords = np.asarray(l0_coords)
        if not np.issubdtype(coords.dtype, np.integer):
            coords = np.rint(coords)
        coords = coords.astype(np.int64)[keep] if not keep.all() else coords.astype(np.int64)
        self.values = values[keep]
        self.l0_patch = int(l0_patch)
        self.empty = len(self.values) == 0
        self.lattice = False
        if self.empty:
            return
        self.ux, ix = _distinct(coords[:, 0])
        self.uy, iy = _distinct(coords[:, 1])
        if len(self.ux) * len(self.uy) <= _MAX_LATTICE_CELLS:
            self.lattice = True
            cells = ix * len(self.uy) + iy
            size = len(self.ux) * len(self.uy)
            # float32: counts are exact, sums of scores in [0, 1] off by ~1e-6 of a palette step
            self.tables = np.empty((len(self.ux), len(self.uy), 2), np.float32)
            shape = (len(self.ux), len(self.uy))
            self.tables[:, :, 0] = np.bincount(cells, weights=self.values, minlength=size).reshape(
                shape
            )
            self.tables[:, :, 1] = np.bincount(cells, minlength=size).reshape(shape)
            del self.values  # held in the tables
        else:
            self.coords = coords

    @property
    def nbytes(self) -> int:
        held = [
            getattr(self, "values", None),
            getattr(self, "tables", None),
            getattr(self, "coords", None),
            getattr(self, "ux", None),
            getattr(self, "uy", None),
        ]
        return int(sum(a.nbytes for a in held if a is not None))

    def footprints(
        self, l0_starts: np.ndarray, l0_origin: float, downsample: float, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return o_edges(l0_starts.astype(np.float64), self.l0_patch, l0_origin, downsample, 0, n, n)

    def paint(
        self,
        l0_origin: tuple[float, float],
        downsample: float,
        rows: int,
        cols: int,
        with_sums: bool = True,
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """(sum of scores, number of patches) touching each pixel of the rows x cols raster whose
        pixel (0, 0) starts at `l0_origin`, at `downsample` level-0 pixels per pixel."""
        ox, oy = l0_origin
        if self.lattice:
            fx0, fx1 = self.footprints(self.ux, ox, downsample, cols)
            fy0, fy1 = self.footprints(self.uy, oy, downsample, rows)
            tables = self.tables if with_sums else self.tables[:, :, 1:]  # (x, y, [sum,] count)
            nx, ny, k = tables.shape
            along_x = (_edge_matrix(fx0, fx1, cols) @ tables.reshape(nx, ny * k)).cumsum(axis=0)[
                :cols
            ]
            by_y = np.ascontiguousarray(along_x.reshape(cols, ny, k).transpose(1, 0, 2)).reshape(
                ny, cols * k
            )
            painted = (
                (_edge_matrix(fy0, fy1, rows) @ by_y).cumsum(axis=0)[:rows].reshape(rows, cols, k)
            )
            if with_sums:
                return painted[:, :, 0], painted[:, :, 1]
            return None, painted[:, :, 0]
        fx0, fx1 = self.footprints(self.coords[:, 0], ox, downsample, cols)
        fy0, fy1 = self.footprints(self.coords[:, 1], oy, downsample, rows)
        boxes = BoxSums((rows, cols), fy0, fy1, fx0, fx1)
        return (boxes.total(self.values) if with_sums else None), boxes.count()

    def mean(
        self, l0_origin: tuple[float, float], downsample: float, rows: int, cols: int
    ) -> np.ndarray:
        """The raster itself: mean score of the patches touching each pixel (float16, NaN: none)."""
        if self.lattice:
            return self._lattice_mean(l0_origin, downsample, rows, cols)
        sums, counts = self.paint(l0_origin, downsample, rows, cols)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0.5, sums / counts, np.nan).astype(np.float16)

    def _lattice_mean(
        self,
        l0_origin: tuple[float, float],
        downsample: float,
        rows: int,
        cols: int,
        band: int = 128,
    ) -> np.ndarray:
        """`mean` on the lattice path, painted along y a band of rows at a time: the full-size sums
        and counts are never held (a 2500 x 1875 base needs ~40 MB of work, not ~260 MB)."""
        ox, oy = l0_origin
        fx0, fx1 = self.footprints(self.ux, ox, downsample, cols)
        fy0, fy1 = self.footprints(self.uy, oy, downsample, rows)
        nx, ny, k = self.tables.shape
        along_x = _edge_matrix(fx0, fx1, cols) @ self.tables.reshape(nx, ny * k)
        np.cumsum(along_x, axis=0, out=along_x)
        by_y = np.ascontiguousarray(along_x[:cols].reshape(cols, ny, k).transpose(1, 0, 2)).reshape(
            ny, cols * k
        )
        del along_x
        edges_y = _edge_matrix(fy0, fy1, rows)
        out = np.empty((rows, cols), np.float16)
        carry = np.zeros(cols * k, np.float32)
        for r0 in range(0, rows, band):
            r1 = min(rows, r0 + band)
            painted = np.asarray(edges_y[r0:r1] @ by_y)
            np.cumsum(painted, axis=0, out=painted)
            painted += carry
            carry = painted[-1].copy()
            painted = painted.reshape(r1 - r0, cols, k)
            sums, counts = painted[:, :, 0], painted[:, :, 1]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[r0:r1] = np.where(counts > 0.5, sums / counts, np.nan)
        return out

    def max_per_tile(
        self, l0_origin: tuple[float, float], l0_tile: float, l0_extent: tuple[float, float]
    ) -> int:
        """The most patches that meet one tile of the lattice of side `l0_tile` over the extent."""
        if self.empty:
            return 0
        cols = max(1, math.ceil(l0_extent[0] / l0_tile))
        rows = max(1, math.ceil(l0_extent[1] / l0_tile))
        _, counts = self.paint(l0_origin, l0_tile, rows, cols, with_sums=False)
        return round(float(counts.max()))


def coarse_downsample(
    bag: BagPainter, l0_window: tuple[float, float, float, float], tile_size: int
) -> int | None:
    """The smallest power-of-two downsample whose tiles meet more than COARSE_PATCHES patches
    (None: no level does). Tiles of coarser levels are unions of finer ones, so the count grows
    with the downsample and a binary search over the exponents finds the first."""
    origin, extent = l0_window[:2], l0_window[2:]
    top = math.ceil(math.log2(max(l0_window[2], l0_window[3], 1)))
    if bag.max_per_tile(origin, tile_size * 2**top, extent) <= COARSE_PATCHES:
        return None
    lo, hi = 0, top  # the answer's exponent lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if bag.max_per_tile(origin, tile_size * 2**mid, extent) > COARSE_PATCHES:
            hi = mid
        else:
            lo = mid + 1
    return 1 << hi


def base_downsample_for(l0_window: tuple[float, float, float, float], coarse: int) -> int:
    """The pyramid's base: `coarse`, or coarser until the base raster fits MAX_BASE_CELLS."""
    d = max(1, int(coarse))
    while math.ceil(l0_window[2] / d) * math.ceil(l0_window[3] / d) > MAX_BASE_CELLS:
        d *= 2
    return d


class ScorePyramid:
    """Normalised scores of one slide, class and normalisation at downsamples base * 2**k.

    Levels are painted on first use (the opening view needs one, about 20 ms for a million
    patches; the 16x base about 0.3 s), each once, under the pyramid's lock. `nbytes` counts the
    bag's tables and every level as if all were painted, so the cache's bound holds from the start.
    """

    def __init__(
        self,
        bag: BagPainter,
        l0_window: tuple[int, int, int, int],
        base_downsample: int,
        coarse: int,
    ):
        self.l0_window = l0_window
        self.base_downsample = int(base_downsample)
        self.coarse_downsample = max(
            int(coarse), self.base_downsample
        )  # tiles this coarse come from here
        self._bag = bag
        self._shapes: list[tuple[int, int]] = []
        d = self.base_downsample
        while True:
            rows, cols = math.ceil(l0_window[3] / d), math.ceil(l0_window[2] / d)
            self._shapes.append((rows, cols))
            if rows == 1 and cols == 1:
                break
            d *= 2
        self._levels: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def level_count(self) -> int:
        return len(self._shapes)

    @property
    def nbytes(self) -> int:
        levels = sum(rows * cols for rows, cols in self._shapes) * np.dtype(np.float16).itemsize
        return int(levels + self._bag.nbytes)

    @classmethod
    def build(
        cls,
        l0_coords: np.ndarray,
        values01: np.ndarray,
        l0_patch: int,
        l0_window: tuple[int, int, int, int],
        tile_size: int,
    ) -> ScorePyramid | None:
        """The pyramid of a bag on a Deep Zoom window, or None when no tile meets many patches."""
        x, y, w, h = (int(v) for v in l0_window)
        window = (x, y, w, h)
        bag = BagPainter(l0_coords, values01, l0_patch)
        if bag.empty:
            return None
        coarse = coarse_downsample(bag, window, tile_size)
        if coarse is None:
            return None
        return cls(bag, window, base_downsample_for(window, coarse), coarse)

    def level(self, k: int) -> np.ndarray:
        """Level k (float16, NaN where no patch lies), painted now if it has not been."""
        found = self._levels.get(k)
        if found is not None:
            return found
        with self._lock:
            found = self._levels.get(k)
            if found is None:
                rows, cols = self._shapes[k]
                found = self._bag.mean(self.l0_window[:2], self.base_downsample * 2**k, rows, cols)
                found.setflags(write=False)
                self._levels[k] = found
        return found

    def serves(self, downsample: float, l0_origin: tuple[float, float]) -> bool:
        """Whether a raster of this downsample and origin is one of the pyramid's coarse levels."""
        if (float(l0_origin[0]), float(l0_origin[1])) != (
            float(self.l0_window[0]),
            float(self.l0_window[1]),
        ):
            return False
        if downsample < self.coarse_downsample:
            return False
        k = math.log2(downsample / self.base_downsample)
        return k.is_integer() and int(k) < self.level_count

    def cut(self, downsample: float, o_row0: int, o_col0: int, rows: int, cols: int) -> np.ndarray:
        """Scores (float32, NaN = no patch) of output pixels [row0, row0+rows) x [col0, col0+cols)
        of the level at `downsample`; pixels past the level's edge are NaN."""
        level = self.level(round(math.log2(downsample / self.base_downsample)))
        out = np.full((rows, cols), np.nan, np.float32)
        r0, c0 = max(0, o_row0), max(0, o_col0)
        r1, c1 = min(level.shape[0], o_row0 + rows), min(level.shape[1], o_col0 + cols)
        if r1 > r0 and c1 > c0:
            out[r0 - o_row0 : r1 - o_row0, c0 - o_col0 : c1 - o_col0] = level[r0:r1, c0:c1]
        return out
