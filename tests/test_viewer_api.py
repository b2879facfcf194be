"""The JSON API, patch images, thumbnails, pages and the cohort-loading rules."""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import openslide
import pytest
from PIL import Image

from scoremap.normalize import normalize_scores
from tests.viewer_fixtures import PATCH, write_scored
from viewer.app import create_app
from viewer.errors import ViewerConfigError


def test_cohort_json(client, viewer_cohort):
    body = client.get("/api/slides").get_json()
    ids = [s["id"] for s in body["slides"]]
    # results.csv order
    assert ids == ["pyramid", "CMU-1-Small-Region", "not-a-slide", "escape", "outside", "missing"]
    assert body["count"] == 6
    cmu = body["slides"][1]
    assert cmu == {
        "id": "CMU-1-Small-Region",
        "label": "tumor",
        "prediction": {"index": 1, "name": "tumor"},
        "probabilities": [0.2, 0.8],
        "class_names": ["normal", "tumor"],
        "bag_size": len(viewer_cohort.scored["CMU-1-Small-Region"].scores),
        "model_type": "clam_mb",
        "readable": True,
        "error": None,
        "viewer_url": "/slides/CMU-1-Small-Region",
        "api_url": "/api/slides/CMU-1-Small-Region",
        "thumbnail_url": "/slides/CMU-1-Small-Region/thumbnail.jpeg",
    }
    flags = {s["id"]: s["readable"] for s in body["slides"]}
    assert flags == {
        "pyramid": True,
        "CMU-1-Small-Region": True,
        "not-a-slide": False,
        "escape": False,
        "outside": False,
        "missing": False,
    }
    errors = {s["id"]: s["error"] for s in body["slides"]}
    assert "outside the configured slide folders" in errors["escape"]
    assert "outside the configured slide folders" in errors["outside"]
    assert "OpenSlide cannot open" in errors["not-a-slide"]
    assert "not found" in errors["missing"]
    assert str(viewer_cohort.root) not in str(errors)  # no server folders in client messages


def test_slide_metadata(client, viewer_cohort):
    meta = client.get("/api/slides/CMU-1-Small-Region").get_json()
    with openslide.OpenSlide(str(viewer_cohort.scored["CMU-1-Small-Region"].slide_path)) as slide:
        assert meta["dimensions"] == list(slide.dimensions)
        assert meta["mpp"]["x"] == pytest.approx(float(slide.properties["openslide.mpp-x"]))
        assert meta["mpp"]["y"] == pytest.approx(float(slide.properties["openslide.mpp-y"]))
    assert meta["levels"] == [{"level": 0, "dimensions": [2220, 2967], "downsample": 1.0}]
    assert meta["dzi"] == {
        "slide": "/slide/CMU-1-Small-Region.dzi",
        "overlay": "/overlay/CMU-1-Small-Region.dzi",
    }
    assert meta["patch_size"] == PATCH and meta["model_type"] == "clam_mb"
    assert meta["prediction"] == {"index": 1, "name": "tumor"} and meta["probabilities"] == [
        0.2,
        0.8,
    ]
    assert [c["available"] for c in meta["classes"]] == [True, True]
    assert meta["deepzoom"]["tile_size"] == 254 and meta["deepzoom"]["overlap"] == 1
    assert meta["urls"]["patch_image"] == "/slides/CMU-1-Small-Region/patch/{index}.jpeg"
    pyramid = client.get("/api/slides/pyramid").get_json()
    assert [c["available"] for c in pyramid["classes"]] == [
        False,
        True,
    ]  # abmil: predicted class only
    assert pyramid["level_count"] == 4 and pyramid["vendor"] == "generic-tiff"


