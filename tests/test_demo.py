"""The demo data builder: tiled pyramids from real tissue, tissue mask, coords layouts, features, model.

Everything here runs on small sizes (a few thousand pixels a side, one slide a quarter of the
demo's) so the module stays well under 30 s; the same code builds the 32768x24576 demo slide and
the benchmark slides.
"""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import openslide
import pytest
import torch

from demo.features import FEATURE_DIM, FEATURE_NAMES, NUCLEI_INDEX, describe, patch_features
from demo.patches import patch_grid, tissue_mask, write_clam, write_trident
from demo.pyramid import write_pyramid
from demo.tissue import level_dimensions, tissue_source

# Regions of CMU-1-Small-Region (level 0, 256 px), checked by eye: epidermis full of nuclei,
# sparse dermis at the tissue edge, and empty glass.
NUCLEI_DENSE = (1600, 2500)
SPARSE = (1750, 1900)
GLASS = (100, 100)


def _rgb(
    slide: openslide.OpenSlide, xy: tuple[int, int], level: int, size: tuple[int, int]
) -> np.ndarray:
    return np.asarray(slide.read_region(xy, level, size).convert("RGB"))


@pytest.fixture(scope="module")
def source(cmu_slide) -> np.ndarray:
    return tissue_source(cmu_slide, 1024)


@pytest.fixture(scope="module")
def svs(tmp_path_factory, source):
    path = tmp_path_factory.mktemp("pyr") / "tiled.svs"
    return write_pyramid(path, 6144, 4096, source, mpp=0.5, seed=3)


@pytest.fixture(scope="module")
def regions(tmp_path_factory, cmu_slide):
    """A slide a quarter of the demo's large one, from the same 2048-px crop, patched and
    described as the demo does it: (coords, nuclei fraction) of its 512-px tissue patches."""
    path = tmp_path_factory.mktemp("regions") / "regions.svs"
    write_pyramid(path, 16384, 12288, tissue_source(cmu_slide), seed=1)
    coords = patch_grid(path, 512, mask=tissue_mask(path))
    return coords, patch_features(path, coords, 512)[:, NUCLEI_INDEX]


# ----------------------------------------------------------------------------------------------
# pyramid


def test_tissue_source_is_real_tissue(source):
    assert source.shape == (1024, 1024, 3) and source.dtype == np.uint8
    sat = (source.max(-1).astype(int) - source.min(-1)) / np.maximum(source.max(-1), 1)
    assert (sat > 0.08).mean() > 0.6  # the crop is placed where the scan is mostly tissue
    assert source.std() > 25


def test_svs_opens_with_levels_and_mpp(svs):
    with openslide.OpenSlide(str(svs)) as s:
        assert s.properties["openslide.vendor"] == "aperio"
        assert s.dimensions == (6144, 4096)
        assert s.level_count >= 3
        assert [round(d, 3) for d in s.level_downsamples[:3]] == [1.0, 2.0, 4.0]
        assert s.level_dimensions == tuple(level_dimensions(6144, 4096))
        assert max(s.level_dimensions[-1]) <= 1000
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert s.properties["openslide.objective-power"] == "20"


