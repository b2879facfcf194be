"""Ground-truth annotations (QuPath GeoJSON, ASAP XML) and the localisation figures of attention,
against independent computations: scikit-learn's roc_auc_score, shapely, plain counting."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from shapely.geometry import Polygon, box, shape
from shapely.ops import unary_union
from sklearn.metrics import roc_auc_score

from scoremap.annotations import AnnotationError, read_annotations
from scoremap.normalize import normalize_scores
from tests.viewer_fixtures import PATCH
from viewer.app import create_app

SLIDE = "CMU-1-Small-Region"
TUMOR = [(150, 150), (1100, 180), (1200, 900), (400, 1300), (120, 800)]
STROMA = [
    [(1300, 1700), (2100, 1700), (2100, 2400), (1300, 2400)],
    [(200, 2300), (700, 2300), (700, 2800)],
]
HOLE = [(500, 500), (800, 500), (800, 800), (500, 800)]


def qupath(path):
    features = [
        {
            "type": "Feature",
            "id": "a",
            "geometry": {"type": "Polygon", "coordinates": [[*TUMOR, TUMOR[0]]]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
            },
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [[[*ring, ring[0]]] for ring in STROMA],
            },
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Stroma", "color": [0, 150, 0]},
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [10, 10]},
            "properties": {},
        },
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def asap(path):
    def coords(points):
        return "".join(
            f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate(points)
        )

    path.write_text(f"""<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58">
      <Coordinates>{coords(TUMOR)}</Coordinates></Annotation>
    <Annotation Name="Annotation 1" Type="Polygon" PartOfGroup="_2" Color="#000000">
      <Coordinates>{coords(HOLE)}</Coordinates></Annotation>
  </Annotations>
  <AnnotationGroups><Group Name="Tumor" PartOfGroup="None" Color="#ff0000"/>
    <Group Name="_2" Color="#000"/></AnnotationGroups>
