"""Several experiments on one viewer: naming, the cohort, per-experiment routes, agreement figures
against scipy's spearmanr and set-based Jaccard computed here (patches and a common raster)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from shapely.geometry import box

from scoremap.blockmap import read_blockmap
from scoremap.normalize import normalize_scores
from viewer.app import create_app
from viewer.errors import ViewerConfigError


@pytest.fixture(scope="module")
def compare_client(compared_cohort):
    configs = [str(compared_cohort.configs[n]) for n in ("ABMIL_A", "CLAM_B", "ABMIL_C")]
    return create_app({"SCORING_CONFIG": configs}).test_client()


def blockmap(cohort, exp: str, slide: str):
    return read_blockmap(cohort.root / "raw" / exp / "tumor" / slide / f"{slide}_blockmap.h5")


def top(values: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-values, kind="stable")[:k].tolist())


def set_jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def test_experiments_need_distinct_names(compared_cohort):
    config = str(compared_cohort.configs["ABMIL_A"])
    with pytest.raises(ViewerConfigError, match="two experiments are named 'ABMIL_A'"):
        create_app({"SCORING_CONFIG": [config, config]})


def test_the_cohort_lists_each_slide_once_with_every_experiment(compare_client):
    body = compare_client.get("/api/slides").get_json()
    assert [e["name"] for e in body["experiments"]] == ["ABMIL_A", "CLAM_B", "ABMIL_C"]
    assert sorted(s["id"] for s in body["slides"]) == ["alpha", "beta"]
    for entry in body["slides"]:
        assert [e["experiment"] for e in entry["experiments"]] == ["ABMIL_A", "CLAM_B", "ABMIL_C"]
        assert [e["model_type"] for e in entry["experiments"]] == ["abmil", "clam_sb", "abmil"]
        assert entry["viewer_url"].endswith("?exp=ABMIL_A,CLAM_B,ABMIL_C")
        names = {e["prediction"]["name"] for e in entry["experiments"]}
        assert entry["disagree"] == (len(names) > 1)
        assert (
            entry["experiments"][2]["prediction"]["name"] == "tumor"
        )  # ABMIL_C calls everything tumour
    assert any(entry["disagree"] for entry in body["slides"])


def test_routes_serve_the_experiment_asked(compare_client, compared_cohort):
    meta = compare_client.get("/api/slides/alpha?exp=CLAM_B").get_json()
    assert (
        meta["experiment"] == "CLAM_B"
        and meta["model_type"] == "clam_sb"
        and meta["patch_size"] == 512
    )
    assert meta["dzi"]["overlay"].endswith("?exp=CLAM_B") and "exp=CLAM_B" in meta["urls"]["topk"]
    top_b = compare_client.get(meta["urls"]["topk"] + "&k=3").get_json()
    scores_b = blockmap(compared_cohort, "CLAM_B", "alpha").attention
    assert [p["score"] for p in top_b["patches"]] == pytest.approx(np.sort(scores_b)[::-1][:3])
    assert (
        compare_client.get("/api/slides/alpha").get_json()["experiment"] == "ABMIL_A"
    )  # the first
    assert compare_client.get("/overlay/alpha_files/12/1_1.png?exp=CLAM_B").status_code == 200
    missing = compare_client.get("/api/slides/alpha?exp=NOPE")
    assert missing.status_code == 404 and "unknown experiment 'NOPE'" in missing.get_json()["error"]


def test_agreement_on_shared_patches_equals_scipy_and_set_jaccard(compare_client, compared_cohort):
    body = compare_client.get("/api/slides/alpha/agreement?a=ABMIL_A&b=ABMIL_C&k=7").get_json()
    a, c = (
        blockmap(compared_cohort, "ABMIL_A", "alpha"),
        blockmap(compared_cohort, "ABMIL_C", "alpha"),
    )
    assert np.array_equal(a.l0_coords, c.l0_coords)
    assert body["unit"] == "patches" and body["n"] == a.bag_size
    assert body["spearman"] == pytest.approx(spearmanr(a.attention, c.attention).statistic)
    for k in (7, 10, 50):
        assert body["jaccard"][str(k)] == pytest.approx(
            set_jaccard(top(a.attention, k), top(c.attention, k))
        )
    assert body["a"]["experiment"] == "ABMIL_A" and body["b"]["model_type"] == "abmil"
    assert body["a"]["prediction"]["name"] in ("normal", "tumor")


def test_agreement_across_grids_uses_the_cells_of_a_common_raster(compare_client, compared_cohort):
    """CLAM_B's 512-px patches every 384 px against ABMIL_A's 256-px lattice: each 512-px cell takes
    the mean of the patches that touch it (the heatmaps' rule), computed here with shapely."""
    body = compare_client.get("/api/slides/beta/agreement?a=ABMIL_A&b=CLAM_B").get_json()
    a, b = blockmap(compared_cohort, "ABMIL_A", "beta"), blockmap(compared_cohort, "CLAM_B", "beta")
    assert body["unit"] == "cells" and body["l0_cell"] == 512
    ends = np.concatenate([a.l0_coords + 256, b.l0_coords + 512]).max(0)
    cells = [
        box(x, y, x + 512, y + 512)
        for y in range(0, int(ends[1]), 512)
        for x in range(0, int(ends[0]), 512)
    ]

    def painted(bm, size):
        squares = [box(x, y, x + size, y + size) for x, y in bm.l0_coords]
        percentile = normalize_scores(bm.attention.astype(np.float64), "percentile")
        out = []
        for cell in cells:
            hits = [
                s
                for s, squ in zip(percentile, squares, strict=True)
                if cell.intersection(squ).area > 0
            ]
            out.append(np.mean(hits) if hits else np.nan)
        return np.array(out)

    va, vb = painted(a, 256), painted(b, 512)  # of percentiles: what the heatmaps paint
    both = np.isfinite(va) & np.isfinite(vb)
    assert body["n"] == int(both.sum()) > 10
    assert body["spearman"] == pytest.approx(spearmanr(va[both], vb[both]).statistic)
    assert body["jaccard"]["10"] == pytest.approx(set_jaccard(top(va[both], 10), top(vb[both], 10)))


def test_cohort_agreement_means_the_slides(compare_client):
    body = compare_client.get("/api/agreement?a=ABMIL_A&b=ABMIL_C").get_json()
    per_slide = [
        compare_client.get(f"/api/slides/{s}/agreement?a=ABMIL_A&b=ABMIL_C").get_json()["spearman"]
        for s in ("alpha", "beta")
    ]
    assert sorted(s["slide_id"] for s in body["slides"]) == ["alpha", "beta"]
    assert body["mean_spearman"] == pytest.approx(np.mean(per_slide))
    assert compare_client.get("/api/agreement?a=ABMIL_A&b=ABMIL_A").status_code == 400


def test_one_experiment_has_no_agreement(client):
    response = client.get("/api/slides/CMU-1-Small-Region/agreement")
    assert response.status_code == 404 and "two experiments" in response.get_json()["error"]


def test_run_viewer_takes_repeated_configs_and_results(compared_cohort, capsys):
    from viewer import cli as run_viewer

    a, b = (str(compared_cohort.configs[n]) for n in ("ABMIL_A", "CLAM_B"))
    assert run_viewer.viewer_config(run_viewer.parse_args(["--config", a, "--config", b])) == {
        "SCORING_CONFIG": [a, b]
    }
    assert run_viewer.viewer_config(
        run_viewer.parse_args(["--results", "r1", "--results", "r2", "--slides", "s"])
    ) == {"RESULTS_DIR": ["r1", "r2"], "SLIDES_DIR": "s"}
    assert run_viewer.main(["--config", a, "--config", a]) == 2
    assert "two experiments are named 'ABMIL_A'" in capsys.readouterr().err
    raw = compared_cohort.root / "raw"
    app = create_app(
        {
            "RESULTS_DIR": [str(raw / "ABMIL_A"), str(raw / "CLAM_B")],
            "SLIDES_DIR": str(compared_cohort.root / "slides"),
        }
    )
    assert list(app.extensions["mil_viewer"].experiments) == ["ABMIL_A", "CLAM_B"]


def test_difference_tiles_are_the_percentile_difference_of_the_two_maps(
    compare_client, compared_cohort
):
    """At the deepest level, the pixel at each ABMIL_A patch centre (away from CLAM_B's edges) is
    the diverging colormap at (pA - pB + 1) / 2, pB the mean percentile of the CLAM_B patches there."""
    import io

    from PIL import Image

    from scoremap.colormap import palette

    meta = compare_client.get("/api/slides/alpha?exp=ABMIL_A").get_json()
    dz = meta["deepzoom"]
    level = dz["level_count"] - 1
    a = blockmap(compared_cohort, "ABMIL_A", "alpha")
    pa = compare_client.get("/api/slides/alpha/topk?exp=ABMIL_A&k=1000").get_json()["patches"]
    pb = compare_client.get("/api/slides/alpha/topk?exp=CLAM_B&k=1000").get_json()["patches"]
    perc_a = {(p["x"], p["y"]): p["percentile"] for p in pa}
    perc_b = {(p["x"], p["y"]): p["percentile"] for p in pb}
    colours = palette("RdBu_r")
    tile = 254
    checked = 0
    for x, y in a.l0_coords[::3]:
        cx, cy = x + 128 - dz["l0_offset"][0], y + 128 - dz["l0_offset"][1]
        covering = [
            v
            for (bx, by), v in perc_b.items()
            if bx <= x + 128 < bx + 512 and by <= y + 128 < by + 512
        ]
        if not covering or min(abs(x + 128 - bx - e) for bx, _ in perc_b for e in (0, 512)) < 2:
            continue
        col, row = int(cx // tile), int(cy // tile)
        png = compare_client.get(
            f"/overlay/alpha_files/{level}/{col}_{row}.png?exp=ABMIL_A&minus=CLAM_B"
        )
        assert png.status_code == 200
        image = Image.open(io.BytesIO(png.data)).convert("RGBA")
        ox, oy = cx - col * tile + (1 if col else 0), cy - row * tile + (1 if row else 0)
        expected = colours[round(254 * np.clip((perc_a[(x, y)] - np.mean(covering) + 1) / 2, 0, 1))]
        assert np.abs(np.array(image.getpixel((int(ox), int(oy)))[:3]) - expected[:3]).max() <= 1, (
            x,
            y,
        )
        checked += 1
    assert checked >= 5
    assert (
        compare_client.get(
            f"/overlay/alpha_files/{level}/0_0.png?exp=ABMIL_A&minus=NOPE"
        ).status_code
        == 404
    )


def test_bad_difference_and_missing_slide_requests_say_what_is_wrong(
    compare_client, compared_cohort
):
    level = compare_client.get("/api/slides/alpha").get_json()["deepzoom"]["level_count"] - 1
    tile = f"/overlay/alpha_files/{level}/0_0.png"
    same = compare_client.get(tile + "?exp=ABMIL_A&minus=ABMIL_A")
    assert same.status_code == 400 and "another experiment" in same.get_json()["error"]
    assert compare_client.get(tile + "?exp=ABMIL_A&minus=CLAM_B&norm=bogus").status_code == 400
    assert compare_client.get(tile + "?exp=ABMIL_A&minus=CLAM_B&threshold=abc").status_code == 400
    from viewer.cohort import cohort_from_results

    raw, slides = compared_cohort.root / "raw", compared_cohort.root / "slides"
    a, b = cohort_from_results(raw / "ABMIL_A", slides), cohort_from_results(raw / "CLAM_B", slides)
    del b.records["beta"]
    client = create_app({"COHORT": [a, b]}).test_client()
    missing = client.get("/api/slides/beta?exp=CLAM_B")
    assert missing.status_code == 404
    assert (
        missing.get_json()["error"]
        == "experiment 'CLAM_B' did not score slide 'beta' (scored by ABMIL_A)"
    )
    rows = {s["id"]: s for s in client.get("/api/slides").get_json()["slides"]}
    assert [e["experiment"] for e in rows["beta"]["experiments"]] == ["ABMIL_A"]


def test_cohort_links_open_at_most_three_experiments(compared_cohort):
    from viewer.cohort import cohort_from_results

    raw, slides = compared_cohort.root / "raw", compared_cohort.root / "slides"
    cohorts = [cohort_from_results(raw / n, slides) for n in ("ABMIL_A", "CLAM_B", "ABMIL_C")]
    extra = cohort_from_results(raw / "ABMIL_A", slides)
    extra.experiment = "ABMIL_A_AGAIN"
    client = create_app({"COHORT": [*cohorts, extra]}).test_client()
    url = client.get("/api/slides").get_json()["slides"][0]["viewer_url"]
    assert url.endswith("?exp=ABMIL_A,CLAM_B,ABMIL_C")
    assert client.get(url).status_code == 200


def test_empty_bags_flat_maps_and_large_k_give_no_figures():
    from scoremap.agreement import agreement
    from scoremap.raster import ScoreSource

    empty = ScoreSource(np.zeros((0, 2), np.int64), np.zeros(0), 256)
    coords = np.array([[0, 0], [256, 0], [512, 0], [768, 0]])
    varied = ScoreSource(coords, np.array([0.1, 0.4, 0.2, 0.9]), 256)
    flat = ScoreSource(coords, np.full(4, 0.5), 256)
    assert agreement(empty, varied) == {
        "unit": "patches",
        "l0_cell": 256,
        "n": 0,
        "spearman": None,
        "p_value": None,
        "jaccard": {"10": None, "50": None},
    }
    assert (
        agreement(flat, varied, ks=(2,))["jaccard"]["2"] is None
        and agreement(flat, varied)["spearman"] is None
    )
    figures = agreement(
        varied, ScoreSource(coords, np.array([0.5, 0.3, 0.1, 0.8]), 256), ks=(2, 4)
    )  # {3, 1} vs {3, 0}
    assert figures["jaccard"]["2"] == pytest.approx(1 / 3) and figures["jaccard"]["4"] is None


def test_experiment_names_with_commas_are_refused(compared_cohort, tmp_path):
    import shutil

    raw = tmp_path / "lr=1e-4,bs=32"
    shutil.copytree(compared_cohort.root / "raw" / "ABMIL_A", raw)
    with pytest.raises(ViewerConfigError, match="holds a comma"):
        create_app(
            {
                "RESULTS_DIR": [str(raw), str(compared_cohort.root / "raw" / "CLAM_B")],
                "SLIDES_DIR": str(compared_cohort.root / "slides"),
            }
        )


def test_cohort_agreement_within_a_time_budget_lists_the_rest_as_pending(compared_cohort):
    configs = [str(compared_cohort.configs[n]) for n in ("ABMIL_A", "ABMIL_C")]
    client = create_app({"SCORING_CONFIG": configs, "COHORT_BUDGET_S": 0.0}).test_client()
    first = client.get("/api/agreement").get_json()
    assert len(first["slides"]) == 1 and first["pending"] == ["beta"] and not first["complete"]
    second = client.get(
        "/api/agreement"
    ).get_json()  # the first slide is cached, the second computed now
    assert [s["slide_id"] for s in second["slides"]] == ["alpha", "beta"] and second["complete"]
    assert second["mean_spearman"] == pytest.approx(
        np.mean([s["spearman"] for s in second["slides"]])
    )
