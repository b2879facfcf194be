"""Overlay tiles: same Deep Zoom geometry as the slide, exact registration, averaging, alpha.

Patch facts come from the fixture cohort (tests/viewer_fixtures.py): an isolated patch at odd
level-0 coordinates with nothing around it, two patches overlapping by half, a lattice with a
hole. Expected colours are computed from the scores with the same normalisation and palette
that the static heatmaps use.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from scoremap.blockmap import Blockmap
from scoremap.colormap import TRANSPARENT, palette, to_indices
from scoremap.grid import rasterize_blurred
from scoremap.normalize import normalize_scores
from scoremap.patch_index import PatchIndex
from scoremap.raster import ScoreSource, Window, window_indices
from tests.viewer_fixtures import PATCH, write_scored
from viewer.app import create_app
from viewer.geometry import DeepZoomGeometry
from viewer.overlay import render_overlay_tile, tile_indices
from viewer.params import OverlayParams
from viewer.scores import SlideScores
from viewer.state import EXTENSION_KEY


def geometry(client, slide_id: str) -> DeepZoomGeometry:
    meta = client.get(f"/api/slides/{slide_id}").get_json()
    return DeepZoomGeometry.for_slide(
        meta["dimensions"], [lv["dimensions"] for lv in meta["levels"]], {}
    )


def tile_png(client, slide_id: str, level: int, col: int, row: int, query: str = "") -> Image.Image:
    r = client.get(f"/overlay/{slide_id}_files/{level}/{col}_{row}.png{query}")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.mimetype == "image/png"
    return Image.open(io.BytesIO(r.data))


class Pixels:
    """Read overlay pixels by Deep Zoom level coordinates, fetching each tile once."""

    def __init__(self, client, slide_id: str, query: str = ""):
        self.client, self.slide_id, self.query = client, slide_id, query
        self.geo = geometry(client, slide_id)
        self.tiles: dict[tuple[int, int, int], Image.Image] = {}

    def _tile(self, level: int, z_x: int, z_y: int) -> tuple[Image.Image, int, int]:
        col, row = z_x // 254, z_y // 254
        key = (level, col, row)
        if key not in self.tiles:
            img = tile_png(self.client, self.slide_id, level, col, row, self.query)
            box = self.geo.tile_box(level, col, row)
            assert img.size == (box.z_w, box.z_h)
            self.tiles[key] = img
        box = self.geo.tile_box(level, col, row)
        return self.tiles[key], z_x - box.z_x, z_y - box.z_y

    def rgba(self, level: int, z_x: int, z_y: int) -> tuple[int, int, int, int]:
        img, x, y = self._tile(level, z_x, z_y)
        return img.convert("RGBA").getpixel((x, y))

    def index(self, level: int, z_x: int, z_y: int) -> int:
        img, x, y = self._tile(level, z_x, z_y)
        assert img.mode == "P"
        return img.getpixel((x, y))


def expected_rgb(cmap: str, value01: float) -> tuple[int, int, int]:
    idx = int(to_indices(np.array([value01], np.float32))[0])
    return tuple(int(v) for v in palette(cmap)[idx])


def test_dzi_identical_for_slide_and_overlay(client, viewer_cohort):
    for slide_id in ("CMU-1-Small-Region", "pyramid"):
        slide = client.get(f"/slide/{slide_id}.dzi").get_data(as_text=True)
        overlay = client.get(f"/overlay/{slide_id}.dzi").get_data(as_text=True)
        assert slide.replace('Format="jpeg"', 'Format="png"') == overlay
        assert 'TileSize="254" Overlap="1"' in overlay


@pytest.mark.parametrize("slide_id", ["pyramid", "CMU-1-Small-Region"])
def test_isolated_patch_registration_deepest_and_coarse(client, viewer_cohort, slide_id):
    s = viewer_cohort.scored[slide_id]
    x, y = (int(v) for v in s.l0_coords[s.isolated])
    px = Pixels(client, slide_id)
    top = px.geo.level_count - 1
    colour = expected_rgb("jet", normalize_scores(s.scores, "percentile")[s.isolated])
    # deepest level: exactly [x, x+s) x [y, y+s)
    for zx, zy in [(x, y), (x + PATCH - 1, y), (x, y + PATCH - 1), (x + PATCH - 1, y + PATCH - 1)]:
        assert px.rgba(top, zx, zy) == (*colour, 255), (zx, zy)
    for zx, zy in [
        (x - 1, y),
        (x, y - 1),
        (x + PATCH, y),
        (x, y + PATCH),
        (x - 1, y - 1),
        (x + PATCH, y + PATCH),
    ]:
        assert px.rgba(top, zx, zy)[3] == 0, (zx, zy)
    # coarse levels (downsample 4 and 8): every pixel the patch touches, and no other
    for level in (top - 2, top - 3):
        d = px.geo.l0_downsample(level)
        z0x, z0y = x // d, y // d
        z1x, z1y = -(-(x + PATCH) // d), -(-(y + PATCH) // d)  # exclusive
        assert px.rgba(level, z0x, z0y) == (*colour, 255)
        assert px.rgba(level, z1x - 1, z1y - 1) == (*colour, 255)
        for zx, zy in [(z0x - 1, z0y), (z0x, z0y - 1), (z1x, z0y), (z0x, z1y)]:
            assert px.rgba(level, zx, zy)[3] == 0, (level, zx, zy)
        # registration within one pixel of the true edges
        assert abs(z0x * d - x) < d and abs(z1x * d - (x + PATCH)) < d


def test_overlapping_patches_are_averaged(client, viewer_cohort):
    s = viewer_cohort.scored["pyramid"]
    a, b = s.overlap_pair
    (ax, ay), (bx, by) = s.l0_coords[a], s.l0_coords[b]
    assert bx - ax == PATCH // 2 and by == ay
    v = normalize_scores(s.scores, "percentile")
    px = Pixels(client, "pyramid")
    top = px.geo.level_count - 1
    assert px.rgba(top, ax + 5, ay + 5) == (*expected_rgb("jet", v[a]), 255)
    assert px.rgba(top, bx + 5, by + 5) == (*expected_rgb("jet", (v[a] + v[b]) / 2), 255)
    assert px.rgba(top, ax + PATCH + 5, ay + 5) == (*expected_rgb("jet", v[b]), 255)


def test_transparent_where_no_patch(client, viewer_cohort):
    # tile 0_0 at the deepest level lies on glass: every pixel fully transparent
    geo = geometry(client, "pyramid")
    top = geo.level_count - 1
    img = tile_png(client, "pyramid", top, 0, 0).convert("RGBA")
    assert np.asarray(img)[..., 3].max() == 0
    # the hole in the lattice is transparent, its neighbours are not
    s = viewer_cohort.scored["pyramid"]
    coords = {tuple(c) for c in s.l0_coords.tolist()}
    hole = next(
        (x + PATCH, y)
        for x, y in sorted(coords)
        if (x + PATCH, y) not in coords and (x + 2 * PATCH, y) in coords
    )
    px = Pixels(client, "pyramid")
    assert px.rgba(top, hole[0] + 100, hole[1] + 100)[3] == 0
    assert px.rgba(top, hole[0] - 100, hole[1] + 100)[3] == 255
    # a palette PNG with a tRNS chunk: one byte per pixel
    png = client.get(f"/overlay/pyramid_files/{top}/5_4.png").data
    assert png[25] == 3 and b"tRNS" in png and b"PLTE" in png


def test_colormap_norm_and_class_change_pixels(client, viewer_cohort):
    s = viewer_cohort.scored["CMU-1-Small-Region"]
    x, y = (int(v) + 10 for v in s.l0_coords[s.isolated])
    top = geometry(client, "CMU-1-Small-Region").level_count - 1
    cases = [
        ("?cmap=viridis", "viridis", normalize_scores(s.scores, "percentile")),
        ("?cmap=coolwarm&norm=raw", "coolwarm", normalize_scores(s.scores, "raw")),
        ("?class=0&cmap=plasma", "plasma", normalize_scores(s.per_class[:, 0], "percentile")),
        ("?class=1", "jet", normalize_scores(s.per_class[:, 1], "percentile")),
        ("?cmap=magma_r", "magma_r", normalize_scores(s.scores, "percentile")),
    ]
    for query, cmap, values in cases:
        px = Pixels(client, "CMU-1-Small-Region", query)
        assert px.rgba(top, x, y) == (*expected_rgb(cmap, values[s.isolated]), 255), query


def test_threshold_hides_low_scores(client, viewer_cohort):
    s = viewer_cohort.scored["pyramid"]
    v = normalize_scores(s.scores, "percentile")
    top = geometry(client, "pyramid").level_count - 1
    px = Pixels(client, "pyramid", "?threshold=0.5")
    lattice = [i for i in range(len(v)) if i < s.isolated]
    low = next(i for i in lattice if v[i] < 0.45)
    high = next(i for i in lattice if v[i] > 0.55)
    for i, visible in ((low, False), (high, True)):
        # sample the patch's centre quarter, away from the neighbours it may overlap
        x, y = (int(c) + PATCH // 2 for c in s.l0_coords[i])
        alpha = px.rgba(top, x, y)[3]
        assert (alpha == 255) == visible, (i, v[i])


def test_blur_equals_blurring_the_whole_slide(client, viewer_cohort):
    s = viewer_cohort.scored["pyramid"]
    v = normalize_scores(s.scores, "percentile")
    geo = geometry(client, "pyramid")
    top = geo.level_count - 1
    window = geo.l0_window()
    for level, col, row in [(top, 5, 4), (top, 4, 3), (top - 2, 1, 1), (top - 4, 0, 0)]:
        box = geo.tile_box(level, col, row)
        full = rasterize_blurred(
            s.l0_coords, v, PATCH, box.l0_downsample, window, (box.z_h, box.z_w), (box.z_y, box.z_x)
        )
        want = to_indices(full)
        img = tile_png(client, "pyramid", level, col, row, "?blur=1")
        assert np.array_equal(np.asarray(img), want), (level, col, row)
        assert (want != TRANSPARENT).any()


def test_limit_bounds_offset_moves_the_overlay():
    """With openslide.bounds-* the Deep Zoom image starts at the bounds corner (no such real slide
    is small enough to ship, so the geometry is built from properties)."""
    props = {
        "openslide.bounds-x": "3000",
        "openslide.bounds-y": "1001",
        "openslide.bounds-width": "5000",
        "openslide.bounds-height": "4000",
    }
    geo = DeepZoomGeometry.for_slide((12000, 9000), [(12000, 9000)], props)
    coords = np.array([[4000, 2000], [6001, 3003]], np.int32)
    bm = Blockmap(
        "s",
        "",
        "l",
        "abmil",
        ["a", "b"],
        1,
        np.array([0.5, 0.5]),
        np.zeros(2),
        PATCH,
        np.array([0.0, 1.0], np.float32),
        coords,
    )
    scores = SlideScores(bm)
    top = geo.level_count - 1
    x, y = 6001 - 3000, 3003 - 1001  # the patch in Deep Zoom pixels
    col, row = x // 254, y // 254
    box = geo.tile_box(top, col, row)
    params = OverlayParams("jet", None, "percentile", 0.0, False)
    idx = tile_indices(scores, geo, box, params, 1)
    lx, ly = x - box.z_x, y - box.z_y
    assert idx[ly, lx] != TRANSPARENT
    assert idx[ly, lx - 1] == TRANSPARENT and idx[ly - 1, lx] == TRANSPARENT
    png = render_overlay_tile(scores, geo, box, params, 1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), idx)


def test_etag_and_304(client):
    url = "/overlay/pyramid_files/13/5_4.png?cmap=viridis"
    first = client.get(url)
    etag = first.headers["ETag"]
    assert etag and "max-age" in first.headers["Cache-Control"]
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["ETag"] == etag
    other = client.get("/overlay/pyramid_files/13/5_4.png?cmap=jet")
    assert other.headers["ETag"] != etag
    slide = client.get("/slide/pyramid_files/13/5_4.jpeg")
    assert slide.headers["ETag"] and "max-age" in slide.headers["Cache-Control"]
    assert (
        client.get(
            "/slide/pyramid_files/13/5_4.jpeg", headers={"If-None-Match": slide.headers["ETag"]}
        ).status_code
        == 304
    )
    assert (
        client.get(
            "/slide/pyramid_files/13/5_4.jpeg", headers={"If-None-Match": '"something-else"'}
        ).status_code
        == 200
    )


def test_coarse_tiles_of_a_dense_bag_come_from_the_pyramid_and_equal_painted_ones(
    viewer_cohort, tmp_path
):
    """47,000 overlapping patches (256 px every 16 px) on the real 6000 x 4500 slide: tiles at 4x
    and coarser meet thousands of patches, so the server cuts them from the score pyramid; every
    pixel still equals the tile painted from the patches (cell_grid) to within one palette step."""
    xs, ys = np.meshgrid(np.arange(1000, 5000, 16), np.arange(700, 3700, 16))
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int32)
    raw = tmp_path / "raw"
    slide = viewer_cohort.scored["pyramid"].slide_path
    _, scores, _ = write_scored(
        raw, "dense", "normal", slide, coords, seed=11, per_class=False, model_type="abmil"
    )
    app = create_app({"RESULTS_DIR": str(raw), "SLIDES_DIR": str(viewer_cohort.slides_dir)})
    dense = app.test_client()
    geo = geometry(dense, "dense")
    values = normalize_scores(scores, "percentile").astype(np.float32)
    direct = ScoreSource(coords.astype(np.int64), values, PATCH, PatchIndex(coords, PATCH))
    state = app.extensions[EXTENSION_KEY]
    record = state.record("dense")
    pyramid = state.slide_scores(record).pyramid(1, "percentile", state.geometry(record))
    assert (
        pyramid is not None and pyramid.coarse_downsample == 4
    )  # ((1016 + 256) / 16)^2 = 6,300 patches
    pixels = 0
    for level in range(geo.level_count):
        if not pyramid.serves(geo.l0_downsample(level), geo.l0_offset):
            continue
        t_cols, t_rows = geo.t_dimensions[level]
        for col in range(t_cols):
            for row in range(t_rows):
                box = geo.tile_box(level, col, row)
                want = window_indices(
                    direct,
                    Window(geo.l0_window(), box.l0_downsample, box.z_h, box.z_w, box.z_y, box.z_x),
                )
                got = np.asarray(tile_png(dense, "dense", level, col, row))
                if want is None:
                    assert (got == TRANSPARENT).all()
                    continue
                steps = np.abs(got.astype(int) - want.astype(int))
                assert np.array_equal(got == TRANSPARENT, want == TRANSPARENT), (level, col, row)
                assert (steps <= 1).mean() >= 0.99 and steps.max() <= 1, (level, col, row)
                pixels += int((want != TRANSPARENT).sum())
    assert pixels > 100_000
