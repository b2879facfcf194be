"""The pages in real headless Chromium: Debian's `chromium` driven by Playwright, against the viewer
served by run_viewer.py (gunicorn) on the test cohort of tests/viewer_fixtures.py.

`make test` installs what these need (OpenSeadragon with `npm ci`, Playwright with pip, Chromium
with apt-get as root). Where Chromium or OpenSeadragon is missing the tests skip with the reason,
except in CI (`CI` set), where every skip fails (tests/conftest.py).

Screenshots are kept under test-artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from scoremap.checkout import REPO_ROOT
from tests.chromium import CHROMIUM
from viewer.background import start_viewer, stop_viewer

OSD_SCRIPT = (
    REPO_ROOT
    / "node_modules"
    / "openseadragon"
    / "build"
    / "openseadragon"
    / "openseadragon.min.js"
)
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
VIEWPORT = {"width": 1280, "height": 800}
SLIDE = "pyramid"  # 6000 x 4500, 4 levels: zoom matters
PER_CLASS_SLIDE = "CMU-1-Small-Region"  # clam_mb: attention for both classes


def require_browser() -> None:
    """Skip with a clear reason when the browser stack is not installed (CI fails instead)."""
    problems = []
    if not CHROMIUM.is_file():
        problems.append(
            f"{CHROMIUM} is missing: install Debian's chromium (`sudo apt-get install -y chromium`, "
            "or `make test-deps` as root)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the Playwright Python package is missing: run `make install`")
    if not OSD_SCRIPT.is_file():
        problems.append(
            "OpenSeadragon is not installed in node_modules: run `make install` (npm ci)"
        )
    if problems:
        reason = "browser tests need: " + "; ".join(problems)
        pytest.skip(reason)  # a failure in CI (tests/conftest.py)


# ---------------------------------------------------------------------------------------------
# the server and the browser


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="session")
def server(viewer_cohort) -> str:
    """run_viewer.py (gunicorn) on a free 127.0.0.1 port; yields its base URL."""
    require_browser()
    proc, base = start_viewer(
        ["--config", str(viewer_cohort.config), "--workers", "2", "--threads", "4"]
    )
    try:
        yield base
    finally:
        stop_viewer(proc)
        proc.stdout.close()


class Recorder:
    """Requests the page makes, and its JavaScript errors."""

    def __init__(self, page):
        self.urls: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        # the pages must satisfy the server's Content-Security-Policy: a violation is an error
        page.on(
            "console",
            lambda m: self.errors.append(m.text) if "Content Security Policy" in m.text else None,
        )

    def clear(self) -> None:
        self.urls.clear()

    def matching(self, *parts: str) -> list[str]:
        return [u for u in self.urls if all(p in u for p in parts)]

    def tiles(self) -> list[str]:
        return [u for u in self.urls if "/overlay/" in u or "/slide/" in u]


@pytest.fixture()
def page(browser):
    # Playwright's wait_for_function evaluates strings, which the viewer's CSP (rightly) forbids;
    # test_pages_work_under_their_content_security_policy loads the pages with it enforced.
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, bypass_csp=True)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.recorder = Recorder(pg)
    yield pg
    errors = list(pg.recorder.errors)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page_or_locator, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page_or_locator.screenshot(path=str(path))
    return path


# ---------------------------------------------------------------------------------------------
# viewer helpers

SETTLE_JS = """(frames) => new Promise((resolve, reject) => {
  const t0 = performance.now();
  let calm = 0;
  const tick = () => {
    calm = window.milViewer.settled() ? calm + 1 : 0;
    if (calm >= frames) resolve(true);
    else if (performance.now() - t0 > 15000) reject(new Error('the viewers never came to rest'));
    else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})"""

VIEW_JS = """(name) => {
  const v = window.milViewer[name];
  const b = v.viewport.getBounds(true);
  const c = v.viewport.getCenter(true);
  const item = v.world.getItemAt(0);
  const img = item.viewportToImageCoordinates(c);
  return {x: b.x, y: b.y, w: b.width, h: b.height, rot: v.viewport.getRotation(true),
          zoom: v.viewport.getZoom(true), imageZoom: item.viewportToImageZoom(v.viewport.getZoom(true)),
          imgX: img.x, imgY: img.y};
}"""


def open_viewer(page, slide: str = SLIDE, query: str = "", base: str | None = None) -> None:
    page.goto(f"{base or page.base}/slides/{slide}{query}")
    page.wait_for_function("window.milViewer && window.milViewer.ready", timeout=20_000)
    page.wait_for_function("window.milViewer.fullyLoaded()", timeout=20_000)
    settle(page)


def settle(page, frames: int = 4) -> None:
    page.evaluate(SETTLE_JS, frames)


def view(page, name: str) -> dict:
    return page.evaluate(VIEW_JS, name)


def wait_for_heatmap(page, *parts: str) -> None:
    """Until the heatmap on show (its old layer dropped) has all of `parts` in its URL and is loaded."""
    cond = " && ".join(f"o.shownUrl.includes({json.dumps(p)})" for p in parts)
    page.wait_for_function(
        f"(() => {{ const o = window.milViewer.overlay; return o.shownUrl !== null && {cond} && "
        "window.milViewer.fullyLoaded(); })()"
    )


def assert_same_view(page, tol: float = 1e-6) -> tuple[dict, dict]:
    left, right = view(page, "left"), view(page, "right")
    for key in ("x", "y", "w", "h", "rot"):
        assert abs(left[key] - right[key]) <= tol, (key, left, right)
    return left, right


def pane_center(page, pane: str) -> tuple[float, float]:
    box = page.locator(f"#{pane}-pane").bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def canvas_pixels(page, name: str) -> np.ndarray:
    """The viewer's drawing canvas as an (h, w, 4) uint8 array."""
    url = page.evaluate(
        "(name) => window.milViewer[name].drawer.canvas.toDataURL('image/png')", name
    )
    return np.asarray(
        Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA")
    )


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


@pytest.fixture()
def viewer(page, server):
    page.base = server
    open_viewer(page)
    return page


# ---------------------------------------------------------------------------------------------
# the viewer page


def test_both_canvases_draw_tiles(viewer):
    left, right = canvas_pixels(viewer, "left"), canvas_pixels(viewer, "right")
    assert left.shape == right.shape  # the two panes are the same size
    drawn_left = left[..., 3] > 0
    assert drawn_left.mean() > 0.2, "the slide pane is blank"
    assert left[drawn_left][:, :3].std() > 10, "the slide pane is drawn in one colour"
    assert (right[..., 3] > 0).mean() > 0.2, "the heatmap pane is blank"
    # the heatmap pane differs from the slide pane where the overlay lies
    diff = np.abs(left[..., :3].astype(int) - right[..., :3].astype(int)).max(axis=2)
    assert (diff > 40).mean() > 0.01, "no heatmap drawn over the slide"
    assert viewer.evaluate("window.milViewer.right.world.getItemCount()") == 2
    assert viewer.evaluate("window.milViewer.overlay.firstTileDrawnAt") is not None
    assert viewer.locator(".scalebar-label").first.inner_text().strip().endswith("µm")
    assert viewer.locator("#patch-list button").count() == 10
    shot(viewer, "viewer-dual.png")


@pytest.mark.parametrize("source", ["slide", "overlay"])
def test_drag_moves_the_other_pane(viewer, source):
    name = "left" if source == "slide" else "right"
    before = view(viewer, name)
    x, y = pane_center(viewer, source)
    viewer.mouse.move(x, y)
    viewer.mouse.down()
    viewer.mouse.move(x - 150, y - 90, steps=8)
    viewer.mouse.up()
    settle(viewer)
    _left, _right = assert_same_view(viewer)
    after = view(viewer, name)
    # dragging the image up-left moves the view down-right by the dragged distance
    px_per_unit = 1 / before["w"] * viewer.locator(f"#{source}-pane").bounding_box()["width"]
    assert after["x"] - before["x"] == pytest.approx(150 / px_per_unit, rel=0.1)
    assert after["y"] - before["y"] == pytest.approx(90 / px_per_unit, rel=0.1)
    assert viewer.recorder.errors == []


@pytest.mark.parametrize("source", ["slide", "overlay"])
def test_wheel_zoom_zooms_the_other_pane(viewer, source):
    name = "left" if source == "slide" else "right"
    before = view(viewer, name)
    x, y = pane_center(viewer, source)
    viewer.mouse.move(x + 40, y + 20)
    for _ in range(3):
        viewer.mouse.wheel(0, -120)
    settle(viewer)
    left, _right = assert_same_view(viewer)
    assert view(viewer, name)["zoom"] > before["zoom"] * 1.3
    # then out again, from the other pane
    other = "overlay" if source == "slide" else "slide"
    x, y = pane_center(viewer, other)
    viewer.mouse.move(x - 30, y - 10)
    viewer.mouse.wheel(0, 120)
    settle(viewer)
    assert_same_view(viewer)
    assert view(viewer, "left")["zoom"] < left["zoom"]


def test_animated_moves_of_either_pane_carry_over(viewer):
    """Programmatic, animated rotation/zoom/pan (buttons, keys, flights) of either pane, whichever
    pane the user touched last: the animation runs to its end and the other pane follows."""
    for name, degrees in (("right", 90), ("left", 180), ("right", 0)):
        viewer.evaluate(
            """([name, degrees]) => {
          const vp = window.milViewer[name].viewport;
          vp.setRotation(degrees);
          vp.zoomBy(1.8);
          vp.panBy(new OpenSeadragon.Point(0.02, 0.01));
        }""",
            [name, degrees],
        )
        settle(viewer)
        left, _right = assert_same_view(viewer)
        assert left["rot"] == degrees
    assert left["zoom"] == pytest.approx(1.8**3, rel=1e-6)


def test_alpha_changes_pixels_without_tile_requests(viewer):
    viewer.mouse.move(5, 5)  # leave the panes: no hover effects in the screenshots
    settle(viewer)
    box = viewer.locator("#overlay-pane").bounding_box()
    clip = {
        "x": box["x"] + box["width"] * 0.2,
        "y": box["y"] + box["height"] * 0.25,
        "width": box["width"] * 0.6,
        "height": box["height"] * 0.5,
    }  # no buttons, labels, navigator
    before_png = png(viewer.screenshot(clip=clip))
    before_canvas = canvas_pixels(viewer, "right")
    viewer.recorder.clear()
    viewer.locator("#alpha").fill("0.9")
    viewer.wait_for_function("window.milViewer.overlay.item.getOpacity() === 0.9")
    viewer.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    after_png = png(viewer.screenshot(clip=clip))
    after_canvas = canvas_pixels(viewer, "right")
    changed = (np.abs(after_png - before_png).max(axis=2) > 10).mean()
    assert changed > 0.02, f"only {changed:.3%} of the heatmap pane changed"
    assert (
        np.abs(after_canvas.astype(int) - before_canvas.astype(int)).max(axis=2) > 10
    ).mean() > 0.01
    # the slide pane keeps its pixels
    assert viewer.locator("#alpha-value").inner_text() == "0.90"
    viewer.evaluate("window.milViewer.flushUrl()")
    assert parse_qs(urlsplit(viewer.url).query)["alpha"] == ["0.9"]
    assert viewer.recorder.tiles() == [], "changing the opacity fetched tiles"


def test_colormap_change_refetches_overlay_and_colorbar(viewer):
    viewer.recorder.clear()
    viewer.select_option("#cmap", "viridis")
    wait_for_heatmap(viewer, "cmap=viridis")
    assert viewer.recorder.matching("/overlay/pyramid.dzi", "cmap=viridis")
    assert viewer.recorder.matching("/overlay/pyramid_files/", "cmap=viridis")
    assert viewer.recorder.matching("/api/colorbar", "cmap=viridis")
    assert not viewer.recorder.matching("/slide/pyramid_files/"), (
        "the slide tiles were fetched again"
    )
    assert "cmap=viridis" in viewer.locator("#colorbar").get_attribute("src")
    # any matplotlib name, checked by the server; an unknown one gets an inline message
    viewer.fill("#cmap-custom", "not_a_colormap")
    viewer.press("#cmap-custom", "Enter")
    viewer.wait_for_function(
        "document.getElementById('cmap-error').textContent.includes('unknown colormap')"
    )
    assert "cmap=viridis" in viewer.evaluate("window.milViewer.overlay.url")
    viewer.fill("#cmap-custom", "magma")
    viewer.press("#cmap-custom", "Enter")
    viewer.wait_for_function("window.milViewer.overlay.url.includes('cmap=magma')")
    assert viewer.locator("#cmap-error").inner_text().strip() == ""
    assert viewer.eval_on_selector("#cmap", "el => el.value") == "magma"
    # raw scale and threshold: a new heatmap, legend labels in raw scores
    viewer.recorder.clear()
    viewer.locator("label:has(input[value=raw])").click()
    viewer.wait_for_function("window.milViewer.overlay.url.includes('norm=raw')")
    meta = json.loads(http_get(f"{viewer.base}/api/slides/{SLIDE}")[1])
    cls = meta["classes"][meta["prediction"]["index"]]
    assert float(viewer.locator("#legend-max").inner_text()) == pytest.approx(
        cls["score_max"], rel=1e-3
    )
    assert float(viewer.locator("#legend-min").inner_text()) == pytest.approx(
        cls["score_min"], rel=1e-3, abs=1e-3
    )
    viewer.locator("#threshold").fill("0.5")
    wait_for_heatmap(viewer, "threshold=0.5")
    assert viewer.recorder.matching("/overlay/pyramid_files/", "norm=raw", "threshold=0.5")
    # class menu: abmil has attention for the predicted class only
    assert viewer.locator("#class-select").is_disabled()


def test_topk_click_centres_both_panes_and_outlines_the_patch(viewer):
    topk = json.loads(http_get(f"{viewer.base}/api/slides/{SLIDE}/topk?k=10")[1])["patches"]
    meta = json.loads(http_get(f"{viewer.base}/api/slides/{SLIDE}")[1])
    off_x, off_y = meta["deepzoom"]["l0_offset"]
    for i in (0, 3):
        patch = topk[i]
        viewer.locator("#patch-list button").nth(i).click()
        settle(viewer)
        left, right = assert_same_view(viewer)
        for v in (left, right):
            assert v["imgX"] == pytest.approx(patch["x"] + patch["size"] / 2 - off_x, abs=1.0)
            assert v["imgY"] == pytest.approx(patch["y"] + patch["size"] / 2 - off_y, abs=1.0)
            assert v["imageZoom"] > 0.5  # zoomed in on it, not just panned
        outlines = viewer.locator(".patch-outline")
        assert outlines.count() == 2
        for k in range(2):
            assert outlines.nth(k).is_visible()
            assert outlines.nth(k).get_attribute("data-index") == str(patch["index"])
            box = outlines.nth(k).bounding_box()
            assert box["width"] == pytest.approx(patch["size"] * left["imageZoom"], abs=4)
        inspector = viewer.locator("#inspector")
        assert inspector.get_attribute("data-rank") == str(patch["rank"])
    shot(viewer, "viewer-topk.png")


def test_click_on_slide_shows_the_patch(viewer):
    viewer.locator("#patch-list button").first.click()  # a patch under the pane centres
    settle(viewer)
    x, y = pane_center(viewer, "slide")
    box = viewer.locator("#slide-pane").bounding_box()
    l0 = viewer.evaluate(
        """([ex, ey]) => {
      const m = window.milViewer, item = m.left.world.getItemAt(0);
      const p = item.viewerElementToImageCoordinates(new OpenSeadragon.Point(ex, ey));
      const [ox, oy] = m.meta.deepzoom.l0_offset;
      return [p.x + ox, p.y + oy];
    }""",
        [x - box["x"] + 20, y - box["y"] + 10],
    )
    status, body = http_get(f"{viewer.base}/api/slides/{SLIDE}/patch?x={l0[0]:.2f}&y={l0[1]:.2f}")
    assert status == 200
    expected = json.loads(body)
    viewer.mouse.click(x + 20, y + 10)
    viewer.wait_for_function("document.getElementById('inspector').dataset.source === 'click'")
    inspector = viewer.locator("#inspector")
    assert inspector.get_attribute("data-index") == str(expected["index"])
    assert inspector.get_attribute("data-rank") == str(expected["rank"])
    assert float(inspector.get_attribute("data-score")) == pytest.approx(
        expected["score"], rel=1e-6
    )
    assert float(inspector.get_attribute("data-percentile")) == pytest.approx(
        expected["percentile"], rel=1e-6
    )
    assert viewer.locator("#inspect-coords").inner_text() == f"{expected['x']}, {expected['y']}"
    assert viewer.locator("#inspect-rank").inner_text().startswith(f"{expected['rank']} / ")
    assert viewer.locator("#inspector img").evaluate("img => img.complete && img.naturalWidth > 0")
    settle(viewer)
    assert_same_view(viewer)  # a click is not a drag: nothing moved
    # the slide's corner holds no patch
    viewer.evaluate("window.milViewer.right.viewport.goHome(true)")
    settle(viewer)
    corner = viewer.evaluate("""() => {
      const v = window.milViewer.right, item = v.world.getItemAt(0);
      return item.imageToViewerElementCoordinates(new OpenSeadragon.Point(80, 80));
    }""")
    box = viewer.locator("#overlay-pane").bounding_box()
    viewer.mouse.click(box["x"] + corner["x"], box["y"] + corner["y"])
    viewer.wait_for_function("document.getElementById('inspector').dataset.miss === 'true'")
    assert "No patch here" in viewer.locator("#inspector").inner_text()


def test_single_pane_mode(viewer):
    before = view(viewer, "right")
    viewer.click("#mode-single")
    viewer.wait_for_function("window.milViewer.right.viewport.getContainerSize().x > 900")
    settle(viewer)
    assert not viewer.locator("#slide-wrap").is_visible()
    after = view(viewer, "right")
    assert after["imageZoom"] == pytest.approx(before["imageZoom"], rel=1e-6)  # same magnification
    assert (after["imgX"], after["imgY"]) == pytest.approx(
        (before["imgX"], before["imgY"]), abs=1e-3
    )
    viewer.evaluate("window.milViewer.flushUrl()")
    assert parse_qs(urlsplit(viewer.url).query)["mode"] == ["single"]
    viewer.mouse.move(5, 5)
    settle(viewer)
    shot(viewer, "viewer-single.png")
    # panning in one-pane mode, then back to two panes: both show the new view
    x, y = pane_center(viewer, "overlay")
    viewer.mouse.move(x, y)
    viewer.mouse.down()
    viewer.mouse.move(x + 100, y + 60, steps=5)
    viewer.mouse.up()
    settle(viewer)
    viewer.click("#mode-dual")
    viewer.wait_for_function(
        "window.milViewer.left.viewport.getContainerSize().x > 400 && "
        "window.milViewer.right.viewport.getContainerSize().x < 600"
    )
    viewer.wait_for_function("!window.milViewer.lock.paused")
    settle(viewer)
    assert viewer.locator("#slide-wrap").is_visible()
    assert_same_view(viewer)


def test_url_round_trips_a_view(page, server, browser):
    page.base = server
    open_viewer(page, PER_CLASS_SLIDE)
    assert not page.locator("#class-select").is_disabled()  # clam_mb: attention for every class
    page.select_option("#class-select", "0")
    page.select_option("#cmap", "plasma")
    page.locator("#alpha").fill("0.35")
    page.evaluate("""() => {
      const vp = window.milViewer.right.viewport;
      vp.setRotation(90, true);
      vp.zoomTo(vp.getZoom(true) * 3.7, null, true);
      vp.panBy(new OpenSeadragon.Point(0.07, -0.05), true);
    }""")
    wait_for_heatmap(page, "class=0", "cmap=plasma")
    settle(page)
    page.evaluate("window.milViewer.flushUrl()")
    link = page.url
    query = parse_qs(urlsplit(link).query)
    assert query["cmap"] == ["plasma"] and query["alpha"] == ["0.35"] and query["class"] == ["0"]
    assert query["rot"] == ["90"]
    before = assert_same_view(page)[1]

    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, bypass_csp=True)
    try:
        other = context.new_page()
        other.set_default_timeout(20_000)
        other.goto(link)
        other.wait_for_function(
            "window.milViewer && window.milViewer.ready && window.milViewer.fullyLoaded()"
        )
        settle(other)
        after = assert_same_view(other)[1]
        for key in ("x", "y", "w", "h"):
            assert after[key] == pytest.approx(before[key], abs=1e-4), key
        assert after["rot"] == 90
        assert other.eval_on_selector("#cmap", "el => el.value") == "plasma"
        assert other.eval_on_selector("#alpha", "el => el.value") == "0.35"
        assert other.eval_on_selector("#class-select", "el => el.value") == "0"
        assert other.evaluate("window.milViewer.overlay.item.getOpacity()") == pytest.approx(0.35)
        overlay_url = other.evaluate("window.milViewer.overlay.url")
        assert "cmap=plasma" in overlay_url and "class=0" in overlay_url
        assert other.locator("#overlay-class-name").inner_text() == "normal"
    finally:
        context.close()