</ASAP_Annotations>""")
    return path


def test_qupath_and_asap_files_are_read_into_classes(tmp_path):
    classes = {c.name: c for c in read_annotations(qupath(tmp_path / "a.geojson"))}
    assert set(classes) == {"Tumor", "Stroma"}
    assert classes["Tumor"].colour == (200, 0, 0)
    assert classes["Tumor"].geometry.equals(Polygon(TUMOR))
    assert classes["Stroma"].area == pytest.approx(sum(Polygon(r).area for r in STROMA))
    (tumor,) = read_annotations(asap(tmp_path / "a.xml"))
    assert tumor.name == "Tumor" and tumor.colour == (0xF4, 0xFA, 0x58)
    assert tumor.area == pytest.approx(
        Polygon(TUMOR).area - Polygon(HOLE).area
    )  # the _2 group is a hole


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("x.geojson", "{not json", "not a readable GeoJSON file"),
        (
            "x.geojson",
            '{"type": "FeatureCollection", "features": [{"type": "Feature"}]}',
            "feature 0 has no geometry",
        ),
        (
            "x.geojson",
            '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[1, 2]]}}',
            "malformed geometry",
        ),
        ("x.xml", "<ASAP_Annotations><Annotation", "not a readable ASAP XML file"),
        (
            "x.xml",
            '<A><Annotation Name="q"><Coordinates><Coordinate X="a" Y="1"/></Coordinates></Annotation></A>',
            "a Coordinate without numeric X and Y",
        ),
    ],
)
def test_broken_annotation_files_name_the_file_and_the_problem(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(AnnotationError, match=message) as err:
        read_annotations(path)
    assert str(err.value).startswith(str(path))


@pytest.fixture()
def annotated(viewer_cohort, tmp_path):
    folder = tmp_path / "annotations"
    folder.mkdir()
    qupath(folder / f"{SLIDE}.geojson")
    (folder / "pyramid.xml").write_text("<broken")
    app = create_app({"SCORING_CONFIG": str(viewer_cohort.config), "ANNOTATIONS_DIR": str(folder)})
    return app.test_client(), viewer_cohort.scored[SLIDE], viewer_cohort.scored["pyramid"]


def test_localization_figures_equal_independent_computations(annotated):
    client, scored, _ = annotated
    body = client.get(f"/api/slides/{SLIDE}/localization?threshold=0.6").get_json()
    by_class = {c["class"]: c for c in body["classes"]}
    centres = scored.l0_coords + PATCH / 2
    raw = scored.scores.astype(np.float64)
    order = np.argsort(-raw, kind="stable")
    percentile = normalize_scores(raw, "percentile")
    region = unary_union(
        [box(x, y, x + PATCH, y + PATCH) for x, y in scored.l0_coords[percentile >= 0.6]]
    )
    for name, polygon in (
        ("Tumor", Polygon(TUMOR)),
        ("Stroma", unary_union([Polygon(r) for r in STROMA])),
    ):
        inside = np.array(
            [polygon.contains(shape({"type": "Point", "coordinates": list(c)})) for c in centres]
        )
        figures = by_class[name]
        assert figures["patches_inside"] == int(inside.sum())
        assert figures["auroc"] == pytest.approx(roc_auc_score(inside, raw))
        assert figures["top_inside"]["10"] == pytest.approx(inside[order[:10]].mean())
        k = max(1, math.ceil(0.05 * len(raw)))
        assert figures["top_5pct_k"] == k and figures["top_inside"]["5%"] == pytest.approx(
            inside[order[:k]].mean()
        )
        dice = 2 * region.intersection(polygon).area / (region.area + polygon.area)
        assert figures["dice"] == pytest.approx(dice)


def test_top_k_inside_takes_tied_scores_in_bag_order_and_leaves_unscored_patches_out():
    from scoremap.annotations import AnnotatedClass
    from scoremap.localization import localization

    coords = np.array([[i * 256, 0] for i in range(6)])
    raw = np.array([0.5, 0.9, 0.9, np.nan, 0.9, 0.1])  # 1, 2 and 4 tie; 3 is not scored
    inside = AnnotatedClass("Tumor", (200, 0, 0), box(256, 0, 1024, 256))  # patches 1, 2, 3
    figures = localization(coords, 256, raw, normalize_scores(raw, "percentile"), inside, 0.5)
    assert figures["top_5pct_k"] == 1 and figures["top_inside"]["5%"] == 1.0  # patch 1 first
    assert figures["top_inside"]["10"] == pytest.approx(2 / 5)  # the 5 scored patches


def test_annotations_are_served_and_a_broken_file_leaves_the_slide_working(annotated):
    client, _, _pyramid = annotated
    body = client.get(f"/api/slides/{SLIDE}/annotations").get_json()
    assert body["file"] == f"{SLIDE}.geojson" and body["error"] is None
    by_name = {f["properties"]["classification"]["name"]: f for f in body["geojson"]["features"]}
    assert shape(by_name["Tumor"]["geometry"]).equals(Polygon(TUMOR))
    assert body["classes"][1]["color"] == [200, 0, 0] and body["classes"][1]["area_mm2"] > 0
    broken = client.get("/api/slides/pyramid/annotations").get_json()
    assert broken["file"] == "pyramid.xml" and "not a readable ASAP XML file" in broken["error"]
    assert "/tmp/" not in broken["error"]
    assert client.get("/api/slides/pyramid/localization").get_json()["classes"] == []
    assert (
        client.get("/overlay/pyramid_files/13/5_4.png").status_code == 200
    )  # the slide is still served
    cohort = client.get("/api/localization?threshold=0.6").get_json()
    by_slide = {s["slide_id"]: s for s in cohort["slides"]}
    assert set(by_slide) == {SLIDE, "pyramid"}  # the broken file is listed, with its reason
    assert (
        by_slide["pyramid"]["classes"] == []
        and "not a readable ASAP XML" in by_slide["pyramid"]["error"]
    )
    assert cohort["mean"]["Tumor"]["auroc"] == pytest.approx(
        {c["class"]: c for c in by_slide[SLIDE]["classes"]}["Tumor"]["auroc"]
    )
    assert client.get("/api/slides/nope/localization").status_code == 404
    assert client.get(f"/api/slides/{SLIDE}/localization?threshold=7").status_code == 400


def test_qupath_derived_classes_null_geometries_and_empty_files(tmp_path):
    square = {"type": "Polygon", "coordinates": [[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]]}
    features = [
        {
            "type": "Feature",
            "geometry": square,
            "properties": {
                "classification": {"names": ["Tumor", "Positive"], "color": [200, 0, 0]},
                "name": "r1",
            },
        },
        {"type": "Feature", "geometry": None, "properties": {"classification": {"name": "Empty"}}},
    ]
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    (cls,) = read_annotations(path)
    assert cls.name == "Tumor: Positive" and cls.area == 10000
    path.write_text(
        json.dumps([{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}])
    )
    with pytest.raises(AnnotationError, match="holds no polygon annotations"):
        read_annotations(path)


def test_annotation_files_named_after_the_slide_file_are_found(tmp_path):
    from scoremap.annotations import annotation_file

    qupath(tmp_path / "tcga-01.svs.geojson")
    assert annotation_file(tmp_path, "tcga-01") is None
    assert annotation_file(tmp_path, "tcga-01", "tcga-01.svs") == tmp_path / "tcga-01.svs.geojson"


def test_dice_is_of_the_range_asked(annotated):
    client, scored, _ = annotated
    body = client.get(f"/api/slides/{SLIDE}/localization?lo=0.25&hi=0.75").get_json()
    percentile = normalize_scores(scored.scores.astype(np.float64), "percentile")
    chosen = (percentile >= 0.25) & (percentile <= 0.75)
    region = unary_union([box(x, y, x + PATCH, y + PATCH) for x, y in scored.l0_coords[chosen]])
    tumor = {c["class"]: c for c in body["classes"]}["Tumor"]
    polygon = Polygon(TUMOR)
    assert body["range"] == {"lo": 0.25, "hi": 0.75}
    assert tumor["dice"] == pytest.approx(
        2 * region.intersection(polygon).area / (region.area + polygon.area)
    )


def test_annotations_are_clipped_to_the_slide(viewer_cohort, tmp_path):
    """A polygon run past the slide's edge counts only its part on the slide (areas, Dice)."""
    folder = tmp_path / "annotations"
    folder.mkdir()
    w = 2220  # the CMU scan's width
    ring = [[w - 500, 100], [w + 900, 100], [w + 900, 900], [w - 500, 900], [w - 500, 100]]
    (folder / f"{SLIDE}.geojson").write_text(
        json.dumps(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"classification": {"name": "Tumor"}},
            }
        )
    )
    client = create_app(
        {"SCORING_CONFIG": str(viewer_cohort.config), "ANNOTATIONS_DIR": str(folder)}
    ).test_client()
    (cls,) = client.get(f"/api/slides/{SLIDE}/annotations").get_json()["classes"]
    assert cls["area_px"] == pytest.approx(500 * 800)


