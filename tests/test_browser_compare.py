"""The comparison page and the compared cohort table in headless Chromium, on three experiments
scored by the real pipeline (tests/compare_fixtures.py): panes locked both ways, the difference
pane's pixels against the two maps, the URL round trip, the table's column groups and filter."""

from __future__ import annotations

import base64
import io
import json
import re
import urllib.request

import numpy as np
import pytest
from PIL import Image

from scoremap.colormap import palette
from tests.test_browser import VIEWPORT, require_browser, shot
from viewer.background import start_viewer, stop_viewer

EXPS = ("ABMIL_A", "CLAM_B", "ABMIL_C")


@pytest.fixture(scope="module")
def compare_server(compared_cohort):
    require_browser()
    args = [a for name in EXPS for a in ("--config", str(compared_cohort.configs[name]))]
    proc, base = start_viewer([*args, "--workers", "1"], quiet=True)
    try:
        yield base
    finally:
        stop_viewer(proc)


@pytest.fixture()
def cpage(browser, compare_server):
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.base = compare_server
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


SETTLE = """(frames) => new Promise((resolve, reject) => {
  const t0 = performance.now(); let calm = 0;
  const tick = () => {
    calm = window.milCompare.settled() && window.milCompare.fullyLoaded() ? calm + 1 : 0;
    if (calm >= frames) resolve(true);
    else if (performance.now() - t0 > 15000) reject(new Error('the panes never came to rest'));
    else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})"""

BOUNDS = """() => window.milCompare.viewers().map((v) => {
  const b = v.viewport.getBounds(true);
  return [b.x, b.y, b.width, b.height, v.viewport.getRotation(true)]; })"""


def open_compare(page, query: str) -> None:
    page.goto(f"{page.base}/slides/alpha{query}")
    page.wait_for_function("window.milCompare && window.milCompare.ready", timeout=20_000)
    page.evaluate(SETTLE, 4)


def assert_locked(page) -> list:
    bounds = page.evaluate(BOUNDS)
    for other in bounds[1:]:
        assert other == pytest.approx(bounds[0], rel=1e-9, abs=1e-9)
    return bounds


def pane_box(page, selector: str) -> dict:
    return page.locator(selector).bounding_box()


def drag(page, selector: str, dx: float, dy: float) -> None:
    """Press in the middle of the pane and move by (dx, dy) screen pixels; the pointer stays there."""
    box = pane_box(page, selector)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + dx, cy + dy, steps=8)
    page.mouse.up()


def test_every_pane_moves_with_a_drag_and_a_zoom_in_any_of_them(cpage):
    open_compare(cpage, "?exp=ABMIL_A,CLAM_B,ABMIL_C")
    titles = cpage.eval_on_selector_all(
        ".compare-pane:not([hidden]) .pane-label", "ls => ls.map(l => l.textContent)"
    )
    assert titles[0] == "Slide" and len(titles) == 4
    assert titles[1].startswith("ABMIL_A · abmil · predicted ") and titles[2].startswith(
        "CLAM_B · clam_sb"
    )
    start = assert_locked(cpage)
    # drag in the third experiment's pane, zoom with the wheel in the slide pane
    drag(cpage, ".heatmap-pane[data-experiment='ABMIL_C']", -60, -40)
    cpage.evaluate(SETTLE, 4)
    dragged = assert_locked(cpage)
    assert dragged[0][0] != pytest.approx(start[0][0])
    box = pane_box(cpage, ".slide-pane")
    cpage.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    cpage.mouse.wheel(0, -300)
    cpage.evaluate(SETTLE, 4)
    zoomed = assert_locked(cpage)
    assert zoomed[0][2] < dragged[0][2] * 0.9
    shot(cpage, "compare-three.png")


