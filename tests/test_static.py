"""Static heatmaps (scoring.static) on the real CMU scan and on small lossless pyramids."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

import scoring.static as static
from scoremap.checkout import REPO_ROOT
from scoring.errors import ConfigError
from scoring.static import HeatmapParams, choose_vis_level, render_static

PATCH = 256
# a lattice over the left/top part of the 2220x2967 scan: x < 1280 and y < 2816 are covered
XS, YS = np.meshgrid(np.arange(0, 1280, PATCH), np.arange(0, 2816, PATCH))
COORDS = np.stack([XS.ravel(), YS.ravel()], 1).astype(np.int32)
TOP = int(np.flatnonzero((COORDS[:, 0] == 512) & (COORDS[:, 1] == 768))[0])
SCORES = np.random.default_rng(0).normal(size=len(COORDS)).astype(np.float32)
SCORES[TOP] = SCORES.max() + 1.0


def load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def cmu(cmu_slide):
    slide = openslide.OpenSlide(str(cmu_slide))
    yield slide
    slide.close()


@pytest.fixture(scope="module")
def cmu_pixels(cmu) -> np.ndarray:
    return np.asarray(cmu.read_region((0, 0), 0, cmu.dimensions).convert("RGB"))


@pytest.fixture(scope="module")
def default_render(cmu, tmp_path_factory):
    out = tmp_path_factory.mktemp("default")
    render_static(
        cmu, COORDS, SCORES, PATCH, HeatmapParams(), out / "s_heatmap.png", out / "s_original.png"
    )
    return out


def render(
    slide, tmp_path: Path, name: str = "h.png", coords=COORDS, scores=SCORES, patch=PATCH, **params
) -> np.ndarray:
    path = tmp_path / name
    render_static(slide, coords, scores, patch, HeatmapParams(**params), path, None)
    return load(path)


# -- the real scan ---------------------------------------------------------------------------


def test_top_patch_shows_the_top_colour_at_alpha_and_other_pixels_are_the_slide(
    default_render, cmu_pixels
):
    heat = load(default_render / "s_heatmap.png")
    assert heat.shape == cmu_pixels.shape  # vis_level -1 on a 1-level slide: level 0
    top = np.array(matplotlib.colormaps["jet"](1.0, bytes=True)[:3], float)
    area = (slice(768, 768 + PATCH), slice(512, 512 + PATCH))
    want = 0.4 * top + 0.6 * cmu_pixels[area]
    assert np.abs(heat[area] - want).max() <= 1.0
    outside = np.ones(heat.shape[:2], bool)
    outside[:2816, :1280] = False
    np.testing.assert_array_equal(heat[outside], cmu_pixels[outside])
    assert (heat[:2816, :1280] != cmu_pixels[:2816, :1280]).any(axis=-1).mean() > 0.99


def test_original_equals_the_slide_at_the_level(default_render, cmu_pixels):
    np.testing.assert_array_equal(load(default_render / "s_original.png"), cmu_pixels)
    assert sorted(p.name for p in default_render.iterdir()) == ["s_heatmap.png", "s_original.png"]


def test_roi_renders_only_the_box(cmu, cmu_pixels, tmp_path):
    heat = render(cmu, tmp_path, roi=(1000, 2500, 1800, 2967))
    assert heat.shape == (467, 800, 3)
    np.testing.assert_array_equal(heat[400, 500], cmu_pixels[2900, 1500])  # outside every patch
    assert (heat[100, 100] != cmu_pixels[2600, 1100]).any()  # under a patch
    with pytest.raises(ConfigError, match="ROI"):
        render(cmu, tmp_path, roi=(3000, 0, 4000, 100))


def test_roi_percentiles_rank_the_patches_inside_it(cmu, tmp_path):
    """As in CLAM, an ROI's colours rank its own patches: its best patch gets the top colour even
    though patches elsewhere on the slide score higher."""
    inside = [
        int(np.flatnonzero((COORDS[:, 0] == x) & (COORDS[:, 1] == y))[0])
        for x, y in ((0, 0), (256, 0), (0, 256), (256, 256))
    ]
    best = max(inside, key=lambda i: SCORES[i])
    assert SCORES[best] < SCORES.max()
    heat = render(cmu, tmp_path, roi=(0, 0, 512, 512), alpha=1.0)
    x, y = COORDS[best]
    np.testing.assert_array_equal(
        heat[y + 100, x + 100], matplotlib.colormaps["jet"](1.0, bytes=True)[:3]
    )


def test_custom_downsample_halves_both_images(cmu, tmp_path):
    path, orig = tmp_path / "h.png", tmp_path / "o.png"
    render_static(cmu, COORDS, SCORES, PATCH, HeatmapParams(custom_downsample=2), path, orig)
    assert load(path).shape == (1483, 1110, 3)
    assert load(orig).shape == (1483, 1110, 3)


def test_blur_smooths_the_colours_but_not_the_slide_outside_patches(
    cmu, cmu_pixels, default_render, tmp_path
):
    sharp = load(default_render / "s_heatmap.png")
    blurred = render(cmu, tmp_path, blur=True)
    inside = np.zeros(sharp.shape[:2], bool)
    inside[:2816, :1280] = True
    assert (np.abs(blurred.astype(int) - sharp)[inside].max(axis=-1) > 10).mean() > 0.2
    np.testing.assert_array_equal(blurred[~inside], cmu_pixels[~inside])


def test_alpha_zero_is_the_slide_and_alpha_one_the_pure_colours(cmu, cmu_pixels, tmp_path):
    np.testing.assert_array_equal(render(cmu, tmp_path, alpha=0.0), cmu_pixels)
    opaque = render(cmu, tmp_path, alpha=1.0, cmap="viridis")
    np.testing.assert_array_equal(
        opaque[800, 600], matplotlib.colormaps["viridis"](1.0, bytes=True)[:3]
    )


def test_blank_canvas_and_binarize(cmu, tmp_path):
    heat = render(cmu, tmp_path, alpha=1.0, blank_canvas=True, binarize=True, binary_thresh=0.5)
    cm = matplotlib.colormaps["jet"]
    assert (heat[2900, 2000] == 255).all()  # white outside patches
    colours = {tuple(c) for c in heat[:2816, :1280].reshape(-1, 3)}
    # patches above the threshold: the top colour; below it: not painted (blank canvas shows)
    assert colours == {(255, 255, 255), tuple(cm(1.0, bytes=True)[:3])}
    top = (heat[:2816, :1280] != 255).any(axis=-1).mean()
    assert 0.3 < top < 0.7  # about half the patches lie above the 0.5 percentile


def test_tiff_is_lossless_like_png_and_jpeg_is_close(cmu, default_render, tmp_path):
    png = load(default_render / "s_heatmap.png")
    np.testing.assert_array_equal(render(cmu, tmp_path, "h.tiff"), png)
    assert np.abs(render(cmu, tmp_path, "h.jpg").astype(int) - png).mean() < 3


@pytest.mark.parametrize(
    "params, key",
    [
        ({"vis_level": 1}, "heatmap_arguments.vis_level"),
        ({"vis_level": -2}, "heatmap_arguments.vis_level"),
        ({"alpha": 1.5}, "heatmap_arguments.alpha"),
        ({"cmap": "no_such_map"}, "heatmap_arguments.cmap"),
        ({"custom_downsample": 0.5}, "heatmap_arguments.custom_downsample"),
    ],
)
def test_bad_parameters_name_the_config_key_and_write_nothing(cmu, tmp_path, params, key):
    with pytest.raises(ConfigError) as err:
        render(cmu, tmp_path, **params)
    assert key in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_areas_without_scan_pixels_show_white_not_black(tmp_path):
    pixels = np.zeros((300, 400, 4), np.uint8)
    pixels[:, :200] = (200, 100, 150, 255)  # scanned half; the right half is transparent
    slide = openslide.ImageSlide(Image.fromarray(pixels, "RGBA"))
    path, orig = tmp_path / "h.png", tmp_path / "o.png"
    render_static(slide, np.array([[0, 0]]), np.array([1.0]), 64, HeatmapParams(), path, orig)
    np.testing.assert_array_equal(load(orig)[:, 200:], 255)
    np.testing.assert_array_equal(load(path)[100:, 200:], 255)
    assert (load(path)[100:, :200] == (200, 100, 150)).all()  # below the patch: the scan itself


def test_unknown_extension_is_a_config_error(cmu, tmp_path):
    with pytest.raises(ConfigError, match=r"heatmap_arguments.save_ext"):
        render(cmu, tmp_path, "h.bmp")


def test_a_failed_render_leaves_no_file(cmu, tmp_path, monkeypatch):
    real_write = Path.write_bytes

    def broken(self, data):
        real_write(self, bytes(data)[: len(data) // 2])  # half the file reaches the disk
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        render(cmu, tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- levels, on a lossless generic-TIFF pyramid (downsamples 1, 4, 16, 64) ---------------------


@pytest.fixture(scope="module")
def pyramid(cmu, tmp_path_factory):
    """2048x2048 real tissue with levels reduced 4x each, deflate tiles: pixels read back exactly."""
    levels = [np.asarray(cmu.read_region((0, 0), 0, (2048, 2048)).convert("RGB"))]
    for _ in range(3):
        levels.append(np.asarray(Image.fromarray(levels[-1]).reduce(4)))
    path = tmp_path_factory.mktemp("pyramid") / "pyramid.tiff"
    with tifffile.TiffWriter(path) as tif:
        for k, pixels in enumerate(levels):
            tile = 256 if min(pixels.shape[:2]) >= 256 else 16
            tif.write(
                pixels,
                tile=(tile, tile),
                photometric="rgb",
                compression="zlib",
                subfiletype=1 if k else 0,
            )
    slide = openslide.OpenSlide(str(path))
    assert slide.level_downsamples == (1.0, 4.0, 16.0, 64.0)
    yield SimpleNamespace(slide=slide, levels=levels)
    slide.close()


def test_auto_level_is_the_one_closest_to_32x(pyramid):
    assert choose_vis_level(pyramid.slide, -1) == 2  # 16x (64x is farther)
    assert choose_vis_level(pyramid.slide, 3) == 3
    scanner = SimpleNamespace(level_count=7, level_downsamples=(1, 2, 4, 8, 16, 31.99, 63.98))
    assert choose_vis_level(scanner, -1) == 5  # OpenSlide's best level for 32 would be 16x


def test_registration_at_4x_follows_the_floor_ceil_rule(pyramid, tmp_path):
    coords = np.array([[10, 6], [1000, 1001]])
    path, orig = tmp_path / "h.png", tmp_path / "o.png"
    render_static(
        pyramid.slide,
        coords,
        np.array([1.0, 2.0]),
        64,
        HeatmapParams(vis_level=1, alpha=1.0, blank_canvas=True),
        path,
        orig,
    )
    painted = (load(path) != 255).any(axis=-1)
    want = np.zeros((512, 512), bool)
    want[1:18, 2:19] = True  # rows floor(6/4)..ceil(70/4), cols floor(10/4)..ceil(74/4)
    want[250:267, 250:266] = True  # rows floor(1001/4)..ceil(1065/4), cols 250..ceil(1064/4)
    np.testing.assert_array_equal(painted, want)
    np.testing.assert_array_equal(load(orig), pyramid.levels[1])


@pytest.mark.parametrize(
    "params",
    [
        {"vis_level": 0},
        {"vis_level": 0, "blur": True, "custom_downsample": 3},
        {"vis_level": 1, "roi": (100, 37, 1900, 2000), "custom_downsample": 1.7},
    ],
)
def test_strips_join_without_seams(pyramid, tmp_path, monkeypatch, params):
    rng = np.random.default_rng(5)
    coords = rng.integers(0, 1900, size=(400, 2))
    scores = rng.random(400)
    whole = render(pyramid.slide, tmp_path, "whole.png", coords, scores, 128, **params)
    monkeypatch.setattr(static, "_STRIP_PIXELS", 20_000)
    strips = render(pyramid.slide, tmp_path, "strips.png", coords, scores, 128, **params)
    diff = np.abs(strips.astype(int) - whole)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


# -- hygiene ---------------------------------------------------------------------------------


def test_colouring_modules_do_not_import_torch():
    code = (
        "import sys; import scoremap.colormap, scoremap.grid, scoring.static; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("ext", ["png", "jpg", "tiff"])
def test_every_format_decodes_to_the_canvas(tmp_path, ext):
    """Noise does not compress into the PNG buffer guessed for tissue: the retry still writes it."""
    rng = np.random.default_rng(1)
    canvas = rng.integers(0, 256, size=(300, 500, 3), dtype=np.uint8)
    canvas[:, :250] = (230, 200, 220)
    path = tmp_path / f"x.{ext}"
    static._save(canvas, path, {"png": "png", "jpg": "jpeg", "tiff": "tiff"}[ext])
    back = np.asarray(Image.open(path).convert("RGB"))
    if ext == "jpg":
        assert (
            np.abs(back[:, :200].astype(int) - canvas[:, :200]).max() <= 3
        )  # flat half, far from the noise
    else:
        np.testing.assert_array_equal(back, canvas)
    assert [p.name for p in tmp_path.iterdir()] == [f"x.{ext}"]