@pytest.mark.parametrize(
    "feature,message",
    [
        (
            {
                "type": "Feature",
                "properties": [1],
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]},
            },
            None,
        ),
        (
            {
                "type": "Feature",
                "properties": {"classification": {"name": "T", "color": ["r", "g", "b"]}},
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]},
            },
            None,
        ),
        (
            {
                "type": "Feature",
                "properties": {"classification": {"name": "T", "color": [1e400, 0, 0]}},
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]},
            },
            None,
        ),
        (
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [float("nan"), 0], [9, 9], [0, 0]]],
                },
            },
            "coordinates must be finite",
        ),
    ],
)
def test_odd_properties_and_coordinates_never_escape_as_other_errors(tmp_path, feature, message):
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    if message is None:
        (cls,) = read_annotations(
            path
        )  # a bad colour or properties: a default colour, the polygon kept
        assert cls.area == pytest.approx(40.5) and all(0 <= v <= 255 for v in cls.colour)
    else:
        with pytest.raises(AnnotationError, match=message):
            read_annotations(path)


def test_an_empty_export_is_no_ground_truth_not_an_error(tmp_path):
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    assert read_annotations(path) == []
    path.write_text(
        json.dumps(
            {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None}]}
        )
    )
    assert read_annotations(path) == []


def test_polygons_touching_the_slide_edge_stay_polygons(viewer_cohort, tmp_path):
    """Clipped to the slide, a polygon that shares the slide's edge must not turn into a
    GeometryCollection (an empty region's Dice with it raised in GEOS)."""
    folder = tmp_path / "annotations"
    folder.mkdir()
    inside = [[0, 0], [400, 0], [400, 400], [0, 400], [0, 0]]
    outside = [[-100, 500], [0, 500], [0, 900], [-100, 900], [-100, 500]]
    (folder / f"{SLIDE}.geojson").write_text(
        json.dumps(
            {
                "type": "Feature",
                "geometry": {"type": "MultiPolygon", "coordinates": [[inside], [outside]]},
                "properties": {"classification": {"name": "T"}},
            }
        )
    )
    client = create_app(
        {"SCORING_CONFIG": str(viewer_cohort.config), "ANNOTATIONS_DIR": str(folder)}
    ).test_client()
    (cls,) = client.get(f"/api/slides/{SLIDE}/annotations").get_json()["classes"]
    assert cls["area_px"] == pytest.approx(160000)
    empty = client.get(f"/api/slides/{SLIDE}/localization?lo=0.9991&hi=0.9992")
    assert empty.status_code == 200 and empty.get_json()["classes"][0]["dice"] == 0
    assert client.get("/api/localization").status_code == 200