def test_the_difference_pane_shows_percentile_a_minus_b(cpage, compare_server):
    open_compare(cpage, "?exp=ABMIL_A,ABMIL_C&diff=1&da=ABMIL_A&db=ABMIL_C&alpha=1")
    assert len(assert_locked(cpage)) == 4  # slide, two experiments, the difference
    # the same grid: at each patch centre the difference pane shows RdBu_r at (pA - pC + 1) / 2
    pa = {
        (p["x"], p["y"]): p["percentile"]
        for p in get_json(f"{compare_server}/api/slides/alpha/topk?exp=ABMIL_A&k=1000")["patches"]
    }
    pc = {
        (p["x"], p["y"]): p["percentile"]
        for p in get_json(f"{compare_server}/api/slides/alpha/topk?exp=ABMIL_C&k=1000")["patches"]
    }
    colours = palette("RdBu_r")
    points = cpage.evaluate(
        """(pts) => { const v = window.milCompare.diffPane.viewer, item = v.world.getItemAt(0);
        return pts.map(([x, y]) => {
          const p = v.viewport.pixelFromPoint(item.imageToViewportCoordinates(x, y), true);
          return [p.x, p.y]; }); }""",
        [[x + 128, y + 128] for x, y in pa],
    )
    canvas = cpage.evaluate("""() => { const c = window.milCompare.diffPane.viewer.drawer.canvas;
        return {w: c.width, h: c.height, data: c.toDataURL('image/png')}; }""")
    image = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(canvas["data"].split(",", 1)[1]))).convert("RGB")
    )
    checked = 0
    for key, (sx, sy) in zip(pa, points, strict=True):
        xi, yi = round(sx), round(sy)
        if not (3 <= xi < canvas["w"] - 3 and 3 <= yi < canvas["h"] - 3):
            continue
        expected = colours[round(254 * (pa[key] - pc[key] + 1) / 2)].astype(int)
        seen = image[yi - 1 : yi + 2, xi - 1 : xi + 2].reshape(-1, 3).astype(int)
        assert np.abs(seen - expected).max(axis=1).min() <= 12, (key, seen[4], expected)
        checked += 1
    assert checked >= 20
    shot(cpage, "compare-difference.png")


def test_the_url_round_trips_the_comparison(cpage):
    open_compare(cpage, "?exp=ABMIL_A,CLAM_B")
    cpage.select_option("select[aria-label='CLAM_B colormap']", "viridis")
    cpage.check("#show-difference")
    cpage.locator("#lock-settings").check()  # every pane takes ABMIL_A's settings: jet again
    cpage.select_option("select[aria-label='ABMIL_A scale']", "raw")
    box = pane_box(cpage, ".heatmap-pane[data-experiment='CLAM_B']")
    cpage.mouse.move(box["x"] + box["width"] / 3, box["y"] + box["height"] / 3)
    cpage.mouse.wheel(0, -250)
    cpage.evaluate(SETTLE, 4)
    cpage.evaluate("window.milCompare.flushUrl()")
    url = cpage.url
    assert (
        "lock=1" in url
        and "diff=1" in url
        and "CLAM_B.norm=raw" in url
        and "CLAM_B.cmap=jet" in url
    )
    before = assert_locked(cpage)
    state = cpage.evaluate("JSON.stringify(window.milCompare.state)")
    cpage.goto(url)
    cpage.wait_for_function("window.milCompare && window.milCompare.ready", timeout=20_000)
    cpage.evaluate(SETTLE, 4)
    after = assert_locked(cpage)
    assert len(after) == len(before) == 4
    assert after[0] == pytest.approx(before[0], rel=1e-4, abs=1e-6)
    reopened = json.loads(cpage.evaluate("JSON.stringify(window.milCompare.state)"))
    old = json.loads(state)
    for key in ("experiments", "locked", "diff", "diffA", "diffB", "panes", "alpha"):
        assert reopened[key] == old[key], key
    assert reopened["zoom"] == pytest.approx(old["zoom"], rel=1e-5)
    assert "viridis" not in cpage.evaluate("window.milCompare.heatmapPanes[1].overlay.url")


def test_top_lists_mark_the_patches_both_experiments_attend(cpage, compare_server):
    open_compare(cpage, "?exp=ABMIL_A,ABMIL_C")
    cpage.wait_for_function("document.querySelectorAll('#topk-lists li').length === 20")
    tops = {
        e: {
            (p["x"], p["y"])
            for p in get_json(f"{compare_server}/api/slides/alpha/topk?exp={e}&k=10")["patches"]
        }
        for e in ("ABMIL_A", "ABMIL_C")
    }
    marked = cpage.eval_on_selector_all(
        "#topk-lists ol[data-experiment='ABMIL_A'] li",
        "lis => lis.map(l => l.dataset.shared === 'true')",
    )
    patches = get_json(f"{compare_server}/api/slides/alpha/topk?exp=ABMIL_A&k=10")["patches"]
    assert marked == [
        (p["x"], p["y"]) in tops["ABMIL_C"] for p in patches
    ]  # same grid: shared = same patch
    cpage.wait_for_function(
        "document.getElementById('agreement-figures').dataset.loaded === 'true'"
    )
    body = get_json(f"{compare_server}/api/slides/alpha/agreement?a=ABMIL_A&b=ABMIL_C")
    assert f"Spearman ρ {body['spearman']:.2f}" in cpage.inner_text("#agreement-figures")