def test_topk_and_bottomk(client, viewer_cohort):
    s = viewer_cohort.scored["pyramid"]
    top = client.get("/api/slides/pyramid/topk?k=5").get_json()
    order = np.argsort(-s.scores, kind="stable")
    assert [p["index"] for p in top["patches"]] == order[:5].tolist()
    assert [p["rank"] for p in top["patches"]] == [1, 2, 3, 4, 5]
    first = top["patches"][0]
    x, y = s.l0_coords[order[0]].tolist()
    assert first["x"] == x and first["y"] == y and first["size"] == PATCH
    assert first["score"] == pytest.approx(float(s.scores[order[0]]))
    assert first["percentile"] == pytest.approx(1.0)
    assert first["image_url"] == f"/slides/pyramid/patch/{order[0]}.jpeg"
    bottom = client.get("/api/slides/pyramid/topk?k=3&order=bottom").get_json()
    assert [p["index"] for p in bottom["patches"]] == order[::-1][:3].tolist()
    assert bottom["patches"][0]["rank"] == len(s.scores)
    assert bottom["order"] == "bottom" and bottom["class"] == {"index": 1, "name": "tumor"}
    cmu = viewer_cohort.scored["CMU-1-Small-Region"]
    c0 = client.get("/api/slides/CMU-1-Small-Region/topk?k=1&class=0").get_json()
    assert c0["patches"][0]["index"] == int(np.argmax(cmu.per_class[:, 0]))
    many = client.get("/api/slides/pyramid/topk?k=1000").get_json()
    assert len(many["patches"]) == len(s.scores)


def test_patch_at_point(client, viewer_cohort):
    s = viewer_cohort.scored["pyramid"]
    i = s.isolated
    x, y = s.l0_coords[i].tolist()
    body = client.get(f"/api/slides/pyramid/patch?x={x + 0.5}&y={y + PATCH - 1}").get_json()
    pct = normalize_scores(s.scores, "percentile")[i]
    assert body["index"] == i and body["x"] == x and body["y"] == y
    assert body["score"] == pytest.approx(float(s.scores[i]))
    assert body["percentile"] == pytest.approx(pct, abs=1e-5)
    assert 1 <= body["rank"] <= len(s.scores) and body["covering"] == [i]
    assert body["image_url"] == f"/slides/pyramid/patch/{i}.jpeg"
    miss = client.get(f"/api/slides/pyramid/patch?x={x + PATCH}&y={y}")
    assert miss.status_code == 404 and "no patch" in miss.get_json()["error"]
    a, b = s.overlap_pair
    ax, ay = s.l0_coords[a].tolist()
    both = client.get(f"/api/slides/pyramid/patch?x={ax + PATCH // 2 + 10}&y={ay + 10}").get_json()
    assert sorted(both["covering"]) == sorted([a, b])