def test_rewritten_ground_truth_is_read_again(viewer_cohort, tmp_path):
    import os

    folder = tmp_path / "annotations"
    folder.mkdir()
    path = qupath(folder / f"{SLIDE}.geojson")
    client = create_app(
        {"SCORING_CONFIG": str(viewer_cohort.config), "ANNOTATIONS_DIR": str(folder)}
    ).test_client()
    before = {
        c["class"]: c for c in client.get(f"/api/slides/{SLIDE}/localization").get_json()["classes"]
    }
    square = [[0, 0], [300, 0], [300, 300], [0, 300], [0, 0]]
    path.write_text(
        json.dumps(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [square]},
                "properties": {"classification": {"name": "Tumor"}},
            }
        )
    )
    os.utime(path, ns=(1, 1))  # another mtime whatever the clock's resolution
    after = {
        c["class"]: c for c in client.get(f"/api/slides/{SLIDE}/localization").get_json()["classes"]
    }
    assert set(before) == {"Stroma", "Tumor"} and set(after) == {"Tumor"}
    assert after["Tumor"]["annotated_area_px"] == pytest.approx(90000)


def test_cohort_localization_within_a_time_budget_lists_the_rest_as_pending(
    viewer_cohort, tmp_path
):
    folder = tmp_path / "annotations"
    folder.mkdir()
    qupath(folder / f"{SLIDE}.geojson")
    qupath(folder / "pyramid.geojson")
    client = create_app(
        {
            "SCORING_CONFIG": str(viewer_cohort.config),
            "ANNOTATIONS_DIR": str(folder),
            "COHORT_BUDGET_S": 0.0,
        }
    ).test_client()
    first = client.get("/api/localization").get_json()
    assert len(first["slides"]) == 1 and len(first["pending"]) == 1 and not first["complete"]
    second = client.get("/api/localization").get_json()
    assert len(second["slides"]) == 2 and second["complete"] and second["pending"] == []
