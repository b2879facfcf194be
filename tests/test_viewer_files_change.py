"""The viewer follows its files while it serves, on a real gunicorn server (2 workers): broken
blockmaps, a rescore, a slide deleted and restored, a slide swapped for a symlink out of the roots.
No answer is a 500, and none names a server folder."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
from urllib.parse import quote, urlsplit

import h5py
import numpy as np
import pytest
from PIL import Image

from scoremap.blockmap import blockmap_path
from scoremap.normalize import normalize_scores
from scoremap.raster import ScoreSource, Window, window_indices
from tests.viewer_fixtures import PATCH, write_scored
from viewer.background import start_viewer, stop_viewer
from viewer.geometry import DeepZoomGeometry

BROKEN = {  # slide id: (attribute or dataset, value)
    "bad-names": ("class_names", "not json ["),
    "bad-pred": ("pred", "two"),
    "zero-patch": ("patch_size_level0", 0),
    "huge-patch": ("patch_size_level0", 200000),
    "string-scores": ("attention_scores", np.array([b"x"] * 4)),
    "group-scores": ("attention_scores", "<group>"),
}
COORDS = np.array([[100, 100], [356, 100], [100, 356], [356, 356]], np.int32)


def _break(path, key, value):
    with h5py.File(path, "r+") as fh:
        if key in fh:
            del fh[key]
            if isinstance(value, str) and value == "<group>":
                fh.create_group(key)
            else:
                fh[key] = value
        else:
            fh.attrs[key] = value


class Server:
    def __init__(self, base: str):
        self.port = urlsplit(base).port

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", quote(path, safe="/?=&%"), headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def json(self, path: str) -> tuple[int, dict]:
        status, _, body = self.get(path)
        return status, json.loads(body)


@pytest.fixture()
def cohort(tmp_path, cmu_slide):
    slides, raw = tmp_path / "slides", tmp_path / "raw" / "EXP"
    slides.mkdir()
    (tmp_path / "outside").mkdir()
    for sid in ("good", "other", *BROKEN):
        slide = shutil.copy(cmu_slide, slides / f"{sid}.svs")
        write_scored(
            raw, sid, "tumor", slide, COORDS, seed=len(sid), per_class=False, model_type="abmil"
        )
    for sid, (key, value) in BROKEN.items():
        _break(blockmap_path(raw, "tumor", sid), key, value)
    proc, base = start_viewer(
        ["--results", str(raw), "--slides", str(slides), "--workers", "2", "--threads", "2"],
        quiet=True,
    )
    try:
        yield tmp_path, raw, slides, Server(base)
    finally:
        stop_viewer(proc)


def _no_paths(server: Server, root, *paths: str) -> None:
    for path in paths:
        status, _, body = server.get(path)
        assert status < 500, (path, status)
        assert str(root) not in body.decode(errors="replace"), path


def test_broken_blockmaps_leave_the_rest_of_the_cohort_served(cohort):
    root, raw, _slides, server = cohort
    status, body = server.json("/api/slides")
    assert status == 200 and [s["id"] for s in body["slides"]] == ["good", "other"]
    for sid in BROKEN:
        for path in (
            f"/api/slides/{sid}",
            f"/overlay/{sid}_files/11/0_0.png",
            f"/slides/{sid}/patch/0.jpeg",
        ):
            status, _, _ = server.get(path)
            assert status == 404, (path, status)
    assert server.get("/overlay/good_files/12/0_0.png")[0] == 200
    # a blockmap that breaks while serving: 404 with the reason, no 500, no path
    _break(blockmap_path(raw, "tumor", "other"), "class_names", "{oops")
    status, body = server.json("/overlay/other_files/12/0_0.png")
    assert status == 404 and "class_names" in body["error"] and str(root) not in body["error"]
    _no_paths(
        server,
        root,
        "/api/slides",
        "/api/slides/other",
        "/api/slides/nope",
        "/slides/other",
        "/slide/other.dzi",
        "/",
    )


def _tile_indices(server: Server, sid: str, level: int) -> np.ndarray:
    status, headers, body = server.get(f"/overlay/{sid}_files/{level}/0_0.png")
    assert status == 200
    return np.asarray(Image.open(io.BytesIO(body))), headers["etag"]


def _expected_tile(meta: dict, level: int, coords: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The palette indices of overlay tile (level, 0, 0) for these scores (percentile, default)."""
    geo = DeepZoomGeometry.for_slide(
        meta["dimensions"], [lv["dimensions"] for lv in meta["levels"]], {}
    )
    box = geo.tile_box(level, 0, 0)
    values = normalize_scores(scores, "percentile").astype(np.float32)
    return window_indices(
        ScoreSource(coords.astype(np.int64), values, PATCH),
        Window(geo.l0_window(), 1, box.z_h, box.z_w, box.z_y, box.z_x),
    )