def test_link_opens_in_one_pane_mode(page, server):
    page.base = server
    # blur in any word the server takes (meta.choices.blur), in any case
    open_viewer(page, SLIDE, "?x=3000&y=2300&zoom=0.25&mode=single&cmap=hot&blur=On")
    assert page.is_checked("#blur")
    assert not page.locator("#slide-wrap").is_visible()
    assert page.locator("#mode-single").get_attribute("aria-pressed") == "true"
    right = view(page, "right")
    assert right["imageZoom"] == pytest.approx(0.25, rel=1e-6)
    off_x, off_y = page.evaluate("window.milViewer.meta.deepzoom.l0_offset")
    assert (right["imgX"] + off_x, right["imgY"] + off_y) == pytest.approx((3000, 2300), abs=0.01)
    assert "blur=1" in page.evaluate("window.milViewer.overlay.shownUrl")
    page.click("#mode-dual")
    page.wait_for_function("!window.milViewer.lock.paused")
    settle(page)
    _left, right2 = assert_same_view(page)
    assert right2["imageZoom"] == pytest.approx(0.25, rel=1e-6)  # same magnification in two panes


def test_unknown_colormap_in_a_link_falls_back_with_a_message(page, server):
    page.base = server
    open_viewer(page, SLIDE, "?cmap=no_such_map&alpha=2&class=7&zoom=abc")
    assert page.eval_on_selector("#cmap", "el => el.value") == "jet"
    assert "unknown colormap" in page.locator("#cmap-error").inner_text()
    assert page.eval_on_selector("#alpha", "el => el.value") == "0.5"