def test_an_older_top_list_answer_arriving_late_does_not_replace_a_newer_one(cpage):
    """ABMIL_A's first top-10 request is held back; a change of its scale asks again, and that
    answer is shown; the first answer, released afterwards (cut to 3 patches here, so that it
    would show), is dropped."""
    held = []

    def hold_first(route):
        if "exp=ABMIL_A" in route.request.url and not held:
            held.append((route, route.fetch()))
        else:
            route.continue_()

    cpage.route(re.compile(r"/api/slides/alpha/topk\?"), hold_first)
    open_compare(cpage, "?exp=ABMIL_A,ABMIL_C")
    cpage.wait_for_function("document.querySelectorAll('#topk-lists li').length === 10")
    assert held and cpage.locator("#topk-lists ol[data-experiment='ABMIL_A'] li").count() == 0
    cpage.select_option("select[aria-label='ABMIL_A scale']", "raw")
    items = "#topk-lists ol[data-experiment='ABMIL_A'] li"
    cpage.wait_for_function(f'document.querySelectorAll("{items}").length === 10')
    route, response = held[0]
    older = response.json()
    older["patches"] = older["patches"][:3]
    with cpage.expect_event("requestfinished", lambda r: r.url == route.request.url):
        route.fulfill(response=response, json=older)
    cpage.evaluate("new Promise((r) => setTimeout(r, 200))")  # the answer's handling has run
    ranks = cpage.eval_on_selector_all(items, "lis => lis.map(l => l.textContent.split(' ')[0])")
    assert ranks == [f"#{k}" for k in range(1, 11)]


def test_the_table_asks_again_until_every_slide_is_computed(browser, compared_cohort, monkeypatch):
    """With no time budget, /api/agreement computes one slide a request: the page asks again
    until none is pending."""
    monkeypatch.setenv("MIL_VIEWER_COHORT_BUDGET_S", "0")
    args = [
        a
        for name in ("ABMIL_A", "ABMIL_C")
        for a in ("--config", str(compared_cohort.configs[name]))
    ]
    proc, base = start_viewer([*args, "--workers", "1"], quiet=True)
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, bypass_csp=True)
    try:
        page = context.new_page()
        asked = []
        page.on("request", lambda r: asked.append(r.url) if "/api/agreement" in r.url else None)
        page.goto(base + "/")
        page.wait_for_function(
            "document.getElementById('cohort').dataset.agreementLoaded === 'true'"
        )
        assert len(asked) >= 2
        values = page.eval_on_selector_all(
            "#cohort tbody td.agreement-cell", "tds => tds.map(td => td.dataset.value)"
        )
        assert len(values) == 2 and all(values)
    finally:
        context.close()
        stop_viewer(proc)


def test_cohort_table_groups_experiments_and_filters_disagreement(cpage, compare_server):
    cpage.goto(compare_server + "/")
    heads = cpage.eval_on_selector_all(
        "#cohort thead th.exp-head", "ths => ths.map(t => t.dataset.experiment)"
    )
    assert heads == [e for e in EXPS for _ in range(2)]
    cpage.wait_for_function("document.getElementById('cohort').dataset.agreementLoaded === 'true'")
    api = get_json(compare_server + "/api/agreement")
    for s in api["slides"]:
        value = cpage.get_attribute(
            f"#cohort tr[data-slide-id='{s['slide_id']}'] td.agreement-cell", "data-value"
        )
        assert float(value) == pytest.approx(s["spearman"])
    assert float(
        cpage.get_attribute("#cohort tfoot td.agreement-cell", "data-value")
    ) == pytest.approx(api["mean_spearman"])
    slides = get_json(compare_server + "/api/slides")["slides"]
    disagreeing = sorted(s["id"] for s in slides if s["disagree"])
    assert disagreeing  # ABMIL_C calls every slide tumour
    cpage.check("#cohort-disagree")
    shown = cpage.eval_on_selector_all(
        "#cohort tbody tr[data-slide-id]",
        "rows => rows.filter(r => !r.hidden).map(r => r.dataset.slideId)",
    )
    assert sorted(shown) == disagreeing
    link = cpage.get_attribute("#cohort tr[data-slide-id='alpha'] a.slide-id", "href")
    assert link.endswith("?exp=ABMIL_A,CLAM_B,ABMIL_C")
    shot(cpage, "cohort-experiments.png")


def test_one_experiment_of_several_opens_the_slide_page(cpage):
    from tests.test_browser import open_viewer

    open_viewer(cpage, "alpha", "?exp=CLAM_B")
    assert cpage.evaluate("window.milViewer.meta.experiment") == "CLAM_B"
    assert "exp=CLAM_B&cmap=" in cpage.evaluate("window.milViewer.overlay.shownUrl")
    cpage.wait_for_function("document.querySelectorAll('#patch-list li img').length === 10")
    assert all(
        "exp=CLAM_B" in src
        for src in cpage.eval_on_selector_all("#patch-list li img", "i => i.map(x => x.src)")
    )
    assert cpage.get_attribute("#compare-link", "href").endswith("?exp=ABMIL_A,CLAM_B,ABMIL_C")
    cpage.mouse.move(900, 400)
    cpage.mouse.wheel(0, -200)
    cpage.wait_for_timeout(800)
    cpage.evaluate("window.milViewer.flushUrl()")
    assert "exp=CLAM_B" in cpage.url  # a copied link reopens this experiment, not the first
    cpage.goto(cpage.url)
    cpage.wait_for_function("window.milViewer && window.milViewer.ready")
    assert cpage.evaluate("window.milViewer.meta.experiment") == "CLAM_B"


