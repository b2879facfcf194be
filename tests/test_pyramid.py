"""The score pyramid (scoremap.pyramid): coarse tiles cut from it equal tiles painted from patches.

The bags are what heatmap bags look like: 256-px patches every 32 px over an elliptical piece of
tissue (64 patches over every point, as TRIDENT/CLAM overlap gives), with attention that is a
smooth field plus patch-level noise, or pure noise (the hardest case for any averaging shortcut).
"""

from __future__ import annotations

import numpy as np
import pytest

from scoremap import pyramid as pyramid_module
from scoremap.normalize import normalize_scores
from scoremap.patch_index import PatchIndex
from scoremap.pyramid import COARSE_PATCHES, ScorePyramid
from scoremap.raster import ScoreSource, Window, window_cells, window_indices
from viewer.geometry import DeepZoomGeometry

PATCH, STEP = 256, 32


def tissue_bag(width: int, height: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.arange(0, width - PATCH, STEP), np.arange(0, height - PATCH, STEP))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    cx, cy = coords[:, 0] + PATCH / 2, coords[:, 1] + PATCH / 2
    coords = coords[
        ((cx - width / 2) / (0.45 * width)) ** 2 + ((cy - height / 2) / (0.45 * height)) ** 2 < 1
    ]
    rng = np.random.default_rng(seed)
    if kind == "smooth":
        raw = (
            np.sin(coords[:, 0] / 1500)
            + np.cos(coords[:, 1] / 1100)
            + 0.3 * rng.standard_normal(len(coords))
        )
    else:
        raw = rng.standard_normal(len(coords))
    return coords, normalize_scores(raw, "percentile").astype(np.float32)


def tile_window(geo: DeepZoomGeometry, level: int, col: int, row: int) -> Window:
    box = geo.tile_box(level, col, row)
    return Window(geo.l0_window(), box.l0_downsample, box.z_h, box.z_w, box.z_y, box.z_x)


@pytest.fixture(scope="module", params=["smooth", "noise"])
def bag(request):
    width, height = 16000, 12000
    coords, values = tissue_bag(width, height, request.param)
    geo = DeepZoomGeometry.for_slide((width, height), [(width, height)], {})
    pyramid = ScorePyramid.build(coords, values, PATCH, geo.l0_window(), geo.tile_size)
    index = PatchIndex(coords, PATCH)
    return (
        geo,
        ScoreSource(coords, values, PATCH, index),
        ScoreSource(coords, values, PATCH, index, pyramid),
    )


def test_every_coarse_tile_is_the_tile_painted_from_patches(bag):
    """The rule: >= 99 % of pixels within one palette step; measured: all of them, at every level."""
    geo, direct, cut = bag
    pyramid = cut.pyramid
    assert pyramid is not None and pyramid.coarse_downsample == 8  # 5,000+ patches per tile at 8x
    compared = 0
    for level in range(geo.level_count):
        d = geo.l0_downsample(level)
        if not pyramid.serves(d, geo.l0_offset):
            assert d < pyramid.coarse_downsample
            continue
        t_cols, t_rows = geo.t_dimensions[level]
        for col in range(t_cols):
            for row in range(t_rows):
                window = tile_window(geo, level, col, row)
                want = window_indices(direct, window)
                got = window_indices(cut, window)
                if want is None:
                    assert got is None
                    continue
                steps = np.abs(want.astype(int) - got.astype(int))
                assert np.array_equal(want == 255, got == 255), (level, col, row)  # same coverage
                assert (steps <= 1).mean() >= 0.99, (level, col, row)
                assert steps.max() <= 1
                compared += steps.size
    assert compared > 50 * 256 * 256


def test_pyramid_values_are_the_patch_means_to_float16(bag):
    geo, direct, cut = bag
    level = geo.level_count - 1 - 4  # 16x
    window = tile_window(geo, level, 1, 1)
    want = window_cells(direct, window).expand()
    got = window_cells(cut, window).expand()
    assert np.array_equal(np.isnan(want), np.isnan(got))
    assert np.nanmax(np.abs(want - got)) < 3e-4