def test_a_rescored_blockmap_is_served_fresh_by_every_worker(cohort):
    _root, raw, slides, server = cohort
    meta = server.json("/api/slides/good")[1]
    level = meta["deepzoom"]["level_count"] - 1
    before, etag = _tile_indices(server, "good", level)
    for _ in range(6):  # both workers cache the old scores
        assert _tile_indices(server, "good", level)[1] == etag
    # create_heatmaps.py --overwrite writes a new file and renames it over the old one
    new_coords = np.array([[100, 100], [612, 100]], np.int32)
    _, scores, _ = write_scored(
        raw,
        "good",
        "tumor",
        slides / "good.svs",
        new_coords,
        seed=99,
        per_class=False,
        model_type="abmil",
    )
    want = _expected_tile(meta, level, new_coords, scores)
    for _ in range(6):  # whichever worker answers
        got, new_etag = _tile_indices(server, "good", level)
        assert new_etag != etag and np.array_equal(got, want)
        assert server.get(f"/overlay/good_files/{level}/0_0.png", {"If-None-Match": etag})[0] == 200
    assert server.json("/api/slides/good")[1]["bag_size"] == 2
    listed = {s["id"]: s for s in server.json("/api/slides")[1]["slides"]}
    assert listed["good"]["bag_size"] == 2
    assert not np.array_equal(before, got)


def test_a_blockmap_replaced_with_the_same_size_and_mtime_is_new_to_the_cache_and_the_etag(cohort):
    """Another scoring of the same bag copied over the old one with its times kept (`cp -p`,
    `rsync -t`, a restore): size and mtime are the old file's, only the inode is new. The cached
    scores and the ETag follow the same file identity, so every worker serves the new scores and
    a browser holding the old tile gets them too, never a 304."""
    root, raw, slides, server = cohort
    path = blockmap_path(raw, "tumor", "good")
    meta = server.json("/api/slides/good")[1]
    level = meta["deepzoom"]["level_count"] - 1
    url = f"/overlay/good_files/{level}/0_0.png"
    before, etag = _tile_indices(server, "good", level)
    for _ in range(6):  # both workers cache the old scores
        assert _tile_indices(server, "good", level)[1] == etag
    old = path.stat()
    coords = COORDS[::-1].copy()  # the same scores on other patches: the same file size
    staged, scores, _ = write_scored(
        root / "staged",
        "good",
        "tumor",
        slides / "good.svs",
        coords,
        seed=len("good"),
        per_class=False,
        model_type="abmil",
    )
    os.utime(staged, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(staged, path)
    now = path.stat()
    assert (now.st_size, now.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert now.st_ino != old.st_ino
    want = _expected_tile(meta, level, coords, scores)
    assert not np.array_equal(want, before)
    for _ in range(6):  # whichever worker answers
        got, new_etag = _tile_indices(server, "good", level)
        assert new_etag != etag and np.array_equal(got, want)
        assert server.get(url, {"If-None-Match": etag})[0] == 200


def test_a_deleted_slide_comes_back_and_a_swapped_in_symlink_is_refused(cohort):
    root, _raw, slides, server = cohort
    slide = slides / "good.svs"
    kept = root / "kept.svs"
    assert server.get("/slide/good_files/8/0_0.jpeg")[0] == 200
    shutil.move(slide, kept)
    for _ in range(4):
        status, _, body = server.get("/slide/good_files/8/0_0.jpeg")
        assert status == 404 and str(root) not in body.decode()
    assert server.json("/api/slides")[1]["slides"][0]["readable"] is False
    shutil.move(kept, slide)  # restored: served again without a restart, by every worker
    for _ in range(4):
        assert server.get("/slide/good_files/8/0_0.jpeg")[0] == 200
    assert server.json("/api/slides")[1]["slides"][0]["readable"] is True
    # replaced by a symlink to a copy outside the slide folders: refused at once
    outside = shutil.copy(slide, root / "outside" / "secret.svs")
    slide.unlink()
    os.symlink(outside, slide)
    for path in (
        "/slide/good_files/8/0_0.jpeg",
        "/slides/good/thumbnail.jpeg",
        "/slides/good/patch/0.jpeg",
    ):
        for _ in range(3):
            status, _, body = server.get(path)
            assert status == 403, (path, status)
            assert "outside" in json.loads(body)["error"] and str(root) not in body.decode()
