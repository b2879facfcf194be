"""Deep Zoom geometry (viewer.geometry) against openslide's DeepZoomGenerator, tile by tile.

The overlay's registration rests on this module: every level size, tile box and the
limit_bounds offset must be the generator's, and our level-0 origin of each tile must be the
generator's read position (exactly at the deepest level, within one Deep Zoom pixel above).
"""

from __future__ import annotations

import math

import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator

from tests.conftest import shared_path
from viewer.geometry import DeepZoomGeometry, TileAddressError


class FakeSlide:
    """Just what DeepZoomGenerator reads of a slide: sizes, downsamples, properties."""

    def __init__(self, dimensions, downsamples, properties):
        w, h = dimensions
        self.level_downsamples = tuple(downsamples)
        self.level_dimensions = tuple((math.ceil(w / d), math.ceil(h / d)) for d in downsamples)
        self.dimensions = self.level_dimensions[0]
        self.level_count = len(downsamples)
        self.properties = properties

    def get_best_level_for_downsample(self, downsample: float) -> int:
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample:
                best = i
        return best


def geometry_of(slide, limit_bounds: bool = True) -> DeepZoomGeometry:
    return DeepZoomGeometry.for_slide(
        slide.dimensions, slide.level_dimensions, slide.properties, 254, 1, limit_bounds
    )


def assert_same_geometry(slide, limit_bounds: bool = True) -> None:
    dz = DeepZoomGenerator(slide, 254, 1, limit_bounds)
    geo = geometry_of(slide, limit_bounds)
    assert geo.level_count == dz.level_count
    assert geo.z_dimensions == dz.level_dimensions
    assert geo.t_dimensions == dz.level_tiles
    assert geo.dzi("jpeg") == dz.get_dzi("jpeg")
    assert geo.dzi("png") == dz.get_dzi("png")
    off_x, off_y = geo.l0_offset
    for level in range(dz.level_count):
        cols, rows = dz.level_tiles[level]
        for col in range(cols):
            for row in range(rows):
                box = geo.tile_box(level, col, row)
                assert (box.z_w, box.z_h) == dz.get_tile_dimensions(level, (col, row))
                (l0_x, l0_y), _, _ = dz.get_tile_coordinates(level, (col, row))
                d = box.l0_downsample
                # the generator reads from level-0 (l0_x, l0_y); our tile starts there too
                if d == 1:
                    assert (l0_x, l0_y) == (off_x + box.z_x, off_y + box.z_y)
                else:
                    assert abs(l0_x - (off_x + box.z_x * d)) < d
                    assert abs(l0_y - (off_y + box.z_y * d)) < d


def test_cmu_scan_geometry(cmu_slide):
    with openslide.OpenSlide(str(cmu_slide)) as slide:
        assert_same_geometry(slide)
        assert_same_geometry(slide, limit_bounds=False)


@pytest.mark.parametrize(
    "props",
    [
        {},
        {
            "openslide.bounds-x": "1000",
            "openslide.bounds-y": "517",
            "openslide.bounds-width": "20001",
            "openslide.bounds-height": "14333",
        },
    ],
)
def test_bounds_offsets_and_odd_downsamples(props):
    slide = FakeSlide((40000, 30000), (1.0, 4.0, 16.02, 63.9), props)
    assert_same_geometry(slide)
    geo = geometry_of(slide)
    if props:
        assert geo.l0_offset == (1000, 517)
        # the generator scales each level by bounds/size and rounds up (float: 20001 -> 20002)
        assert geo.l0_window()[:2] == (1000, 517)
        assert abs(geo.l0_dimensions[0] - 20001) <= 1 and abs(geo.l0_dimensions[1] - 14333) <= 1


def test_generic_tiff_with_non_power_of_two_levels():
    path = shared_path("slides", "boxes.tiff")
    with openslide.OpenSlide(str(path)) as slide:
        assert_same_geometry(slide)


def test_addresses_out_of_range():
    geo = DeepZoomGeometry.for_slide((1000, 700), [(1000, 700)], {})
    top = geo.level_count - 1
    geo.tile_box(top, 3, 2)
    for level, col, row in [(top + 1, 0, 0), (top, 4, 0), (top, 0, 3), (-1, 0, 0), (0, 1, 0)]:
        with pytest.raises(TileAddressError):
            geo.tile_box(level, col, row)
