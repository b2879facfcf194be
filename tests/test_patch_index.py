"""Box queries of the patch index (scoremap.patch_index) against a brute-force scan."""

from __future__ import annotations

import numpy as np
import pytest

from scoremap.patch_index import PatchIndex


def brute(coords: np.ndarray, s: int, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Patches [x, x+s) x [y, y+s) meeting the half-open box [x0, x1) x [y0, y1)."""
    x, y = coords[:, 0], coords[:, 1]
    return np.flatnonzero((x < x1) & (x + s > x0) & (y < y1) & (y + s > y0))


@pytest.mark.parametrize("layout", ["lattice", "overlapping", "irregular"])
def test_box_queries_equal_a_scan(layout):
    rng = np.random.default_rng(7)
    s = 256
    if layout == "lattice":
        xs, ys = np.meshgrid(np.arange(0, 20000, 256), np.arange(0, 15000, 256))
    elif layout == "overlapping":
        xs, ys = np.meshgrid(np.arange(1000, 9000, 32), np.arange(500, 6000, 32))
    else:
        xs, ys = rng.integers(0, 20000, 5000), rng.integers(0, 15000, 5000)
    coords = np.stack([np.ravel(xs), np.ravel(ys)], 1).astype(np.int64)
    index = PatchIndex(coords, s)
    boxes = [
        (0, 0, 1, 1),
        (255.5, 255.5, 256.5, 256.5),
        (-500, -500, 30000, 30000),
        (1000, 500, 1001, 501),
    ]
    for _ in range(200):
        x0, y0 = rng.uniform(-300, 20000, 2)
        w, h = rng.uniform(0.001, 3000, 2)
        boxes.append((x0, y0, x0 + w, y0 + h))
    for box in boxes:
        np.testing.assert_array_equal(
            index.overlapping(*box), brute(coords, s, *box), err_msg=str(box)
        )


def test_points_on_patch_edges_follow_half_open_squares():
    index = PatchIndex(np.array([[100, 100], [356, 100]]), 256)

    def point(x, y):
        return index.overlapping(x, y, np.nextafter(x, np.inf), np.nextafter(y, np.inf)).tolist()

    assert point(100, 100) == [0]
    assert point(355.999, 200) == [0]
    assert point(356, 200) == [1]  # the first patch ends where the second begins
    assert point(99.999, 200) == [] and point(200, 356) == []


def test_empty_bag_and_empty_boxes():
    assert PatchIndex(np.empty((0, 2)), 64).overlapping(0, 0, 100, 100).size == 0
    index = PatchIndex(np.array([[0, 0]]), 64)
    assert index.overlapping(10, 10, 10, 20).size == 0  # zero width
    with pytest.raises(ValueError):
        PatchIndex(np.array([[0, 0]]), 0)


@pytest.mark.parametrize("downsample", [1.0, 3.0, 16.0])
def test_windows_painted_from_the_patches_the_index_finds_equal_windows_painted_from_the_bag(
    downsample,
):
    """The index hands the rasteriser only the patches within `l0_reach` of a window; blurred or
    not, the window must come out as if every patch of the bag had been considered."""
    from scoremap.raster import ScoreSource, Window, window_cells

    rng = np.random.default_rng(3)
    s = 256
    xs, ys = np.meshgrid(np.arange(0, 12000, 64), np.arange(0, 9000, 64))
    coords = np.stack([np.ravel(xs), np.ravel(ys)], 1).astype(np.int64)
    coords += rng.integers(0, 16, coords.shape)  # off the lattice: every patch edge its own cell
    values = rng.uniform(size=len(coords))
    indexed = ScoreSource(coords, values, s, PatchIndex(coords, s))
    whole = ScoreSource(coords, values, s)
    l0_window = (0.0, 0.0, 12300.0, 9300.0)
    for _ in range(6):
        rows, cols = rng.integers(1, 200, 2)
        o_row0 = int(rng.integers(0, max(1, int(9300 / downsample) - rows)))
        o_col0 = int(rng.integers(0, max(1, int(12300 / downsample) - cols)))
        window = Window(l0_window, downsample, int(rows), int(cols), o_row0, o_col0)
        for blur in (False, True):
            np.testing.assert_array_equal(
                window_cells(indexed, window, blur).expand(),
                window_cells(whole, window, blur).expand(),
            )
