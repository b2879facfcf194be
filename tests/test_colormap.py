"""Scores to colours (scoremap.colormap): matplotlib's colours, transparency, palette PNG tiles."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from scoremap.colormap import (
    TRANSPARENT,
    available_colormaps,
    check_colormap,
    colorbar,
    colorize_rgb,
    lookup_table,
    palette,
    palette_png,
    to_indices,
)
from scoremap.errors import UnknownColormap


@pytest.mark.parametrize("name", ["jet", "viridis", "coolwarm"])
def test_lookup_table_is_matplotlibs_colormap_sampled_at_256_points(name):
    table = lookup_table(name)
    want = matplotlib.colormaps[name](np.linspace(0, 1, 256), bytes=True)[:, :3]
    assert table.shape == (256, 3) and table.dtype == np.uint8
    np.testing.assert_array_equal(table, want)
    assert not table.flags.writeable  # cached and shared: nobody may modify it
    assert lookup_table(name) is table


def test_reversed_and_uncommon_colormaps_work():
    reverse = lookup_table("jet_r").astype(int) - lookup_table("jet")[::-1]
    assert np.abs(reverse).max() <= 1  # matplotlib's own float rounding
    assert "magma" in available_colormaps()
    assert lookup_table("magma", 16).shape == (16, 3)


def test_unknown_colormap_names_the_name_and_valid_ones_without_config_keys():
    """The core says what is wrong with the name; only scoring adds its config key (test_static)."""
    with pytest.raises(UnknownColormap) as err:
        lookup_table("jett")
    msg = str(err.value)
    assert "'jett'" in msg and "did you mean jet" in msg and "heatmap_arguments" not in msg
    for name in ("jet", "coolwarm", "viridis"):
        assert name in msg
    assert check_colormap("magma_r") == "magma_r"
    with pytest.raises(UnknownColormap):
        check_colormap(None)


def test_to_indices_maps_scores_along_the_palette_and_nan_to_transparent():
    idx = to_indices(np.array([[0.0, 0.5, 1.0, np.nan, -3.0, 7.0]]))
    np.testing.assert_array_equal(idx, [[0, 127, 254, TRANSPARENT, 0, 254]])
    assert idx.dtype == np.uint8


def test_threshold_hides_low_scores():
    idx = to_indices(np.array([0.1, 0.49, 0.5, 0.9, np.nan]), threshold=0.5)
    np.testing.assert_array_equal(idx, [TRANSPARENT, TRANSPARENT, 127, 229, TRANSPARENT])


def test_colorize_uses_the_colormaps_ends_for_extreme_scores():
    rgb = colorize_rgb(to_indices(np.array([[0.0, 1.0]])), "jet")
    cm = matplotlib.colormaps["jet"]
    np.testing.assert_array_equal(rgb[0, 0], cm(0.0, bytes=True)[:3])
    np.testing.assert_array_equal(rgb[0, 1], cm(1.0, bytes=True)[:3])
    assert palette("jet").shape == (256, 3)


def test_palette_png_decodes_to_colours_with_transparent_holes():
    grid = np.linspace(0, 1, 256 * 256).reshape(256, 256)
    grid[10:20, 30:40] = np.nan
    idx = to_indices(grid)
    data = palette_png(idx, "viridis")
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "P" and im.size == (256, 256)
        rgba = np.asarray(im.convert("RGBA"))
    assert (rgba[10:20, 30:40, 3] == 0).all()
    opaque = np.ones((256, 256), bool)
    opaque[10:20, 30:40] = False
    assert (rgba[opaque, 3] == 255).all()
    np.testing.assert_array_equal(rgba[opaque, :3], colorize_rgb(idx, "viridis")[opaque])
    np.testing.assert_array_equal(
        rgba[-1, -1, :3], matplotlib.colormaps["viridis"](1.0, bytes=True)[:3]
    )


def test_palette_png_alpha_sets_the_opacity_of_every_colour():
    idx = np.array([[0, 100, TRANSPARENT]], np.uint8)
    with Image.open(io.BytesIO(palette_png(idx, "hot", alpha=0.5))) as im:
        alpha = np.asarray(im.convert("RGBA"))[0, :, 3]
    np.testing.assert_array_equal(alpha, [128, 128, 0])


def test_colorbar_runs_from_the_lowest_to_the_highest_colour():
    cm = matplotlib.colormaps["coolwarm"]
    bar = colorbar("coolwarm", 200, 12)
    assert bar.size == (200, 12) and bar.mode == "RGB"
    px = np.asarray(bar)
    np.testing.assert_array_equal(px[5, 0], cm(0.0, bytes=True)[:3])
    np.testing.assert_array_equal(px[5, -1], cm(1.0, bytes=True)[:3])
    tall = np.asarray(colorbar("coolwarm", 10, 100))
    np.testing.assert_array_equal(tall[0, 3], cm(1.0, bytes=True)[:3])  # high at the top
    np.testing.assert_array_equal(tall[-1, 3], cm(0.0, bytes=True)[:3])