def test_an_unknown_colormap_in_the_link_is_named_and_replaced(cpage):
    open_compare(cpage, "?exp=ABMIL_A,CLAM_B&ABMIL_A.cmap=NOPE")
    card = cpage.locator(".experiment-card[data-experiment='ABMIL_A'] .annotation-error")
    assert card.inner_text() == "unknown colormap NOPE in the link, showing jet"
    assert "cmap=jet" in cpage.evaluate("window.milCompare.heatmapPanes[0].overlay.url")


def test_ground_truth_outlines_every_pane_with_each_experiments_figures(
    browser, compared_cohort, tmp_path
):
    from tests.test_annotations import TUMOR, qupath

    folder = tmp_path / "annotations"
    folder.mkdir()
    qupath(folder / "alpha.geojson")
    args = [a for name in EXPS[:2] for a in ("--config", str(compared_cohort.configs[name]))]
    proc, base = start_viewer([*args, "--annotations", str(folder), "--workers", "1"], quiet=True)
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, bypass_csp=True)
    try:
        page = context.new_page()
        page.base = base
        open_compare(page, "?exp=ABMIL_A,CLAM_B&diff=1")
        page.wait_for_function("document.getElementById('localization').dataset.loaded === 'true'")
        for exp in EXPS[:2]:
            body = get_json(f"{base}/api/slides/alpha/localization?exp={exp}")
            tumor = {c["class"]: c for c in body["classes"]}["Tumor"]
            row = page.inner_text(f".localization-row[data-experiment='{exp}'][data-class='Tumor']")
            assert (
                f"AUROC {tumor['auroc']:.2f}" in row and f"Dice ≥ 0.50 {tumor['dice']:.2f}" in row
            )
        # every pane (slide, both experiments, the difference) draws the outline through TUMOR's vertices
        found = page.evaluate(
            """(pts) => window.milCompare.annotations.viewers.map((v, i) => {
            const item = v.world.getItemAt(0), c = window.milCompare.annotations.canvases[i];
            const ctx = c.getContext('2d');
            return pts.map(([x, y]) => {
              const p = v.viewport.pixelFromPoint(item.imageToViewportCoordinates(x, y), true);
              const xi = Math.round(p.x), yi = Math.round(p.y);
              if (xi < 2 || yi < 2 || xi > c.width - 3 || yi > c.height - 3) return null;
              const d = ctx.getImageData(xi - 2, yi - 2, 5, 5).data;
              for (let k = 0; k < d.length; k += 4)
                if (d[k + 3] > 0 && d[k] > 150 && d[k + 1] < 60) return true;
              return false; }); })""",
            [list(p) for p in TUMOR],
        )
        assert len(found) == 4
        for pane in found:
            seen = [hit for hit in pane if hit is not None]
            assert len(seen) >= 2 and all(seen), found
        shot(page, "compare-annotations.png")
    finally:
        context.close()
        stop_viewer(proc)


def test_a_hidden_difference_pane_neither_moves_nor_records_the_view(cpage):
    open_compare(cpage, "?exp=ABMIL_A,CLAM_B")
    cpage.check("#show-difference")
    cpage.wait_for_function("window.milCompare.diffPane.viewer && window.milCompare.fullyLoaded()")
    cpage.evaluate(SETTLE, 4)
    cpage.uncheck("#show-difference")
    cpage.evaluate(SETTLE, 4)
    drag(cpage, ".heatmap-pane[data-experiment='CLAM_B']", -50, -30)
    cpage.mouse.wheel(0, -300)
    cpage.evaluate(SETTLE, 4)
    cpage.wait_for_timeout(500)
    bounds = assert_locked(cpage)
    assert len(bounds) == 3
    view = cpage.evaluate("""() => {
        const v = window.milCompare.heatmapPanes[0].viewer, item = v.world.getItemAt(0);
        return {zoom: item.viewportToImageZoom(v.viewport.getZoom(true)),
                state: window.milCompare.state.zoom}; }""")
    assert view["state"] == pytest.approx(view["zoom"], rel=1e-6)
    cpage.check("#show-difference")
    cpage.evaluate(SETTLE, 4)
    assert len(assert_locked(cpage)) == 4  # shown again, it takes the others' view