def test_pixels_are_tissue_and_levels_agree(svs):
    with openslide.OpenSlide(str(svs)) as s:
        # the densest tissue region at level 2, then the same area at levels 0 and 1
        lw, lh = s.level_dimensions[2]
        low = _rgb(s, (0, 0), 2, (lw, lh)).astype(np.int16)
        sat = low.max(-1) - low.min(-1)
        ys, xs = np.nonzero(sat > 40)
        cy, cx = int(np.median(ys)) * 4, int(np.median(xs)) * 4
        x0, y0 = (cx - 512) // 4 * 4, (cy - 512) // 4 * 4
        l0 = _rgb(s, (x0, y0), 0, (1024, 1024)).astype(np.float32)
        l1 = _rgb(s, (x0, y0), 1, (512, 512)).astype(np.float32)
        l2 = _rgb(s, (x0, y0), 2, (256, 256)).astype(np.float32)
    assert l0.std() > 20, "level 0 should show real tissue, not a flat colour"
    down1 = l0.reshape(512, 2, 512, 2, 3).mean((1, 3))
    down2 = l0.reshape(256, 4, 256, 4, 3).mean((1, 3))
    # per pixel, only JPEG noise separates the levels (both are Q75 4:2:0 tiles) ...
    assert np.abs(l1 - down1).mean() < 10
    assert np.abs(l2 - down2).mean() < 10
    # ... and it averages out: 8x8-pixel block means agree closely
    blocks = lambda a: a.reshape(a.shape[0] // 8, 8, a.shape[1] // 8, 8, 3).mean((1, 3))  # noqa: E731
    assert np.abs(blocks(l1) - blocks(down1)).mean() < 3
    assert np.abs(blocks(l2) - blocks(down2)).mean() < 3
    # registration: no one-pixel shift of level 1 fits level 0 better than none
    inner = l1[2:-2, 2:-2]
    err = {
        (dy, dx): np.abs(inner - down1[2 + dy : 510 + dy, 2 + dx : 510 + dx]).mean()
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    }
    assert min(err, key=err.get) == (0, 0)


def test_tiled_tissue_is_continuous(svs):
    # quilt cells (and tiles) meet every 256 px: crossing one changes the colour no more than
    # any other step between neighbouring pixels (a mosaic of pasted blocks jumps there)
    with openslide.OpenSlide(str(svs)) as s:
        lw, lh = s.level_dimensions[2]
        low = _rgb(s, (0, 0), 2, (lw, lh)).astype(np.int16)
        ys, xs = np.nonzero(low.max(-1) - low.min(-1) > 40)
        x0, y0 = (
            (int(np.median(xs)) * 4 - 512) // 256 * 256,
            (int(np.median(ys)) * 4 - 512) // 256 * 256,
        )
        px = _rgb(s, (x0, y0), 0, (1024, 1024)).astype(np.float32)
    assert px.std() > 20
    border = np.arange(1023) % 256 == 255  # the step from column/row 255 to 256, 511 to 512, ...
    for axis, mean_axes in ((1, (0, 2)), (0, (1, 2))):
        step = np.abs(np.diff(px, axis=axis)).mean(mean_axes)
        assert step[border].mean() < 1.3 * step[~border].mean(), axis


def test_nuclei_dense_tissue_forms_regions_many_patches_wide(regions):
    from scipy import ndimage

    from demo.build import DENSE_THRESHOLD

    coords, density = regions
    dense = density > DENSE_THRESHOLD
    assert len(coords) > 250 and 0.08 < dense.mean() < 0.6  # both kinds of tissue, stroma most
    grid = np.full((12288 // 512, 16384 // 512), np.nan)
    grid[coords[:, 1] // 512, coords[:, 0] // 512] = density
    # neighbouring patches agree (a checkerboard of random blocks has no correlation) ...
    a = np.r_[grid[:, :-1].ravel(), grid[:-1].ravel()]
    b = np.r_[grid[:, 1:].ravel(), grid[1:].ravel()]
    both = ~np.isnan(a) & ~np.isnan(b)
    assert np.corrcoef(a[both], b[both])[0, 1] > 0.5
    # ... and the dense patches join into regions: the largest spans several patches each way
    labels, _ = ndimage.label(grid > DENSE_THRESHOLD)
    sizes = np.bincount(labels.ravel())[1:]
    ys, xs = np.nonzero(labels == np.argmax(sizes) + 1)
    assert sizes.max() >= 12 and np.ptp(ys) >= 3 and np.ptp(xs) >= 3
    assert sizes.max() >= 0.3 * dense.sum()


def test_generic_tiff_and_determinism(tmp_path, source):
    a = write_pyramid(tmp_path / "a.tif", 2500, 1800, source, seed=7)
    b = write_pyramid(tmp_path / "b.tif", 2500, 1800, source, seed=7)
    with openslide.OpenSlide(str(a)) as s:
        assert s.properties["openslide.vendor"] == "generic-tiff"
        assert s.dimensions == (2500, 1800)
        assert s.level_count == 3  # 2500 -> 1250 -> 625
        assert [round(d, 2) for d in s.level_downsamples] == [1.0, 2.0, 4.0]
    digest = [hashlib.md5(p.read_bytes()).hexdigest() for p in (a, b)]
    assert digest[0] == digest[1]
    assert not list(tmp_path.glob(".*"))  # no partial files left behind


def test_write_pyramid_rejects_bad_source(tmp_path, source):
    with pytest.raises(ValueError):
        write_pyramid(tmp_path / "x.svs", 1000, 1000, np.zeros((100, 100), np.uint8))
    with pytest.raises(ValueError):
        write_pyramid(tmp_path / "x.svs", 1000, 1000, source, dense_area=1.5)


# ----------------------------------------------------------------------------------------------
# tissue mask and patches


def test_tissue_mask_rejects_glass_keeps_tissue(cmu_slide):
    mask = tissue_mask(cmu_slide)
    cover = mask.coverage(np.array([GLASS, NUCLEI_DENSE, (1024, 1024)]), 256)
    assert cover[0] < 0.05
    assert cover[1] > 0.6 and cover[2] > 0.6
    coords = patch_grid(cmu_slide, 256, mask=mask)
    assert coords.dtype == np.int64 and coords.shape[1] == 2
    assert 20 <= len(coords) <= 80  # a few dozen of the 8 x 11 grid
    assert not any((coords == GLASS).all(1))
    assert (coords % 256 == 0).all()
    assert (coords[:, 0] + 256 <= 2220).all() and (coords[:, 1] + 256 <= 2967).all()


def test_tissue_mask_on_synthetic_slide_keeps_a_glass_margin(svs):
    mask = tissue_mask(svs)
    assert 0.1 < mask.mask.mean() < 0.8
    # the border is glass (islands fade out towards the slide edge)
    assert mask.mask[:, :2].mean() == 0 and mask.mask[:2, :].mean() == 0


def test_clam_layout(tmp_path, svs):
    coords = np.array([[0, 0], [512, 1024]], dtype=np.int64)
    feats = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    h5, pt = write_clam(
        tmp_path / "feats", "s1", feats, coords, slide_path=svs, patch_size=128, patch_level=1
    )
    assert h5 == tmp_path / "feats" / "h5_files" / "s1.h5"
    assert pt == tmp_path / "feats" / "pt_files" / "s1.pt"
    with h5py.File(h5) as f:
        np.testing.assert_array_equal(f["features"][()], feats)
        assert f["coords"].dtype == np.int64
        attrs = dict(f["coords"].attrs)
    assert attrs["patch_size"] == 128 and attrs["patch_level"] == 1
    np.testing.assert_allclose(attrs["downsample"], [2.0, 2.0])
    np.testing.assert_array_equal(attrs["level_dim"], [3072, 2048])
    np.testing.assert_array_equal(attrs["downsampled_level_dim"], [3072, 2048])
    assert attrs["name"] == "s1" and "save_path" in attrs
    np.testing.assert_array_equal(torch.load(pt, weights_only=True).numpy(), feats)


def test_trident_layout(tmp_path, svs):
    coords = np.array([[0, 0], [512, 0]], dtype=np.int64)
    feats = np.ones((2, 4), np.float32)
    path = write_trident(
        tmp_path / "t" / "s2.h5",
        feats,
        coords,
        slide_path=svs,
        patch_size_level0=512,
        target_magnification=10,
    )
    with h5py.File(path) as f:
        attrs = dict(f["coords"].attrs)
        assert f["features"].shape == (2, 4)
    assert attrs["patch_size_level0"] == 512
    assert attrs["patch_size"] == 256  # at 10x on a 20x slide
    assert attrs["target_magnification"] == 10 and attrs["level0_magnification"] == 20
    assert (attrs["level0_width"], attrs["level0_height"]) == (6144, 4096)
    assert attrs["overlap"] == 0 and attrs["name"] == "s2"


def test_writers_reject_mismatched_shapes(tmp_path, svs):
    with pytest.raises(ValueError):
        write_trident(
            tmp_path / "x.h5",
            np.ones((3, 4), np.float32),
            np.zeros((2, 2)),
            slide_path=svs,
            patch_size_level0=512,
            target_magnification=10,
        )


# ----------------------------------------------------------------------------------------------
# features


def test_features_separate_nuclei_sparse_and_glass(cmu_slide):
    with openslide.OpenSlide(str(cmu_slide)) as s:
        stack = np.stack([_rgb(s, xy, 0, (256, 256)) for xy in (NUCLEI_DENSE, SPARSE, GLASS)])
    f = describe(stack)
    assert f.shape == (3, FEATURE_DIM) == (3, len(FEATURE_NAMES)) and f.dtype == np.float32
    nuclei = f[:, NUCLEI_INDEX]
    assert nuclei[0] > 2 * nuclei[1] and nuclei[1] > nuclei[2] == 0
    tissue = f[:, FEATURE_NAMES.index("tissue_fraction")]
    assert tissue[0] > 0.5 and tissue[2] < 0.05
    h_mean = f[:, FEATURE_NAMES.index("h_mean")]
    assert h_mean[0] > h_mean[1] > h_mean[2]
    assert np.linalg.norm(f[0] - f[2]) > 1.0


def test_patch_features_follow_coords_order_and_match_pixels(cmu_slide):
    coords = np.array([NUCLEI_DENSE, GLASS, SPARSE, (1024, 1024), (1280, 1024)], dtype=np.int64)
    f = patch_features(cmu_slide, coords, 256)
    perm = np.array([3, 0, 4, 2, 1])
    np.testing.assert_allclose(patch_features(cmu_slide, coords[perm], 256), f[perm], atol=1e-6)
    # the CMU scan has one level: patches are read at level 0 and averaged 4x4 (analysis scale)
    with openslide.OpenSlide(str(cmu_slide)) as s:
        px = _rgb(s, tuple(coords[0]), 0, (256, 256))
    small = (px.reshape(64, 4, 64, 4, 3).mean((1, 3), dtype=np.float32) + 0.5).astype(np.uint8)
    np.testing.assert_allclose(f[0], describe(small[None])[0], atol=1e-5)


# ----------------------------------------------------------------------------------------------
# the whole build, in miniature


def test_build_small_cohort(tmp_path):
    from demo.build import CLASS_NAMES, build_cohort, default_specs
    from scoring.config import load_config
    from scoring.models import load_model

    specs = default_specs(large=(8192, 6144), stroma=(4096, 3072))
    cohort = build_cohort(tmp_path / "demo", specs=specs, steps=500)
    assert [s.spec.slide_id for s in cohort.slides] == [
        "CMU-1-Small-Region",
        "CMU-tiled-large",
        "CMU-tiled-stroma",
    ]
    for s in cohort.slides:
        assert s.slide_path.exists() and s.features_path.exists() and s.coords_path.exists()
        assert s.features.shape == (len(s.coords), FEATURE_DIM) and len(s.coords) >= 20
        assert s.label in CLASS_NAMES
    # the large slide has its nuclei-dense regions, the stroma slide none
    assert [s.label for s in cohort.slides[1:]] == ["nuclei_dense", "nuclei_sparse"]
    with h5py.File(cohort.slides[1].coords_path) as f:
        assert f["coords"].attrs["patch_size_level0"] == 512
    with h5py.File(cohort.slides[2].coords_path) as f:
        assert f["coords"].attrs["patch_level"] == 1 and f["coords"].attrs["patch_size"] == 128

    lines = cohort.process_list.read_text().splitlines()
    assert lines[0] == "slide_id,label,process,features_path,coords_path" and len(lines) == 4

    config = load_config(cohort.config)
    assert config.model_type == "clam_sb" and config.save_exp_code == "DEMO"
    assert config.in_dim == FEATURE_DIM and [s.mode for s in config.samples] == ["topk", "bottomk"]

    # the saved checkpoint is a plain CLAM state dict; its attention follows nuclei density
    model = load_model("clam_sb", cohort.checkpoint, n_classes=2, in_dim=FEATURE_DIM)
    from demo.build import attention_density_spearman

    for s in cohort.slides:
        assert attention_density_spearman(model, s.features) > 0.5, s.spec.slide_id
    assert cohort.summary["held_out_bag_accuracy"] > 0.8

    # the second experiment: an ABMIL on the same patches, its own config and exp code
    second = load_config(cohort.second_config)
    assert (second.model_type, second.save_exp_code) == ("abmil", "DEMO_ABMIL")
    abmil = load_model("abmil", second.ckpt_path, n_classes=2, in_dim=FEATURE_DIM)
    for s in cohort.slides:
        assert attention_density_spearman(abmil, s.features) > 0.5, s.spec.slide_id

    # ground truth of the nuclei-dense tissue, measured from pixels: a file for the slides that have
    # such tissue (QuPath GeoJSON, ASAP XML), none for the stroma slide; inside it are the patches
    # whose own nuclei fraction (demo.features) says dense, outside the sparse ones
    from shapely import contains_xy

    from scoremap.annotations import read_annotations

    folder = tmp_path / "demo" / "annotations"
    assert config.annotations_dir == folder.resolve()
    assert sorted(p.name for p in folder.iterdir()) == [
        "CMU-1-Small-Region.geojson",
        "CMU-tiled-large.xml",
    ]
    for s, name in zip(
        cohort.slides[:2], ("CMU-1-Small-Region.geojson", "CMU-tiled-large.xml"), strict=True
    ):
        (cls,) = read_annotations(folder / name)
        assert cls.name == "Nuclei-dense"
        centres = s.coords + s.spec.patch_size_level0 / 2
        inside = contains_xy(cls.geometry, centres[:, 0], centres[:, 1])
        dense = s.features[:, NUCLEI_INDEX] > 0.25
        assert inside[dense].mean() > 0.7 and inside[~dense].mean() < 0.2, s.spec.slide_id

    # idempotent: a second build keeps every file
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "demo").rglob("*") if p.is_file()}
    build_cohort(tmp_path / "demo", specs=specs, steps=500)
    assert {
        p: p.stat().st_mtime_ns for p in (tmp_path / "demo").rglob("*") if p.is_file()
    } == stamps