def test_unreadable_slide_page_says_why(page, server):
    page.goto(f"{server}/slides/not-a-slide")
    status = page.locator("#pane-status")
    assert "cannot be shown" in status.inner_text()


# ---------------------------------------------------------------------------------------------
# the cohort page


def test_cohort_page_sorts_and_filters(page, server):
    page.goto(server + "/")
    rows = page.locator("#cohort tbody tr[data-slide-id]")

    def visible_ids() -> list[str]:
        return page.eval_on_selector_all(
            "#cohort tbody tr[data-slide-id]",
            "rows => rows.filter(r => !r.hidden).map(r => r.dataset.slideId)",
        )

    ids = visible_ids()
    assert len(ids) == 6 and rows.count() == 6
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#cohort img')).every(i => i.complete)"
    )
    shot(page, "cohort.png")
    slide_header = page.locator("#cohort th", has_text="Slide")
    slide_header.click()
    assert visible_ids() == sorted(ids, key=str.lower)
    assert slide_header.get_attribute("aria-sort") == "ascending"
    slide_header.click()
    assert visible_ids() == sorted(ids, key=str.lower, reverse=True)
    page.locator("#cohort th", has_text="Bag size").click()
    sizes = [
        int(v)
        for v in page.eval_on_selector_all(
            "#cohort tbody tr[data-slide-id] td:last-child",
            "tds => tds.map(td => td.dataset.value)",
        )
    ]
    assert sizes == sorted(sizes)
    # filter
    page.fill("#cohort-filter", "pyr")
    assert visible_ids() == ["pyramid"]
    assert page.locator("#cohort-count").inner_text() == "1 of 6 slides"
    page.fill("#cohort-filter", "unreadable")
    unreadable = visible_ids()
    assert "not-a-slide" in unreadable and "pyramid" not in unreadable
    for sid in unreadable:
        assert (
            page.locator(f"tr[data-slide-id='{sid}'] .error").inner_text().startswith("unreadable")
        )
    page.fill("#cohort-filter", "zzz-nothing")
    assert visible_ids() == [] and page.locator("tr.empty-row").is_visible()
    page.fill("#cohort-filter", "")
    assert len(visible_ids()) == 6
    # a row opens the viewer
    page.locator("tr[data-slide-id='pyramid'] td").nth(2).click()
    page.wait_for_url(f"{server}/slides/pyramid")