def test_blurred_coarse_tiles_stay_on_the_tissue(bag):
    geo, direct, cut = bag
    level = geo.level_count - 1 - 6  # 64x: one tile holds the whole slide
    window = tile_window(geo, level, 0, 0)
    sharp = window_cells(direct, window).expand()
    blurred = window_cells(cut, window, blur=True).expand()
    assert np.array_equal(np.isnan(sharp), np.isnan(blurred))  # never colours glass
    assert np.nanstd(blurred) < np.nanstd(sharp)  # and it smooths


def test_a_sparse_bag_needs_no_pyramid():
    """18 patches per tile at most: every tile is painted from its patches."""
    coords = np.array([[x, y] for x in range(0, 4000, 256) for y in range(0, 3000, 256)])
    values = np.linspace(0, 1, len(coords))
    assert ScorePyramid.build(coords, values, 256, (0, 0, 4000, 3000), 254) is None


def test_a_bag_off_any_lattice_builds_the_same_pyramid(monkeypatch):
    """Irregular coordinates (no lattice to exploit) are painted patch by patch: same levels."""
    coords, values = tissue_bag(8000, 6000, "noise", seed=3)
    lattice = ScorePyramid.build(coords, values, PATCH, (0, 0, 8000, 6000), 254)
    monkeypatch.setattr(pyramid_module, "_MAX_LATTICE_CELLS", 0)
    scattered = ScorePyramid.build(coords, values, PATCH, (0, 0, 8000, 6000), 254)
    assert lattice.level_count == scattered.level_count
    for k in range(lattice.level_count):
        a, b = lattice.level(k).astype(np.float64), scattered.level(k).astype(np.float64)
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.nanmax(np.abs(a - b)) < 1e-3


def test_a_million_patch_bag_costs_tens_of_megabytes():
    """The 40000 x 30000 case of the issue: 1,155,060 patches; base at 16x (2500 x 1875)."""
    xs, ys = np.meshgrid(np.arange(0, 40000 - PATCH, STEP), np.arange(0, 30000 - PATCH, STEP))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    values = np.random.default_rng(0).random(len(coords)).astype(np.float32)
    pyramid = ScorePyramid.build(coords, values, PATCH, (0, 0, 40000, 30000), 254)
    assert len(coords) > 1_000_000
    assert pyramid.base_downsample == 16 and pyramid.coarse_downsample == 16
    assert pyramid.nbytes < 40 * 2**20  # every level and the tables it is painted from
    top = pyramid.level(pyramid.level_count - 1)
    assert top.shape == (1, 1) and abs(float(top[0, 0]) - values.mean()) < 1e-3
    # a coarse tile is cut: its cost no longer depends on the bag
    assert (
        pyramid.serves(64, (0, 0))
        and not pyramid.serves(8, (0, 0))
        and not pyramid.serves(64, (1, 0))
    )


def test_the_coarse_level_is_where_tiles_meet_more_than_coarse_patches():
    coords, values = tissue_bag(16000, 12000, "smooth")
    bag = pyramid_module.BagPainter(coords, values, PATCH)
    # 8x tiles (2032 px) meet ((2032 + 256) / 32)^2 ~ 5,100 patches; 4x tiles about 1,600
    assert bag.max_per_tile((0, 0), 254 * 8, (16000, 12000)) > COARSE_PATCHES
    assert bag.max_per_tile((0, 0), 254 * 4, (16000, 12000)) <= COARSE_PATCHES
    index = PatchIndex(coords, PATCH)
    tile = 254 * 8
    worst = max(
        index.overlapping(x, y, x + tile, y + tile).size
        for x in range(0, 16000, tile)
        for y in range(0, 12000, tile)
    )
    assert bag.max_per_tile((0, 0), tile, (16000, 12000)) == worst