def test_patch_image_is_level0_pixels(client, viewer_cohort):
    s = viewer_cohort.scored["CMU-1-Small-Region"]
    x, y = s.l0_coords[3].tolist()
    r = client.get("/slides/CMU-1-Small-Region/patch/3.jpeg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg" and r.headers["ETag"]
    img = np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB"))
    with openslide.OpenSlide(str(s.slide_path)) as slide:
        rgba = slide.read_region((x, y), 0, (PATCH, PATCH))
    ref = Image.new("RGB", rgba.size, "#ffffff")
    ref.paste(rgba, (0, 0), rgba)
    buf = io.BytesIO()
    ref.save(buf, "JPEG", quality=75)
    assert np.array_equal(img, np.asarray(Image.open(buf).convert("RGB")))


def test_thumbnail_and_colorbar(client):
    r = client.get("/slides/pyramid/thumbnail.jpeg")
    img = Image.open(io.BytesIO(r.data))
    assert r.status_code == 200 and max(img.size) == 256
    assert (
        max(Image.open(io.BytesIO(client.get("/slides/pyramid/thumbnail.jpeg?size=64").data)).size)
        == 64
    )
    bar = client.get("/api/colorbar?cmap=viridis&width=200&height=10")
    assert bar.status_code == 200 and bar.mimetype == "image/png"
    legend = Image.open(io.BytesIO(bar.data))
    assert legend.size == (200, 10)
    from scoremap.colormap import colorbar

    assert np.array_equal(
        np.asarray(legend.convert("RGB")), np.asarray(colorbar("viridis", 200, 10))
    )
    names = client.get("/api/colormaps").get_json()
    assert "jet" in names["all"] and names["suggested"][0] == "jet"


def test_pages(client):
    index = client.get("/")
    assert (
        index.status_code == 200
        and b"CMU-1-Small-Region" in index.data
        and b"/slides/pyramid" in index.data
    )
    page = client.get("/slides/pyramid")
    assert page.status_code == 200 and b'data-api="/api/slides/pyramid"' in page.data
    assert client.get("/slides/no-such-slide").status_code == 404


def test_results_mode_finds_moved_slides_by_name(tmp_path, viewer_cohort):
    """--results/--slides: a blockmap scored elsewhere (slide_path absent here) resolves by name."""
    raw = tmp_path / "raw"
    s = viewer_cohort.scored["pyramid"]
    write_scored(
        raw,
        "pyramid",
        "normal",
        "/scoring-machine/slides/pyramid.tiff",
        s.l0_coords,
        seed=2,
        per_class=False,
    )
    app = create_app({"RESULTS_DIR": str(raw), "SLIDES_DIR": str(viewer_cohort.slides_dir)})
    c = app.test_client()
    entry = c.get("/api/slides").get_json()["slides"][0]
    assert entry["readable"] is True
    assert c.get("/slide/pyramid_files/13/5_4.jpeg").status_code == 200
    # a slide_path that exists outside --slides is refused, even when a same-named file is inside
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(s.slide_path, outside / "pyramid.tiff")
    raw2 = tmp_path / "raw2"
    write_scored(
        raw2, "pyramid", "normal", outside / "pyramid.tiff", s.l0_coords, seed=2, per_class=False
    )
    c2 = create_app(
        {"RESULTS_DIR": str(raw2), "SLIDES_DIR": str(viewer_cohort.slides_dir)}
    ).test_client()
    assert c2.get("/slide/pyramid.dzi").status_code == 403


def test_config_errors_are_clear(tmp_path, viewer_cohort, monkeypatch):
    with pytest.raises(ViewerConfigError, match="exactly one cohort"):
        create_app({})
    with pytest.raises(ViewerConfigError, match="not found"):
        create_app({"SCORING_CONFIG": str(tmp_path / "nope.yaml")})
    with pytest.raises(ViewerConfigError, match="not a folder"):
        create_app({"RESULTS_DIR": str(tmp_path / "nope"), "SLIDES_DIR": str(tmp_path)})
    with pytest.raises(ViewerConfigError, match="go together"):
        create_app({"RESULTS_DIR": str(tmp_path)})
    monkeypatch.setenv("MIL_VIEWER_SCORING_CONFIG", str(viewer_cohort.config))
    assert len(create_app().extensions["mil_viewer"].cohort) == 6  # settings from the environment


@pytest.mark.slow
def test_the_demo_builds_scores_and_serves():
    """The first README command: `make demo` builds the demo cohort, scores it with both models and
    serves `mil-viewer --demo`. Run here as its steps (the Makefile's recipe, ~40 s; a built demo
    is reused), then the real server (gunicorn) answers for every demo slide and experiment."""
    import json
    import subprocess
    import sys
    import urllib.request

    from viewer.background import start_viewer, stop_viewer
    from viewer.cohort import DEMO_CONFIG, REPO_ROOT

    steps = [[sys.executable, "-m", "demo.build"]] + [
        [sys.executable, "create_heatmaps.py", "--config", str(config), "--no-progress"]
        for config in (DEMO_CONFIG, DEMO_CONFIG.with_name("demo_config_abmil.yaml"))
    ]
    for step in steps:
        done = subprocess.run(step, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(step[1:])}:\n{done.stdout}\n{done.stderr}"
    proc, base = start_viewer(["--demo", "--workers", "1", "--threads", "4"], timeout=120)
    try:

        def get(path: str) -> tuple[int, bytes]:
            with urllib.request.urlopen(base + path, timeout=30) as r:
                return r.status, r.read()

        slides = json.loads(get("/api/slides")[1])["slides"]
        assert [s["id"] for s in slides] == [
            "CMU-1-Small-Region",
            "CMU-tiled-large",
            "CMU-tiled-stroma",
        ]
        assert all(s["readable"] for s in slides)
        for s in slides:
            for exp in ("DEMO", "DEMO_ABMIL"):
                meta = json.loads(get(f"/api/slides/{s['id']}?exp={exp}")[1])
                top = meta["deepzoom"]["level_count"] - 1
                status, png = get(f"/overlay/{s['id']}_files/{top}/0_0.png?exp={exp}")
                assert status == 200 and png.startswith(b"\x89PNG")
            status, jpeg = get(f"/slide/{s['id']}_files/{top}/0_0.jpeg")
            assert status == 200 and jpeg.startswith(b"\xff\xd8")
        assert get("/")[0] == 200
    finally:
        stop_viewer(proc)


def test_the_page_takes_its_defaults_and_choices_from_the_server(client):
    """One source of defaults (scoremap.defaults): the metadata carries them and the page's
    template carries none (its colormap menu, scale buttons and slider ranges are built from them)."""
    from scoremap.defaults import OVERLAY, SUGGESTED_CMAPS
    from scoremap.normalize import NORMS

    meta = client.get("/api/slides/pyramid").get_json()
    assert meta["defaults"] == {
        "cmap": OVERLAY["cmap"],
        "norm": OVERLAY["norm"],
        "class": meta["prediction"]["index"],
        "threshold": OVERLAY["threshold"],
        "blur": OVERLAY["blur"],
        "alpha": OVERLAY["alpha"],
        "difference_cmap": OVERLAY["difference_cmap"],
    }
    choices = meta["choices"]
    assert choices["colormaps"] == list(SUGGESTED_CMAPS)
    assert [n["name"] for n in choices["norms"]] == list(NORMS)
    assert choices["threshold"] == {
        "min": OVERLAY["threshold_min"],
        "max": OVERLAY["threshold_max"],
        "step": OVERLAY["threshold_step"],
    }
    page = client.get("/slides/pyramid").get_data(as_text=True)
    assert "<option" not in page and 'value="percentile"' not in page and 'max="0.99"' not in page
    app = create_app(
        {
            "SCORING_CONFIG": client.application.extensions["mil_viewer"].cohort.source,
            "DEFAULT_CMAP": "magma",
            "DEFAULT_NORM": "raw",
        }
    )
    assert app.test_client().get("/api/slides/pyramid").get_json()["defaults"]["cmap"] == "magma"
    with pytest.raises(ViewerConfigError, match=r"DEFAULT_CMAP.*did you mean"):
        create_app(
            {
                "SCORING_CONFIG": client.application.extensions["mil_viewer"].cohort.source,
                "DEFAULT_CMAP": "viridiss",
            }
        )


def test_a_patch_larger_than_the_screen_is_shown_scaled_not_read_whole(viewer_cohort, tmp_path):
    """A blockmap whose patch size is absurd but valid (20,000 px): the patch image is read from a
    coarse level and is at most 1024 px, not a 1.6 GB level-0 read."""
    raw = tmp_path / "raw"
    slide = viewer_cohort.scored["pyramid"].slide_path
    from scoremap.blockmap import Blockmap, blockmap_path, write_blockmap

    write_blockmap(
        blockmap_path(raw, "l", "huge"),
        Blockmap(
            "huge",
            str(slide),
            "l",
            "abmil",
            ["a", "b"],
            1,
            np.array([0.4, 0.6]),
            np.zeros(2),
            20000,
            np.array([1.0], np.float32),
            np.array([[0, 0]], np.int32),
        ),
    )
    client = create_app(
        {"RESULTS_DIR": str(raw), "SLIDES_DIR": str(viewer_cohort.slides_dir)}
    ).test_client()
    r = client.get("/slides/huge/patch/0.jpeg")
    assert r.status_code == 200
    image = Image.open(io.BytesIO(r.data))
    assert max(image.size) <= 1024 and image.size[0] == image.size[1]
    assert client.get("/overlay/huge_files/0/0_0.png").status_code == 200
    assert client.get("/api/slides/huge/patch?x=100&y=100").get_json()["size"] == 20000


def test_export_routes_give_what_the_cli_writes_for_the_slide_on_screen(client, viewer_cohort):
    from shapely.geometry import box, shape
    from shapely.ops import unary_union

    scored = viewer_cohort.scored["pyramid"]
    r = client.get("/api/slides/pyramid/export/regions.geojson?threshold=0.8&norm=percentile")
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    (feature,) = r.get_json()["features"]
    percentile = normalize_scores(scored.scores, "percentile")
    above = scored.l0_coords[percentile >= 0.8]
    want = unary_union([box(x, y, x + PATCH, y + PATCH) for x, y in above])
    assert shape(feature["geometry"]).symmetric_difference(want).area == 0
    assert feature["properties"]["measurements"]["n_patches"] == len(above)
    assert (
        client.get("/api/slides/pyramid/export/regions.geojson").status_code == 400
    )  # threshold required

    r = client.get("/api/slides/pyramid/export/patches.csv")
    rows = r.get_data(as_text=True).splitlines()
    assert r.mimetype == "text/csv" and len(rows) == len(scored.scores) + 1
    assert rows[0].startswith("slide_id,index,minx,miny,width,height,attention,percentile,rank")

    meta = client.get("/api/slides/pyramid").get_json()
    w, h = meta["dimensions"]
    r = client.get(
        f"/api/slides/pyramid/export/view.png?x=0&y=0&w={w}&h={h}&width=600&cmap=viridis&alpha=1"
    )
    assert r.status_code == 200 and r.mimetype == "image/png"
    image = np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB"))
    height = round(h * 600 / w)
    assert image.shape == (height + 64, 600, 3)
    # the isolated patch's centre shows its own colour at full opacity (one patch, nothing overlaps)
    i = scored.isolated
    cx, cy = (scored.l0_coords[i] + PATCH // 2) * 600 // w
    from scoremap.colormap import palette, to_indices

    want_rgb = palette("viridis")[int(to_indices(np.array([percentile[i]]))[0])]
    assert np.abs(image[cy, cx].astype(int) - want_rgb.astype(int)).max() <= 2
    assert (image[height + 26 : height + 38, 8:200] != 255).any()  # the colorbar is burned in
    for bad in ("w=0", "width=99999", f"w=10&h={h * 100}&width=4000", "alpha=2", "class=7"):
        assert client.get(f"/api/slides/pyramid/export/view.png?{bad}").status_code == 400, bad


def test_histogram_counts_every_scored_patch_of_the_class_and_norm(client, viewer_cohort):
    scored = viewer_cohort.scored["CMU-1-Small-Region"]
    body = client.get(
        "/api/slides/CMU-1-Small-Region/histogram?bins=20&class=0&norm=raw&lo=0.25&hi=0.75"
    ).get_json()
    normal = scored.per_class[:, 0]
    raw01 = (normal - normal.min()) / (normal.max() - normal.min())
    want, edges = np.histogram(raw01, bins=20, range=(0, 1))
    assert (
        body["counts"] == want.tolist() and sum(body["counts"]) == len(normal) == body["bag_size"]
    )
    np.testing.assert_allclose(body["edges"], edges)
    assert body["range"]["patches"] == int(((raw01 >= 0.25) & (raw01 <= 0.75)).sum())
    assert body["raw_min"] == pytest.approx(float(normal.min()))
    for bad in ("bins=0", "bins=5000", "lo=0.8&hi=0.2", "lo=-1", "norm=zscore", "class=5"):
        assert client.get(f"/api/slides/CMU-1-Small-Region/histogram?{bad}").status_code == 400, bad


def test_regions_area_is_the_union_of_the_patches_in_range(client, viewer_cohort):
    from shapely.geometry import box, shape
    from shapely.ops import unary_union

    scored = viewer_cohort.scored["CMU-1-Small-Region"]
    body = client.get("/api/slides/CMU-1-Small-Region/regions?lo=0.3&hi=0.9").get_json()
    percentile = normalize_scores(scored.scores, "percentile")
    chosen = (percentile >= 0.3) & (percentile <= 0.9)
    union = unary_union([box(x, y, x + PATCH, y + PATCH) for x, y in scored.l0_coords[chosen]])
    everything = unary_union([box(x, y, x + PATCH, y + PATCH) for x, y in scored.l0_coords])
    assert body["patches"] == int(chosen.sum())
    assert body["area_px"] == pytest.approx(union.area) and body["scored_area_px"] == pytest.approx(
        everything.area
    )
    assert body["share"] == pytest.approx(union.area / everything.area)
    with openslide.OpenSlide(str(scored.slide_path)) as slide:
        mpp2 = float(slide.properties["openslide.mpp-x"]) * float(
            slide.properties["openslide.mpp-y"]
        )
    assert body["area_mm2"] == pytest.approx(union.area * mpp2 * 1e-6)
    (feature,) = body["geojson"]["features"]
    assert shape(feature["geometry"]).symmetric_difference(union).area == 0
    assert feature["properties"]["classification"]["name"] == "attention in [0.3, 0.9]"
    # the overlapping pair counts once where both are chosen
    assert (
        client.get("/api/slides/CMU-1-Small-Region/regions?lo=0&hi=1&geojson=0").get_json()["share"]
        == 1.0
    )


def test_overlay_hides_patches_outside_the_score_range(client, viewer_cohort):
    scored = viewer_cohort.scored["pyramid"]
    geo_level = client.get("/api/slides/pyramid").get_json()["deepzoom"]["level_count"] - 1
    i = scored.isolated
    x, y = scored.l0_coords[i] + PATCH // 2
    p = normalize_scores(scored.scores, "percentile")[i]
    url = f"/overlay/pyramid_files/{geo_level}/{x // 254}_{y // 254}.png"
    inside = Image.open(io.BytesIO(client.get(f"{url}?lo={max(0, p - 0.01):.4f}&hi=1").data))
    outside = Image.open(io.BytesIO(client.get(f"{url}?lo=0&hi={max(0, p - 0.02):.4f}").data))
    assert (
        inside.getpixel((x % 254 + 1, y % 254 + 1)) != 255
    )  # (overlap pixel: col 0 is the previous tile's)
    assert outside.getpixel((x % 254 + 1, y % 254 + 1)) == 255


def test_the_metadata_says_which_words_a_links_blur_may_be(client):
    """The page reads a link's `blur` by the words the metadata lists (choices.blur): exactly the
    words the tiles take, each colouring as blur on or off does."""
    words = client.get("/api/slides/pyramid").get_json()["choices"]["blur"]
    assert {"0", "1"} <= set(words) and set(words.values()) == {True, False}
    tile = "/overlay/pyramid_files/13/5_4.png"
    on, off = (client.get(f"{tile}?blur={v}").get_data() for v in ("1", "0"))
    assert on != off
    for word, value in words.items():
        for spelled in (word, word.upper()):
            got = client.get(f"{tile}?blur={spelled}")
            assert got.status_code == 200 and got.get_data() == (on if value else off), spelled
    assert client.get(f"{tile}?blur=maybe").status_code == 400


def test_the_pages_scripts_keep_no_copy_of_the_servers_rules():
    """The limits a link is checked by are the server's: the class bound, the Dice's default
    region, the words for blur, what a colormap name is and the view export's sides are not written
    in static/js (the pages read meta.choices, the slide's classes, or ask the server)."""
    from scoremap.checkout import REPO_ROOT

    root = REPO_ROOT / "static" / "js"
    copies = {
        "the class-index bound": re.compile(r"\b10_?000\b"),
        "the Dice's default region": re.compile(r"\b0\.5\b.*\b1\b\]|:\s*0\.5\)"),
        "the words for blur": re.compile(r"""\[\s*["']0["'],\s*["']1["']\s*\]"""),
        "a colormap-name pattern": re.compile(r"A-Za-z0-9"),
        "the view export's sides": re.compile(r"\b4096\b"),
    }
    scripts = sorted(root.rglob("*.js"))
    assert len(scripts) > 10
    for path in scripts:
        text = path.read_text()
        for what, pattern in copies.items():
            assert not pattern.search(text), f"{path.relative_to(root)} repeats {what}"