# ---------------------------------------------------------------------------------------------
# OpenSeadragon from node_modules (no browser needed)


def test_vendor_route_serves_openseadragon_only(client):
    if not OSD_SCRIPT.is_file():
        require_browser()
    r = client.get("/vendor/openseadragon/openseadragon.min.js")
    assert r.status_code == 200 and b"OpenSeadragon" in r.data[:2000]
    assert client.get("/vendor/openseadragon/images/home_rest.png").status_code == 200
    for bad in (
        "../package.json",
        "..%2Fpackage.json",
        "%2e%2e/package.json",
        "/etc/passwd",
        "images/../../../package.json",
        "nope.js",
        "images/",
    ):
        assert (
            client.get(f"/vendor/openseadragon/{bad}", follow_redirects=True).status_code == 404
        ), bad
    page = client.get("/slides/pyramid").data.decode()
    assert "/vendor/openseadragon/openseadragon.min.js?v=" in page
    assert "make install" not in page


def test_missing_node_modules_says_run_make_install(client, monkeypatch, tmp_path):
    from viewer import vendor_routes

    monkeypatch.setattr(vendor_routes, "OSD_BUILD", tmp_path / "absent")
    monkeypatch.setattr(vendor_routes, "OSD_PACKAGE", tmp_path / "absent-package")
    vendor_routes.osd_version.cache_clear()
    try:
        r = client.get("/vendor/openseadragon/openseadragon.min.js")
        assert r.status_code == 503 and b"make install" in r.data and b"Traceback" not in r.data
        page = client.get("/slides/pyramid")
        assert page.status_code == 200 and b"make install" in page.data
    finally:
        vendor_routes.osd_version.cache_clear()


