"""Slide tiles equal openslide's DeepZoomGenerator pixel for pixel, on real slides of every kind.

The reference is built independently here: DeepZoomGenerator(tile_size=254, overlap=1,
limit_bounds=True).get_tile, the slide's ICC profile converted to sRGB with the profile's
default intent (as openslide's Deep Zoom server does), JPEG-encoded at the server's quality.
Checked at the deepest levels and coarser ones, at corner, edge and interior tiles.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image, ImageCms

from scoremap.slides import slide_mpp
from tests.conftest import SHARED_TESTDATA, shared_path
from tests.viewer_fixtures import write_scored
from viewer.app import create_app
from viewer.slides import OpenedSlide

QUALITY = 75


def reference_tile(
    slide: openslide.OpenSlide, dz: DeepZoomGenerator, level: int, col: int, row: int
) -> Image.Image:
    tile = dz.get_tile(level, (col, row))
    profile = slide.color_profile
    if profile is not None:
        transform = ImageCms.buildTransform(
            profile,
            ImageCms.createProfile("sRGB"),
            "RGB",
            "RGB",
            ImageCms.getDefaultIntent(profile),
        )
        tile = ImageCms.applyTransform(tile, transform)
    return tile


def jpeg_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def encoded_pixels(image: Image.Image) -> np.ndarray:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=QUALITY)
    return jpeg_pixels(buf.getvalue())


def sample_tiles(dz: DeepZoomGenerator) -> list[tuple[int, int, int]]:
    """Corner, edge and interior tiles of the deepest levels and of two coarse ones."""
    top = dz.level_count - 1
    levels = sorted({top, top - 1, top - 3, max(0, top - 6), max(0, top - 9)})
    out = []
    for level in levels:
        cols, rows = dz.level_tiles[level]
        for col, row in {
            (0, 0),
            (cols - 1, rows - 1),
            (cols // 2, rows // 2),
            (cols - 1, 0),
            (0, rows - 1),
        }:
            out.append((level, col, row))
    return out


def check_slide_tiles(client, slide_id: str, path: Path) -> int:
    """Compare the served tiles (and the in-process tile) with the reference; returns #tiles."""
    with openslide.open_slide(
        str(path)
    ) as slide:  # openslide's own choice: OpenSlide, else ImageSlide
        dz = DeepZoomGenerator(slide, 254, 1, True)
        dzi = client.get(f"/slide/{slide_id}.dzi")
        assert dzi.status_code == 200
        assert dzi.get_data(as_text=True) == dz.get_dzi("jpeg")
        opened = OpenedSlide(path, None, 254, 1, True)
        tiles = sample_tiles(dz)
        for level, col, row in tiles:
            ref = reference_tile(slide, dz, level, col, row)
            assert np.array_equal(np.asarray(opened.tile(level, col, row)), np.asarray(ref)), (
                level,
                col,
                row,
            )
            got = client.get(f"/slide/{slide_id}_files/{level}/{col}_{row}.jpeg")
            assert got.status_code == 200, got.get_data(as_text=True)
            assert got.mimetype == "image/jpeg"
            pixels = jpeg_pixels(got.data)
            assert pixels.shape[:2] == (ref.size[1], ref.size[0])
            assert np.array_equal(pixels, encoded_pixels(ref)), (slide_id, level, col, row)
    return len(tiles)


def test_cmu_scan_tiles_equal_deepzoom(client, viewer_cohort):
    assert (
        check_slide_tiles(
            client, "CMU-1-Small-Region", viewer_cohort.scored["CMU-1-Small-Region"].slide_path
        )
        >= 15
    )


def test_multilevel_pyramid_tiles_equal_deepzoom(client, viewer_cohort):
    path = viewer_cohort.scored["pyramid"].slide_path
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_count == 4  # tiles at coarse Deep Zoom levels come from levels 1..3
    assert check_slide_tiles(client, "pyramid", path) >= 15


# ----------------------------------------------------------------------------------------------
# ../shared/testdata/slides: NDPI, DICOM, JPEG 2000 SVS (ICC profile, no MPP), generic TIFF and
# broken files, served through --results/--slides with the shared folder as the slide root.

