"""The union of patch squares: its exact area and its outline, for a million patches in a second.

A region is the set of level-0 pixels covered by at least one selected patch (overlapping patches
counted once). Its area and outline follow from the compressed grid of the patches' edges (every
distinct x and x + s, y and y + s): a cell of that grid is either wholly covered or not, so the
patches' count over it (`grid.BoxSums`: four corners each, two cumulative sums) says which. The
area is the sum of the covered cells' areas, exactly; the outline is the union of each grid row's
runs of covered cells, rectangles that only share edges, which shapely's coverage union merges in
linear time (a plain union of 500,000 overlapping squares takes 19 s).
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from scoremap.grid import BoxSums, sorted_distinct


def covered_cells(
    l0_coords: np.ndarray, l0_patch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x edges, y edges, covered (ny, nx) bool) of the patches' compressed grid."""
    coords = np.asarray(l0_coords, np.int64).reshape(-1, 2)
    if len(coords) == 0:
        return np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros((0, 0), bool)
    s = int(l0_patch)
    x_edges = sorted_distinct(np.concatenate((coords[:, 0], coords[:, 0] + s)))
    y_edges = sorted_distinct(np.concatenate((coords[:, 1], coords[:, 1] + s)))
    gx0, gx1 = np.searchsorted(x_edges, coords[:, 0]), np.searchsorted(x_edges, coords[:, 0] + s)
    gy0, gy1 = np.searchsorted(y_edges, coords[:, 1]), np.searchsorted(y_edges, coords[:, 1] + s)
    counts = BoxSums((len(y_edges) - 1, len(x_edges) - 1), gy0, gy1, gx0, gx1).count()
    return x_edges, y_edges, counts > 0.5


def union_area(l0_coords: np.ndarray, l0_patch: int) -> float:
    """Level-0 px^2 covered by at least one of the patches."""
    x_edges, y_edges, covered = covered_cells(l0_coords, l0_patch)
    if covered.size == 0:
        return 0.0
    return float(
        np.diff(y_edges.astype(np.float64))
        @ covered.astype(np.float64)
        @ np.diff(x_edges.astype(np.float64))
    )


def union_geometry(l0_coords: np.ndarray, l0_patch: int) -> BaseGeometry:
    """The union of the patch squares as a shapely (Multi)Polygon (empty for no patch)."""
    x_edges, y_edges, covered = covered_cells(l0_coords, l0_patch)
    if not covered.any():
        return shapely.Polygon()
    padded = np.pad(covered, ((0, 0), (1, 1)))
    change = np.diff(padded.astype(np.int8), axis=1)
    rows, starts = np.nonzero(change == 1)
    _, stops = np.nonzero(change == -1)  # same row order: each run's end follows its start
    boxes = shapely.box(x_edges[starts], y_edges[rows], x_edges[stops], y_edges[rows + 1])
    return shapely.coverage_union_all(boxes)