def test_pages_work_under_their_content_security_policy(browser, server):
    """No bypass: the cohort table and the viewer load, draw both panes' tiles and raise no CSP
    violation (polled with page.evaluate, which the policy does not govern)."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    try:
        pg = context.new_page()
        violations: list[str] = []
        pg.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
        )
        pg.on("pageerror", lambda e: violations.append(str(e)))
        response = pg.goto(f"{server}/")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        pg.goto(f"{server}/slides/{SLIDE}")
        deadline = time.monotonic() + 30
        while not pg.evaluate(
            "() => Boolean(window.milViewer && window.milViewer.ready && "
            "window.milViewer.fullyLoaded())"
        ):
            assert time.monotonic() < deadline, "the viewer did not load under its CSP"
            pg.wait_for_timeout(100)
        drawn = pg.evaluate("() => window.milViewer.overlay.firstTileDrawnAt")
        assert drawn is not None
        assert violations == []
    finally:
        context.close()


def test_what_the_slide_page_preloads_it_uses_once(viewer):
    """Each <link rel=preload/modulepreload> of the page names something that exists and that the
    page asks for, and the page does not fetch it a second time (an unmatched preload is)."""
    links = viewer.eval_on_selector_all(
        "link[rel=preload], link[rel=modulepreload]", "ls => ls.map((l) => l.href)"
    )
    assert any("/api/slides/" in u for u in links)  # the metadata, fetched while scripts load
    for url in links:
        assert http_get(url)[0] == 200, url
        assert viewer.recorder.urls.count(url) == 1, url


def test_the_export_menu_exports_what_the_pane_shows(viewer):
    """The links follow the view and the heatmap settings; what they fetch is the shown box."""
    x, y = pane_center(viewer, "overlay")
    viewer.mouse.move(x, y)
    viewer.mouse.wheel(0, -400)  # zoom in: the PNG box must shrink to the view
    settle(viewer)
    viewer.select_option("#cmap", "viridis")
    viewer.wait_for_function("window.milViewer.overlay.url.includes('cmap=viridis')")
    href = viewer.evaluate("document.getElementById('export-view').href")
    query = parse_qs(urlsplit(href).query)
    assert query["cmap"] == ["viridis"] and float(query["alpha"][0]) == pytest.approx(0.5)
    bounds = viewer.evaluate("""() => {
      const v = window.milViewer.right, item = v.world.getItemAt(0);
      const r = item.viewportToImageRectangle(v.viewport.getBounds(true));
      return {x: r.x, y: r.y, w: r.width, h: r.height};
    }""")
    assert int(query["w"][0]) == pytest.approx(bounds["w"], abs=2) and int(
        query["x"][0]
    ) == pytest.approx(max(0, bounds["x"]), abs=2)
    status, body = http_get(href)
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(body))
    assert image.size[0] == int(query["width"][0])
    for link in ("#export-regions", "#export-patches"):
        target = viewer.evaluate(f"document.querySelector('{link}').href")
        assert "cmap=viridis" in target
    viewer.locator("#threshold").fill("0.8")
    viewer.locator("#threshold").dispatch_event("change")
    regions = viewer.evaluate("document.getElementById('export-regions').href")
    assert "threshold=0.8" in regions and viewer.inner_text("#export-threshold") == "0.80"
    status, body = http_get(regions)
    assert (
        status == 200
        and json.loads(body)["features"][0]["properties"]["objectType"] == "annotation"
    )
    status, body = http_get(viewer.evaluate("document.getElementById('export-patches').href"))
    assert status == 200 and body.startswith(b"slide_id,index,minx,miny")
    shot(viewer, "viewer-export.png")


def test_dragging_the_histogram_range_recolours_the_overlay_and_the_readout_is_the_apis(viewer):
    viewer.wait_for_function(
        "document.getElementById('range-readout').dataset.patches !== undefined"
    )
    total = int(viewer.evaluate("document.getElementById('range-readout').dataset.patches"))
    assert total == 98  # every patch: the range starts as the whole scale
    before = canvas_pixels(viewer, "right")
    box = viewer.locator("#histogram").bounding_box()
    y = box["y"] + box["height"] / 2
    viewer.mouse.move(box["x"] + 1, y)
    viewer.mouse.down()
    viewer.mouse.move(box["x"] + 0.8 * box["width"], y, steps=6)
    viewer.mouse.up()
    viewer.wait_for_function("window.milViewer.overlay.url.includes('lo=0.8')")
    viewer.wait_for_function(
        "window.milViewer.overlay.shownUrl === window.milViewer.overlay.url && "
        "window.milViewer.fullyLoaded()"
    )
    settle(viewer)
    lo = viewer.evaluate("window.milViewer.state.lo")
    assert lo == pytest.approx(0.8, abs=0.02)
    viewer.wait_for_function(
        f"Number(document.getElementById('range-readout').dataset.patches) < {total}"
    )
    readout = viewer.evaluate("window.milViewer.histogram.hooks.readout")
    _status, body = http_get(
        f"{viewer.base}/api/slides/{SLIDE}/regions?lo={lo:.3f}&hi=1.000&class=1&norm=percentile"
        "&geojson=0"
    )
    api = json.loads(body)
    assert readout["patches"] == api["patches"] and readout["area_px"] == pytest.approx(
        api["area_px"]
    )
    assert f"{api['patches']} patches" in viewer.inner_text("#range-readout")
    after = canvas_pixels(viewer, "right")

    def coloured(px):
        return (px[..., 3] > 0).mean()

    assert (
        np.abs(after[..., :3].astype(int) - before[..., :3].astype(int)).max() > 40
    )  # patches left the overlay
    assert viewer.evaluate("window.milViewer.overlay.item.getOpacity()") == pytest.approx(0.5)
    viewer.evaluate("window.milViewer.flushUrl()")
    assert "lo=0.8" in viewer.url and "hi=1" in viewer.url
    assert coloured(after) > 0
    shot(viewer, "viewer-histogram.png")


def test_the_mirrored_cursor_marks_the_same_level0_point_in_the_other_pane(viewer):
    """The panes are locked to the same view at the same size, so the point under the pointer in
    one pane lies at the same place in the other: the crosshair must be there, both ways."""
    for source, target in (("slide", "overlay"), ("overlay", "slide")):
        box = viewer.locator(f"#{source}-pane").bounding_box()
        px, py = box["x"] + box["width"] * 0.43, box["y"] + box["height"] * 0.57
        viewer.mouse.move(px, py, steps=3)
        mark = viewer.locator(
            f"#{'overlay' if target == 'overlay' else 'slide'}-wrap .mirror-cursor"
        )
        viewer.wait_for_function(f"!document.querySelector('#{target}-wrap .mirror-cursor').hidden")
        x, y = float(mark.get_attribute("data-x")), float(mark.get_attribute("data-y"))
        assert x == pytest.approx(px - box["x"], abs=2) and y == pytest.approx(
            py - box["y"], abs=2
        ), source
        assert viewer.locator(f"#{source}-wrap .mirror-cursor").is_hidden()
        l0 = viewer.evaluate("window.milViewer.cursor.hooks.l0")
        status, body = http_get(
            f"{viewer.base}/api/slides/{SLIDE}/patch?x={l0['x']:.1f}&y={l0['y']:.1f}&class=1"
        )
        label = viewer.locator(f"#{target}-wrap .mc-label")
        if status == 200:
            score = json.loads(body)["score"]
            viewer.wait_for_function(
                f"document.querySelector('#{target}-wrap .mc-label').textContent.startsWith('{score:.3f}')"
            )
        else:
            viewer.wait_for_function(
                f"document.querySelector('#{target}-wrap .mc-label').textContent === 'no patch'"
            )
        assert label.inner_text()
    shot(viewer, "viewer-cursor.png")
    viewer.mouse.move(5, 5)  # leaving the panes hides it
    viewer.wait_for_function(
        "Array.from(document.querySelectorAll('.mirror-cursor')).every((m) => m.hidden)"
    )


@contextlib.contextmanager
def annotated_viewer(browser, viewer_cohort, folder: Path, writers: dict):
    """A viewer of the test cohort with --annotations `folder` (files written by `writers`: name ->
    function(path)), and a page on it; yields (page, base URL)."""
    folder.mkdir()
    for name, write in writers.items():
        write(folder / name)
    proc, base = start_viewer(
        ["--config", str(viewer_cohort.config), "--annotations", str(folder), "--workers", "1"],
        quiet=True,
    )
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, bypass_csp=True)
    try:
        page = context.new_page()
        page.base = base
        yield page, base
    finally:
        context.close()
        stop_viewer(proc)


def test_annotation_outlines_sit_on_their_vertices_at_two_zooms(browser, viewer_cohort, tmp_path):
    from tests.test_annotations import TUMOR, qupath

    with annotated_viewer(
        browser, viewer_cohort, tmp_path / "annotations", {"CMU-1-Small-Region.geojson": qupath}
    ) as (page, _base):
        open_viewer(page, "CMU-1-Small-Region")
        page.wait_for_function("document.getElementById('localization').dataset.loaded === 'true'")
        assert "Tumor: AUROC" in page.inner_text("#localization")
        # nothing hidden: the Dice is of the server's default region, which the figures name
        assert "Dice ≥ 0.50" in page.inner_text("#localization")
        assert page.get_attribute("#localization", "data-range") == "0.5000,1.0000"
        assert "Tumor" in page.inner_text("#annotations-legend")
        for zoom in (None, 1.8):
            if zoom is not None:
                page.evaluate(f"""() => {{ const v = window.milViewer.right, item = v.world.getItemAt(0);
                    v.viewport.panTo(item.imageToViewportCoordinates(660, 700), true);
                    v.viewport.zoomBy({zoom}, null, true); }}""")
                settle(page)
            for pane, index in (("slide", 0), ("overlay", 1)):
                # where TUMOR's vertices fall on screen, from OpenSeadragon's own transforms
                points = page.evaluate(
                    """([i, pts]) => {
                  const v = [window.milViewer.left, window.milViewer.right][i], item = v.world.getItemAt(0);
                  return pts.map(([x, y]) => { const p = v.viewport.pixelFromPoint(
                      item.imageToViewportCoordinates(x, y), true); return [p.x, p.y]; }); }""",
                    [index, TUMOR],
                )
                pixels = page.evaluate(
                    """(i) => {
                  const c = document.querySelectorAll('.annotation-canvas')[i];
                  return {w: c.width, h: c.height, data: c.toDataURL('image/png')}; }""",
                    index,
                )
                image = np.asarray(
                    Image.open(io.BytesIO(base64.b64decode(pixels["data"].split(",", 1)[1])))
                )
                seen = 0
                for x, y in points:
                    xi, yi = round(x), round(y)
                    if 2 <= xi < pixels["w"] - 2 and 2 <= yi < pixels["h"] - 2:
                        patch = image[yi - 2 : yi + 3, xi - 2 : xi + 3]
                        hit = (patch[..., 3] > 0) & (patch[..., 0] > 150) & (patch[..., 1] < 60)
                        assert hit.any(), (pane, zoom, x, y)
                        seen += 1
                assert seen >= 2, (pane, zoom)
        page.evaluate("document.getElementById('annotations-toggle').click()")
        blank = page.evaluate(
            "document.querySelectorAll('.annotation-canvas')[1].toDataURL('image/png')"
        )
        assert (
            np.asarray(Image.open(io.BytesIO(base64.b64decode(blank.split(",", 1)[1]))))[..., 3]
            == 0
        ).all()
        page.evaluate("document.getElementById('annotations-toggle').click()")
        shot(page, "viewer-annotations.png")


def test_cohort_table_shows_localization_columns_with_the_cohort_mean(
    browser, viewer_cohort, tmp_path
):
    from tests.test_annotations import asap, qupath

    with annotated_viewer(
        browser,
        viewer_cohort,
        tmp_path / "annotations",
        {"CMU-1-Small-Region.geojson": qupath, "pyramid.xml": asap},
    ) as (page, base):
        page.goto(base + "/")
        page.wait_for_function(
            "document.getElementById('cohort').dataset.localizationLoaded === 'true'"
        )
        api = json.loads(http_get(base + "/api/localization", timeout=30)[1])
        assert {s["slide_id"] for s in api["slides"]} == {"CMU-1-Small-Region", "pyramid"}
        heads = page.eval_on_selector_all(
            "#cohort th.localization-head", "ths => ths.map(t => t.textContent)"
        )
        assert heads == [
            f"{f} · {c}"
            for c in ("Stroma", "Tumor")
            for f in ("AUROC", "Top-10 in", "Top-5 % in", "Dice")
        ]
        first = page.eval_on_selector_all("#cohort thead th", "ths => ths.length") - len(heads)
        for entry in api["slides"]:
            cells = page.eval_on_selector_all(
                f"#cohort tr[data-slide-id='{entry['slide_id']}'] td.localization-cell",
                "tds => tds.map(td => [td.dataset.value, td.textContent])",
            )
            tumor = {c["class"]: c for c in entry["classes"]}["Tumor"]
            value, text = cells[4]  # AUROC of Tumor
            assert float(value) == pytest.approx(tumor["auroc"]) and text == f"{tumor['auroc']:.2f}"
            assert float(cells[7][0]) == pytest.approx(tumor["dice"])
        means = page.eval_on_selector_all(
            "#cohort tfoot td", "tds => tds.map(td => td.dataset.value)"
        )
        assert float(means[4]) == pytest.approx(api["mean"]["Tumor"]["auroc"])
        assert float(means[4]) == pytest.approx(
            np.mean(
                [{c["class"]: c for c in s["classes"]}["Tumor"]["auroc"] for s in api["slides"]]
            )
        )
        assert "Cohort mean (2 annotated slides)" in page.inner_text("#cohort tfoot")
        # sorting by a localisation column: annotated slides in order, the rest after them
        page.locator("#cohort th.localization-head", has_text="AUROC · Tumor").click()
        order = page.eval_on_selector_all(
            "#cohort tbody tr[data-slide-id]",
            f"rows => rows.map(r => r.cells[{first + 4}].dataset.value)",
        )
        known = [float(v) for v in order if v]
        assert len(known) == 2 and known == sorted(known) and all(v == "" for v in order[2:])
        shot(page, "cohort-localization.png")
