"""export_heatmaps.py: QuPath GeoJSON tiles and regions, the patch table, checked against independent
computations (shapely, scipy, OpenSlide) on a real slide."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import uuid
from pathlib import Path

import h5py
import numpy as np
import openslide
import pytest
from scipy import stats
from shapely.geometry import box, shape
from shapely.ops import unary_union

from exports.cli import main
from scoremap.blockmap import blockmap_path
from tests.viewer_fixtures import CLASS_NAMES, PATCH, write_scored

THRESHOLD = 0.7


@pytest.fixture()
def scored(tmp_path, cmu_slide):
    """The real CMU scan (MPP 0.499) with a lattice, an overlapping pair and an isolated patch."""
    slides = tmp_path / "slides"
    slides.mkdir()
    slide = slides / "cmu.svs"
    slide.symlink_to(cmu_slide)
    xs, ys = np.meshgrid(np.arange(100, 1400, PATCH), np.arange(100, 1600, PATCH))
    coords = np.concatenate(
        [np.stack([xs.ravel(), ys.ravel()], 1), [[1500, 2000], [1628, 2000], [300, 2500]]]
    )
    coords = coords.astype(np.int32)
    raw = tmp_path / "raw"
    _, scores, per_class = write_scored(raw / "EXP", "cmu", "tumor", slide, coords, seed=3)
    write_scored(raw / "EXP", "other", "tumor", slide, coords[:5], seed=4)
    config = tmp_path / "config.yaml"
    config.write_text(f"""exp_arguments:
  save_exp_code: EXP
  raw_save_dir: {raw}
  production_save_dir: {tmp_path / "prod"}
data_arguments:
  data_dir: {slides}
model_arguments:
  ckpt_path: {tmp_path / "none.pt"}
  model_type: clam_mb
