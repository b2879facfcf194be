"""Score normalisation and the registration of patches on rasters (scoremap.grid)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from scoremap.grid import blur_sigma, cell_grid, rasterize, rasterize_blurred
from scoremap.normalize import normalize_scores


def reference_raster(coords, values, s, d, window, shape):
    """Brute force of the documented rule: each patch paints [floor((x-wx)/d), ceil((x+s-wx)/d))."""
    wx, wy, ww, wh = window
    total = np.zeros(shape)
    count = np.zeros(shape)
    for (x, y), v in zip(coords, values, strict=True):
        c0, c1 = math.floor((x - wx) / d), math.ceil((x + s - wx) / d)
        r0, r1 = math.floor((y - wy) / d), math.ceil((y + s - wy) / d)
        c0, c1 = max(c0, 0), min(c1, shape[1], math.ceil(ww / d))
        r0, r1 = max(r0, 0), min(r1, shape[0], math.ceil(wh / d))
        if c1 > c0 and r1 > r0:
            total[r0:r1, c0:c1] += v
            count[r0:r1, c0:c1] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


# -- normalisation ---------------------------------------------------------------------------


def test_percentiles_match_scipy_percentileofscore_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, size=300).astype(float)  # many ties
    got = normalize_scores(scores, "percentile")
    want = np.array([stats.percentileofscore(scores, s, kind="rank") for s in scores]) / 100
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got.min() > 0 and got.max() <= 1.0


def test_percentiles_accept_column_vectors_and_keep_nan():
    scores = np.array([[3.0], [1.0], [np.nan], [2.0]], np.float32)
    got = normalize_scores(scores, "percentile")
    np.testing.assert_allclose(got[[0, 1, 3]], [1.0, 1 / 3, 2 / 3])
    assert np.isnan(got[2])


def test_raw_is_min_max_and_constant_bags_are_mid_scale():
    np.testing.assert_allclose(normalize_scores(np.array([-2.0, 0.0, 2.0]), "raw"), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(normalize_scores(np.full(5, 7.0), "raw"), 0.5)
    with pytest.raises(ValueError, match="percentile"):
        normalize_scores(np.ones(3), "zscore")  # type: ignore[arg-type]


# -- registration ----------------------------------------------------------------------------


def test_patch_colours_exactly_its_pixels_at_full_resolution():
    grid = rasterize(np.array([[3, 5]]), np.array([0.25]), 4, 1.0, (0, 0, 12, 10), (10, 12))
    expected = np.full((10, 12), np.nan, np.float32)
    expected[5:9, 3:7] = 0.25
    np.testing.assert_array_equal(grid, expected)
    assert grid.dtype == np.float32


def test_floor_ceil_rule_at_downsample_4_with_window_offset():
    # window origin (1, 2). Patch [9, 17) x [2, 10) is aligned with the 4-px output grid:
    # cols floor(8/4)=2 .. ceil(16/4)=4, rows floor(0/4)=0 .. ceil(8/4)=2, nothing more.
    # Patch [10, 18) x [31, 39) straddles: cols floor(9/4)=2 .. ceil(17/4)=5,
    # rows floor(29/4)=7 .. ceil(37/4)=10: every output pixel it touches, partly or not.
    grid = rasterize(
        np.array([[9, 2], [10, 31]]), np.array([1.0, 0.5]), 8, 4.0, (1, 2, 40, 48), (12, 10)
    )
    assert np.isfinite(grid).sum() == 2 * 2 + 3 * 3
    np.testing.assert_array_equal(grid[0:2, 2:4], 1.0)
    np.testing.assert_array_equal(grid[7:10, 2:5], 0.5)


def test_overlapping_patches_average_like_clam():
    coords = np.array([[0, 0], [2, 0], [2, 2]])
    grid = rasterize(coords, np.array([0.0, 1.0, 0.5]), 4, 1.0, (0, 0, 8, 8), (8, 8))
    assert grid[0, 0] == 0.0  # first patch only
    assert grid[0, 2] == pytest.approx(0.5)  # patches 1 and 2
    assert grid[2, 2] == pytest.approx(0.5)  # all three: (0 + 1 + 0.5) / 3
    assert grid[3, 5] == pytest.approx(0.75)  # patches 2 and 3
    assert grid[5, 5] == 0.5  # third only
    assert np.isnan(grid[7, 7]) and np.isnan(grid[5, 0])


def test_outside_the_window_is_nan_and_never_painted():
    coords = np.array([[-100, -100], [50, 50], [18, 18]])
    grid = rasterize(coords, np.array([1.0, 1.0, 0.3]), 16, 2.0, (0, 0, 40, 40), (20, 20))
    # only the third patch lies (partly) inside: pixels [9, 17) clipped to the 20x20 raster
    assert np.isfinite(grid).sum() == 8 * 8
    np.testing.assert_array_equal(grid[9:17, 9:17], np.float32(0.3))


def test_irregular_overlapping_patches_match_brute_force_at_fractional_downsample():
    rng = np.random.default_rng(1)
    coords = rng.integers(-50, 1000, size=(300, 2))
    values = rng.random(300)
    window = (13, 7, 900, 800)
    d = 3.7
    shape = (math.ceil(800 / d), math.ceil(900 / d))
    got = rasterize(coords, values, 64, d, window, shape)
    want = reference_raster(coords, values, 64, d, window, shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], rtol=1e-5)


def test_strips_of_one_raster_join_exactly():
    rng = np.random.default_rng(2)
    coords = rng.integers(0, 2000, size=(500, 2))
    values = rng.random(500)
    window, d = (0, 0, 2256, 2256), 31.99
    shape = (math.ceil(2256 / d), math.ceil(2256 / d))
    whole = rasterize(coords, values, 256, d, window, shape)
    parts = [
        cell_grid(
            coords, values, 256, d, window, (min(shape[0], r + 7) - r, shape[1]), (r, 0)
        ).expand()
        for r in range(0, shape[0], 7)
    ]
    np.testing.assert_array_equal(np.vstack(parts), whole)


def test_lattice_of_18k_patches_compresses_to_its_own_cells():
    step, s = 256, 256
    xs, ys = np.meshgrid(np.arange(0, 40000 - s, step), np.arange(0, 30000 - s, step))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)[:18000]
    values = np.random.default_rng(3).random(len(coords))
    cells = cell_grid(coords, values, s, 4.0, (0, 0, 40000, 30000), (7500, 10000))
    assert cells.g_values.shape == (len(cells.o_row_edges) - 1, len(cells.o_col_edges) - 1)
    assert (
        cells.g_values.size < 200 * 200
    )  # the lattice compresses to its own cells (speed: bench/)


# -- blur ------------------------------------------------------------------------------------


def test_blur_sigma_follows_clams_kernel_rule():
    assert blur_sigma(256, 32.0) == pytest.approx(0.3 * (8 - 1) + 0.8)
    assert blur_sigma(256, 1.0) == pytest.approx(0.3 * 255 + 0.8)


def test_blur_smooths_inside_patches_only_and_keeps_constant_scores():
    xs, ys = np.meshgrid(np.arange(0, 512, 64), np.arange(0, 512, 64))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    window, shape = (0, 0, 600, 600), (150, 150)
    flat = rasterize_blurred(coords, np.full(len(coords), 0.7), 64, 4.0, window, shape)
    sharp = rasterize(coords, np.full(len(coords), 0.7), 64, 4.0, window, shape)
    np.testing.assert_array_equal(np.isnan(flat), np.isnan(sharp))  # never paints glass
    np.testing.assert_allclose(flat[np.isfinite(flat)], 0.7, rtol=1e-5)  # normalised convolution
    checker = ((xs.ravel() // 64 + ys.ravel() // 64) % 2).astype(float)
    blurred = rasterize_blurred(coords, checker, 64, 4.0, window, shape)
    raw = rasterize(coords, checker, 64, 4.0, window, shape)
    inside = np.isfinite(raw)
    assert np.abs(blurred[inside] - raw[inside]).max() > 0.2
    assert np.nanmin(blurred) >= 0.0 and np.nanmax(blurred) <= 1.0


@pytest.mark.parametrize("d", [1.0, 4.0])
def test_blurred_strips_join(d):
    rng = np.random.default_rng(4)
    coords = rng.integers(0, 1500, size=(200, 2))
    values = rng.random(200)
    window = (0, 0, 1800, 1800)
    h = w = math.ceil(1800 / d)
    whole = rasterize_blurred(coords, values, 128, d, window, (h, w))
    rows = 97
    parts = [
        rasterize_blurred(coords, values, 128, d, window, (min(h, r + rows) - r, w), (r, 0))
        for r in range(0, h, rows)
    ]
    np.testing.assert_allclose(np.vstack(parts), whole, rtol=1e-5, atol=1e-6)


def test_rank_order_gives_scipys_average_ranks_and_the_attention_order_from_one_sort():
    from scoremap.normalize import percent, rank_order, ranks

    rng = np.random.default_rng(4)
    scores = np.round(rng.normal(size=3000), 1)  # many ties
    scores[[5, 77, 901]] = np.nan
    order, percentile = rank_order(scores)
    finite = np.isfinite(scores)
    np.testing.assert_allclose(percentile[finite], stats.rankdata(scores[finite]) / finite.sum())
    assert np.isnan(percentile[~finite]).all()
    keyed = np.where(finite, -scores, np.inf)
    stable = np.argsort(keyed, kind="stable")
    np.testing.assert_array_equal(order, stable)  # ties in bag order
    assert set(order[-3:].tolist()) == {5, 77, 901}
    rank = ranks(order)  # 1 = most attended, NaN last
    np.testing.assert_array_equal(rank[stable], np.arange(1, len(scores) + 1))
    np.testing.assert_allclose(percent(percentile[finite]), 100 * percentile[finite])
    for s in scores[finite][:50]:
        want = stats.percentileofscore(scores[finite], s, kind="rank") / 100
        assert np.isclose(percentile[np.flatnonzero(scores == s)[0]], want)


def test_box_sums_count_and_total_the_boxes_over_each_cell():
    from scoremap.grid import BoxSums

    rng = np.random.default_rng(5)
    shape = (13, 17)
    r0, c0 = rng.integers(0, 13, 300), rng.integers(0, 17, 300)
    r1, c1 = r0 + rng.integers(0, 5, 300), c0 + rng.integers(0, 5, 300)
    r1, c1 = np.minimum(r1, 13), np.minimum(c1, 17)  # empty boxes (r1 == r0) included
    values = rng.normal(size=300)
    count, total = np.zeros(shape), np.zeros(shape)
    for i in range(300):
        count[r0[i] : r1[i], c0[i] : c1[i]] += 1
        total[r0[i] : r1[i], c0[i] : c1[i]] += values[i]
    boxes = BoxSums(shape, r0, r1, c0, c1)
    np.testing.assert_array_equal(boxes.count(), count)
    np.testing.assert_allclose(boxes.total(values), total, atol=1e-12)
