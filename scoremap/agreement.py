"""Do two experiments look at the same tissue? Spearman's rho and top-k overlap of two attention maps.

Two models scored on one slide give two bags of (coordinates, attention), each the
`raster.ScoreSource` its heatmap paints from. They are compared on the units both scored:

- **patches**, when both bags have the same patch size and share at least half of the smaller
  bag's coordinates (the same patching, e.g. two models on one feature set): the patches at
  coordinates both scored, each with its own score in each experiment;
- **cells** otherwise (CLAM vs TRIDENT coordinates, other patch sizes, other tissue masks): the
  cells of one level-0 raster at the coarser patch size S, anchored at level-0 (0, 0), each with
  the score that experiment's heatmap paints there (scoremap.grid's registration rule: the mean
  of the scores of the patches touching the cell, NaN where none does). Cells painted by both are
  compared. The viewer passes percentile scores, as its heatmaps paint them.

Over those units: Spearman's rank correlation (scipy.stats.spearmanr, ties averaged) and, for each
k, the Jaccard index |A ∩ B| / |A ∪ B| of the two top-k sets (the first k of each map's
`normalize.descending_order`: the most attended first, ties broken by position so the sets are
deterministic). On shared patches ranks make the figures the same on raw and percentile scores;
on cells they depend on which is averaged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from scoremap.grid import cell_grid
from scoremap.normalize import descending_order
from scoremap.raster import ScoreSource

#: Same patching when at least this share (half) of the smaller bag's coordinates lie in the other bag.
SHARED_COORDS = 0.5
DEFAULT_KS = (10, 50)


def _shared_patches(a: ScoreSource, b: ScoreSource) -> tuple[np.ndarray, np.ndarray] | None:
    """Indices into a and b of the coordinates both scored, or None when the patching differs."""
    if a.l0_patch != b.l0_patch or not len(a.l0_coords) or not len(b.l0_coords):
        return None
    ka = a.l0_coords[:, 0].astype(np.int64) * (1 << 32) + a.l0_coords[:, 1].astype(np.int64)
    kb = b.l0_coords[:, 0].astype(np.int64) * (1 << 32) + b.l0_coords[:, 1].astype(np.int64)
    _, ia, ib = np.intersect1d(ka, kb, assume_unique=False, return_indices=True)
    if len(ia) < SHARED_COORDS * min(len(ka), len(kb)):
        return None
    return ia, ib


def common_raster(
    a: ScoreSource, b: ScoreSource
) -> tuple[np.ndarray, np.ndarray, int, tuple[int, int]]:
    """(values of a, values of b) on the cells of the common raster at the coarser patch size,
    flattened, NaN where that experiment paints nothing; the cell side; the raster's (rows, cols)."""
    s = max(int(a.l0_patch), int(b.l0_patch))
    both = np.concatenate([a.l0_coords, b.l0_coords]).astype(np.int64)
    ends = np.concatenate([a.l0_coords + a.l0_patch, b.l0_coords + b.l0_patch]).astype(np.int64)
    x0, y0 = (both.min(0) // s) * s
    x1, y1 = -(-ends.max(0) // s) * s
    shape = (int((y1 - y0) // s), int((x1 - x0) // s))
    window = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    out = []
    for bag in (a, b):
        grid = cell_grid(bag.l0_coords, bag.values01, bag.l0_patch, s, window, shape)
        out.append(grid.expand().astype(np.float64).ravel())
    return out[0], out[1], s, shape


def top_k(order: np.ndarray, k: int) -> set[int]:
    """The k most attended units of a `descending_order` of finite scores (the earlier position
    first among ties)."""
    return set(order[:k].tolist())


def jaccard(a: set[int], b: set[int]) -> float | None:
    union = a | b
    return len(a & b) / len(union) if union else None


def agreement(a: ScoreSource, b: ScoreSource, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, Any]:
    """Spearman's rho and top-k Jaccard of two bags on the units both scored (see the module)."""
    keys = sorted(set(int(k) for k in ks))
    if not len(a.l0_coords) or not len(b.l0_coords):  # an empty bag: nothing to compare
        return {
            "unit": "patches",
            "l0_cell": int(a.l0_patch),
            "n": 0,
            "spearman": None,
            "p_value": None,
            "jaccard": {str(k): None for k in keys},
        }
    shared = _shared_patches(a, b)
    if shared is not None:
        va, vb = a.values01[shared[0]].astype(np.float64), b.values01[shared[1]].astype(np.float64)
        unit, cell = "patches", int(a.l0_patch)
    else:
        va, vb, cell, _ = common_raster(a, b)
        unit = "cells"
    both = np.isfinite(va) & np.isfinite(vb)
    va, vb = va[both], vb[both]
    rho = p_value = None
    varied = len(va) >= 3 and np.ptp(va) > 0 and np.ptp(vb) > 0  # a constant map ranks nothing
    if varied:
        result = stats.spearmanr(va, vb)
        rho, p_value = float(result.statistic), float(result.pvalue)
        if not math.isfinite(rho):
            rho = p_value = None
    # None where the figure says nothing: k takes every unit (1 by construction), or a map is flat
    overlap: dict[str, float | None] = {str(k): None for k in keys}
    if varied:
        order_a, order_b = descending_order(va), descending_order(vb)
        for k in (k for k in keys if k < len(va)):
            overlap[str(k)] = jaccard(top_k(order_a, k), top_k(order_b, k))
    return {
        "unit": unit,
        "l0_cell": cell,
        "n": len(va),
        "spearman": rho,
        "p_value": p_value,
        "jaccard": overlap,
    }