""")
    return {
        "config": config,
        "coords": coords,
        "scores": scores,
        "per_class": per_class,
        "slide": slide,
        "out": tmp_path / "prod" / "EXP" / "exports",
        "raw": raw / "EXP",
    }


def _geojson(path: Path) -> dict:
    return json.loads(path.read_text())


def test_qupath_tiles_are_the_patch_squares_with_the_models_measurements(scored):
    assert main(["--config", str(scored["config"]), "--to", "qupath", "--no-progress"]) == 0
    doc = _geojson(scored["out"] / "qupath" / "cmu.geojson")
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(scored["coords"])
    scores = scored["scores"]
    ids = set()
    for i, feature in enumerate(doc["features"]):
        x, y = scored["coords"][i]
        assert shape(feature["geometry"]).equals(box(x, y, x + PATCH, y + PATCH))
        assert feature["properties"]["objectType"] == "tile"
        m = feature["properties"]["measurements"]
        assert m["attention"] == pytest.approx(float(scores[i]), abs=1e-6)
        assert m["attention_percentile"] == pytest.approx(
            stats.percentileofscore(scores, scores[i], kind="rank")
        )
        for c, name in enumerate(CLASS_NAMES):
            assert m[f"attention_{name}"] == pytest.approx(
                float(scored["per_class"][i, c]), abs=1e-6
            )
        assert all(isinstance(v, float) for v in m.values())
        ids.add(str(uuid.UUID(feature["id"])))
    assert len(ids) == len(doc["features"])


def test_regions_are_the_union_of_the_patches_above_the_threshold(scored):
    assert (
        main(
            [
                "--config",
                str(scored["config"]),
                "--to",
                "qupath",
                "--threshold",
                str(THRESHOLD),
                "--no-progress",
            ]
        )
        == 0
    )
    (feature,) = _geojson(scored["out"] / "qupath" / "cmu_regions.geojson")["features"]
    props = feature["properties"]
    assert (
        props["objectType"] == "annotation"
        and props["classification"]["name"] == f"attention >= {THRESHOLD:g}"
    )
    assert len(props["classification"]["color"]) == 3
    region = shape(feature["geometry"])
    scores = scored["scores"]
    percentile = stats.rankdata(scores) / len(scores)
    above = percentile >= THRESHOLD
    expected = unary_union([box(x, y, x + PATCH, y + PATCH) for x, y in scored["coords"][above]])
    assert (
        region.symmetric_difference(expected).area == 0
    )  # the round trip covers exactly those patches
    m = props["measurements"]
    assert m["area_px"] == pytest.approx(expected.area) and m["n_patches"] == int(above.sum())
    assert m["mean_attention"] == pytest.approx(float(scores[above].mean()), abs=1e-6)
    with openslide.OpenSlide(str(scored["slide"])) as slide:
        mpp = float(slide.properties["openslide.mpp-x"]) * float(
            slide.properties["openslide.mpp-y"]
        )
    assert m["area_um2"] == pytest.approx(expected.area * mpp)
    # the overlapping pair (1500, 2000) and (1628, 2000) is merged where both are above
    for x, y in scored["coords"][above]:
        assert region.covers(box(x, y, x + PATCH, y + PATCH))


def test_the_patch_table_has_wsinfers_columns_and_every_patch(scored):
    assert (
        main(
            ["--config", str(scored["config"]), "--to", "csv", "--class", "normal", "--no-progress"]
        )
        == 0
    )
    with open(scored["out"] / "csv" / "cmu_patches.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "slide_id",
        "index",
        "minx",
        "miny",
        "width",
        "height",
        "attention",
        "percentile",
        "rank",
        "attention_normal",
        "attention_tumor",
    ]
    normal = scored["per_class"][:, 0]
    assert len(rows) == len(normal)
    order = np.argsort(-normal, kind="stable")
    for i, row in enumerate(rows):
        assert (int(row["index"]), int(row["minx"]), int(row["miny"])) == (
            i,
            *map(int, scored["coords"][i]),
        )
        assert int(row["width"]) == int(row["height"]) == PATCH
        assert float(row["attention"]) == pytest.approx(
            float(normal[i]), abs=1e-6
        )  # --class normal
        assert float(row["percentile"]) == pytest.approx(
            stats.percentileofscore(normal, normal[i], kind="rank")
        )
        assert int(row["rank"]) == int(np.flatnonzero(order == i)[0]) + 1
        assert float(row["attention_tumor"]) == pytest.approx(
            float(scored["per_class"][i, 1]), abs=1e-6
        )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--to", "qupath,pdf"], "unknown format pdf"),
        (["--to", "csv", "--cmap", "jett"], "--cmap: unknown colormap 'jett'"),
        (
            ["--to", "csv", "--threshold", "1.5"],
            "--threshold must be a normalised score between 0 and 1",
        ),
        (
            ["--to", "csv", "--class", "9"],
            "--class must be a class of slide cmu: 0 (normal), 1 (tumor)",
        ),
        (["--to", "csv", "--slides", "nope"], "--slides: no blockmap for nope"),
    ],
)
def test_bad_options_stop_before_writing_anything(scored, capsys, args, message):
    assert main(["--config", str(scored["config"]), *args, "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not scored["out"].exists()


def test_a_broken_blockmap_is_named_and_the_others_are_exported(scored, caplog):
    with h5py.File(blockmap_path(scored["raw"], "tumor", "other"), "r+") as fh:
        fh.attrs["class_names"] = "not json"
    assert main(["--config", str(scored["config"]), "--to", "csv", "--no-progress"]) == 1
    assert "other: not exported" in caplog.text and "class_names" in caplog.text
    assert (scored["out"] / "csv" / "cmu_patches.csv").exists()
    assert not (scored["out"] / "csv" / "other_patches.csv").exists()
    # the class is checked against the readable slides; the broken one is still named
    caplog.clear()
    args = ["--config", str(scored["config"]), "--to", "csv", "--class", "tumor", "--no-progress"]
    assert main(args) == 1
    assert "other: not exported" in caplog.text


def test_exports_never_import_torch(scored):
    code = (
        "import sys\nclass NoTorch:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ImportError('exports must not import torch')\n"
        "sys.meta_path.insert(0, NoTorch())\nfrom exports.cli import main\n"
        f"sys.exit(main(['--config', {str(scored['config'])!r}, '--to', 'qupath,csv', '--threshold', '0.5', "
        "'--no-progress']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_default_tiff_downsample_keeps_patches_8_pixels_wide():
    from exports.tiff import default_downsample

    assert [default_downsample(s) for s in (256, 224, 512, 1024, 64, 8, 4)] == [
        32,
        16,
        32,
        32,
        8,
        1,
        1,
    ]


def test_the_heatmap_tiff_opens_in_openslide_and_sits_on_its_patches(scored):
    from openslide.deepzoom import DeepZoomGenerator

    from scoremap.colormap import palette, to_indices

    assert (
        main(
            [
                "--config",
                str(scored["config"]),
                "--to",
                "tiff",
                "--cmap",
                "viridis",
                "--downsample",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    heat = openslide.OpenSlide(str(scored["out"] / "tiff" / "cmu_heatmap.tif"))
    likely = openslide.OpenSlide(str(scored["out"] / "tiff" / "cmu_likelihood_map.tif"))
    with openslide.OpenSlide(str(scored["slide"])) as slide:
        w, h = slide.dimensions
        mpp = float(slide.properties["openslide.mpp-x"])
    d = 4
    assert heat.dimensions == likely.dimensions == (-(-w // d), -(-h // d))
    assert heat.level_count == 3 and heat.level_downsamples[1] == pytest.approx(2.0, rel=2e-3)
    assert float(heat.properties["openslide.mpp-x"]) == pytest.approx(mpp * d, rel=1e-4)
    DeepZoomGenerator(heat, 254, 1, True).get_tile(DeepZoomGenerator(heat).level_count - 1, (0, 0))
    percentile = stats.rankdata(scored["scores"]) / len(scored["scores"])
    lattice = scored["coords"][:-3]  # the lattice patches do not overlap
    for level in (0, 1, 2):  # 4, 8 and 16 level-0 px a pixel
        for i, (x, y) in enumerate(lattice[:25]):
            px = (
                (x + PATCH // 2) // d,
                (y + PATCH // 2) // d,
            )  # the patch centre, in TIFF level-0 pixels
            want = palette("viridis")[int(to_indices(np.array([percentile[i]]))[0])]
            rgba = np.asarray(heat.read_region(px, level, (1, 1)))[0, 0]  # level-0 TIFF coordinates
            assert tuple(rgba[:3]) == tuple(want) and rgba[3] == 255, (level, i)
            value = np.asarray(likely.read_region(px, level, (1, 1)))[0, 0, 0]
            assert abs(int(value) - round(percentile[i] * 255)) <= 1
    glass = np.asarray(heat.read_region((2100 // d, 50 // d), 0, (1, 1)))[0, 0]  # no patch there
    assert glass[3] == 0
    assert np.asarray(likely.read_region((2100 // d, 50 // d), 0, (1, 1)))[0, 0, 0] == 0


# large_image's annotation schema for a `heatmap` element, written from its documentation
# (girder_large_image_annotation's AnnotationSchema: annotation name/description/attributes/elements;
# heatmap points are [x, y, z, value] in base-layer pixels; colours #rgb or rgb()/rgba() strings).
COLOR = {
    "type": "string",
    "pattern": r"^(#[0-9a-fA-F]{3,6}|rgb\(\d+,\s*\d+,\s*\d+\)|rgba\(\d+,\s*\d+,\s*\d+,\s*(\d?\.|)\d+\))$",
}
HEATMAP_ANNOTATION_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "attributes": {"type": "object"},
        "elements": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": ["heatmap"]},
                    "points": {
                        "type": "array",
                        "items": {
                            "type": "array",
                            "items": {"type": "number"},
                            "minItems": 4,
                            "maxItems": 4,
                        },
                    },
                    "radius": {"type": "number", "exclusiveMinimum": 0},
                    "colorRange": {"type": "array", "items": COLOR},
                    "rangeValues": {"type": "array", "items": {"type": "number"}},
                    "normalizeRange": {"type": "boolean"},
                    "scaleWithZoom": {"type": "boolean"},
                    "label": {
                        "type": "object",
                        "properties": {"value": {"type": "string"}},
                        "required": ["value"],
                    },
                    "id": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
                    "group": {"type": "string"},
                    "user": {"type": "object"},
                },
                "required": ["type", "points"],
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


def test_the_dsa_annotation_validates_and_puts_a_point_on_every_patch_centre(scored):
    import jsonschema

    assert (
        main(
            [
                "--config",
                str(scored["config"]),
                "--to",
                "dsa",
                "--norm",
                "raw",
                "--cmap",
                "plasma",
                "--no-progress",
            ]
        )
        == 0
    )
    doc = json.loads((scored["out"] / "dsa" / "cmu_annotation.json").read_text())
    jsonschema.Draft6Validator(HEATMAP_ANNOTATION_SCHEMA).validate(doc)
    (element,) = doc["elements"]
    assert (
        len(element["colorRange"]) == len(element["rangeValues"])
        and element["normalizeRange"] is False
    )
    points = np.array(element["points"])
    scores = scored["scores"].astype(np.float64)
    raw01 = (scores - scores.min()) / (scores.max() - scores.min())
    np.testing.assert_allclose(points[:, :2], scored["coords"] + PATCH / 2)
    np.testing.assert_allclose(points[:, 3], raw01, atol=1e-6)
    assert (points[:, 2] == 0).all() and element["radius"] == PATCH / 2