READABLE = {
    "test3-DAPI-2-(387)": "test3-DAPI-2-(387).ndpi",
    "dicom-camelyon": "dicom-camelyon/multiframe_camelyon_challenge_image.dcm",
    "tcga-cr-7395-01a-01-ts1": "tcga-cr-7395-01a-01-ts1.svs",
    "boxes": "boxes.tiff",
    "small": "small.svs",
    "dicom-boxes": "dicom-boxes/boxes_0.dcm",
    # a plain (untiled) TIFF OpenSlide refuses: scoring reads it through Pillow, so the viewer does too
    "kidney-48-5": "kidney-48-5.tif",
}
UNREADABLE = {
    "unreadable": "unreadable.svs",
    "unopenable": "unopenable.tiff",
    "broken": "broken.svs",
}


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory):
    slides = shared_path("slides")
    raw = tmp_path_factory.mktemp("shared-results")
    coords = np.array([[0, 0], [8, 8]], dtype=np.int32)
    for seed, (slide_id, rel) in enumerate({**READABLE, **UNREADABLE}.items()):
        if (slides / rel).exists():
            write_scored(raw, slide_id, "lbl", slides / rel, coords, seed)
    app = create_app({"RESULTS_DIR": str(raw), "SLIDES_DIR": str(slides)})
    return app.test_client()


@pytest.mark.shared
@pytest.mark.parametrize("slide_id", sorted(READABLE))
def test_shared_slides_tiles_equal_deepzoom(shared_client, slide_id):
    path = SHARED_TESTDATA / "slides" / READABLE[slide_id]
    if not path.exists():
        pytest.skip(f"{path} absent")
    assert check_slide_tiles(shared_client, slide_id, path) >= 1


@pytest.mark.shared
def test_shared_cohort_marks_unreadable_slides(shared_client):
    body = shared_client.get("/api/slides").get_json()
    by_id = {s["id"]: s for s in body["slides"]}
    for slide_id, rel in UNREADABLE.items():
        if not (SHARED_TESTDATA / "slides" / rel).exists():
            continue
        entry = by_id[slide_id]
        assert entry["readable"] is False and entry["error"], entry
        assert entry["thumbnail_url"] is None
        for url in (
            f"/slide/{slide_id}.dzi",
            f"/slide/{slide_id}_files/0/0_0.jpeg",
            f"/overlay/{slide_id}_files/0/0_0.png",
            f"/slides/{slide_id}/thumbnail.jpeg",
            f"/api/slides/{slide_id}",
        ):
            r = shared_client.get(url)
            assert r.status_code == 422, (url, r.status_code)
            assert "OpenSlide" in r.get_json()["error"]
    for slide_id, rel in READABLE.items():
        if (SHARED_TESTDATA / "slides" / rel).exists():
            assert by_id[slide_id]["readable"] is True, by_id[slide_id]


@pytest.mark.shared
def test_jpeg2000_svs_without_mpp_has_null_mpp_and_icc_applied(shared_client):
    path = shared_path("slides", "tcga-cr-7395-01a-01-ts1.svs")
    meta = shared_client.get("/api/slides/tcga-cr-7395-01a-01-ts1").get_json()
    assert meta["mpp"] == {"x": None, "y": None}
    assert meta["objective_power"] is None
    assert meta["dimensions"] == [4443, 3567]
    assert [lv["downsample"] for lv in meta["levels"]] == pytest.approx([1.0, 2.0], abs=0.01)
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.color_profile is not None  # the ICC path is exercised by the tile test


@pytest.mark.shared
def test_ndpi_metadata_and_quoted_id(shared_client):
    shared_path("slides", READABLE["test3-DAPI-2-(387)"])
    meta = shared_client.get("/api/slides/test3-DAPI-2-(387)").get_json()
    assert meta["dimensions"] == [3968, 4864]
    assert meta["mpp"]["x"] == pytest.approx(0.2282, abs=1e-3)
    assert meta["level_count"] == 7
    assert meta["dzi"]["slide"].endswith(".dzi")
    assert shared_client.get(meta["dzi"]["slide"]).status_code == 200


@pytest.mark.parametrize(
    "props,want",
    [
        ({"openslide.mpp-x": "0.2527", "openslide.mpp-y": "0.2527"}, (0.2527, 0.2527)),
        ({"openslide.mpp-x": "0.25"}, None),  # areas and scale bars need both axes
        ({"openslide.mpp-x": "0", "openslide.mpp-y": "0.25"}, None),
        ({"openslide.mpp-x": "inf", "openslide.mpp-y": "0.25"}, None),
        ({"openslide.mpp-x": "nan", "openslide.mpp-y": "nan"}, None),
        ({"openslide.mpp-x": "n/a", "openslide.mpp-y": "0.25"}, None),
        ({}, None),
    ],
)
def test_a_slide_has_a_scale_only_when_both_axes_are_positive_numbers(props, want):
    """The one reading of a slide's microns per pixel (scoremap.slides.slide_mpp): the viewer's
    metadata, areas and scale bars take it."""
    assert slide_mpp(props) == want
