"""One rule per chosen value: a class, a normalisation, a threshold, an opacity, a model option is
refused with the same words by the core (scoremap.params), the viewer (a 400), the export command
(exit 2, nothing written) and the scoring config; and a default changed in scoremap.defaults is
what the export command and the overlay tiles use."""

from __future__ import annotations

import copy
import gc
from pathlib import Path
from types import MappingProxyType

import pytest

from exports.cli import main as export_main
from exports.cli import parse_args
from scoremap import defaults
from scoremap.blockmap import read_blockmap
from scoremap.errors import ParameterError
from scoremap.params import resolve_class
from scoring.config import parse_config
from scoring.errors import ConfigError
from tests.test_config import GUIDE, _parse, _with
from viewer.app import create_app
from viewer.geometry import DeepZoomGeometry

CMU = "CMU-1-Small-Region"
NOT_A_CLASS = f"must be a class of slide {CMU}: 0 (normal), 1 (tumor), got '9'"
ONLY_PREDICTED = (
    "must be the predicted class of slide pyramid, 1 (tumor): abmil stores attention for that "
    "class only, got '0'"
)


def _tile(client, slide_id: str, query: str = ""):
    """The overlay tile of the finest Deep Zoom level whose one tile holds the whole slide."""
    meta = client.get(f"/api/slides/{slide_id}").get_json()
    geo = DeepZoomGeometry.for_slide(
        meta["dimensions"], [lv["dimensions"] for lv in meta["levels"]], {}
    )
    level = max(
        z for z in range(geo.level_count) if max(meta["dimensions"]) <= 254 * geo.l0_downsample(z)
    )
    return client.get(f"/overlay/{slide_id}_files/{level}/0_0.png{query}")


def _export(viewer_cohort, *args: str) -> int:
    return export_main(
        ["--config", str(viewer_cohort.config), "--to", "csv", *args, "--no-progress"]
    )


def _written(viewer_cohort) -> set:
    """What the export folder holds (other tests export this cohort too)."""
    root = viewer_cohort.root / "production" / "EXP" / "exports"
    return {(p, p.stat().st_mtime_ns) for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.parametrize(
    "slide_id, ref, message", [(CMU, "9", NOT_A_CLASS), ("pyramid", "0", ONLY_PREDICTED)]
)
def test_a_class_the_slide_lacks_reads_the_same_everywhere(
    client, viewer_cohort, capsys, slide_id, ref, message
):
    bm = read_blockmap(viewer_cohort.scored[slide_id].blockmap)
    with pytest.raises(ParameterError) as core:
        resolve_class(bm, ref)
    assert str(core.value) == f"class {message}"
    for url in (
        f"/api/slides/{slide_id}/histogram?class={ref}",
        f"/api/slides/{slide_id}/export/patches.csv?class={ref}",
    ):
        r = client.get(url)
        assert (r.status_code, r.get_json()["error"]) == (400, f"class {message}"), url
    r = _tile(client, slide_id, f"?class={ref}")
    assert (r.status_code, r.get_json()["error"]) == (400, f"class {message}")
    before = _written(viewer_cohort)
    assert _export(viewer_cohort, "--slides", slide_id, "--class", ref) == 2
    assert f"error: --class {message}" in capsys.readouterr().err
    assert _written(viewer_cohort) == before
    # a class every scored slide lacks is wrong for the whole run: nothing written either
    assert _export(viewer_cohort, "--class", ref) == 2
    assert _written(viewer_cohort) == before


def test_a_class_is_named_by_its_name_or_its_index(client, viewer_cohort):
    by_name = _tile(client, CMU, "?class=normal")
    by_index = _tile(client, CMU, "?class=0")
    assert by_name.status_code == by_index.status_code == 200
    assert by_name.data == by_index.data != _tile(client, CMU, "?class=1").data
    bm = read_blockmap(viewer_cohort.scored[CMU].blockmap)
    assert [resolve_class(bm, r) for r in ("tumor", "1", 1, None)] == [1, 1, 1, bm.pred]
    with pytest.raises(ParameterError):
        resolve_class(bm, "١")  # an Arabic-Indic digit is no index


@pytest.mark.parametrize(
    "query, option, message",
    [
        (
            "threshold=1.5",
            ["--threshold", "1.5"],
            "must be a normalised score between 0 and 1, got 1.5",
        ),
        ("norm=zscore", ["--norm", "zscore"], "must be one of percentile, raw, got 'zscore'"),
    ],
)
def test_a_bad_norm_or_threshold_reads_the_same_in_the_viewer_and_the_command(
    client, viewer_cohort, capsys, query, option, message
):
    name = query.split("=")[0]
    r = _tile(client, CMU, f"?{query}")
    assert (r.status_code, r.get_json()["error"]) == (400, f"{name} {message}")
    before = _written(viewer_cohort)
    assert _export(viewer_cohort, *option) == 2
    assert f"error: {option[0]} {message}" in capsys.readouterr().err
    assert _written(viewer_cohort) == before


def test_a_bad_opacity_reads_the_same_in_the_viewer_the_config_and_the_renderer(
    client, cmu_slide, tmp_path
):
    from openslide import OpenSlide

    from scoring.static import HeatmapParams, render_static

    expected = "must be a number between 0 and 1 (0: slide only, 1: heatmap only), got 2"
    r = client.get(f"/api/slides/{CMU}/export/view.png?alpha=2")
    assert (r.status_code, r.get_json()["error"]) == (400, f"alpha {expected}.0")
    with pytest.raises(ConfigError) as config:
        _parse(_with(GUIDE, "heatmap_arguments", "alpha", 2))
    assert f"heatmap_arguments.alpha {expected} (int)" in str(config.value)
    with OpenSlide(cmu_slide) as slide, pytest.raises(ConfigError) as rendered:
        render_static(slide, [[0, 0]], [1.0], 256, HeatmapParams(alpha=2), tmp_path / "h.png", None)
    assert str(rendered.value) == f"heatmap_arguments.alpha {expected} (int)"


def test_model_options_have_one_rule_for_the_config_and_the_models():
    from scoring.models import build_model

    doc = copy.deepcopy(GUIDE)
    doc["model_arguments"]["drop_out"] = 3
    with pytest.raises(ConfigError) as config:
        parse_config(doc, Path("my_config.yaml"))
    with pytest.raises(ConfigError) as built:
        build_model("abmil", in_dim=8, n_classes=2, drop_out=3)
    assert str(config.value) == f"my_config.yaml: {built.value}"
    assert str(built.value) == (
        "model_arguments.drop_out must be a dropout rate in [0, 1) or true/false, got 3 (int)"
    )
    with pytest.raises(ConfigError, match=r"model_arguments.model_type must be one of abmil, "):
        build_model("resnet", in_dim=8, n_classes=2)
    with pytest.raises(ConfigError, match=r"model_arguments.heads must be a positive integer"):
        build_model("transmil", in_dim=8, n_classes=2, heads=0)
    # the aliases mean the same whichever way they come in
    assert build_model("abmil", in_dim=8, n_classes=2, attn_dim=6).config()["attention_dim"] == 6
    doc = copy.deepcopy(GUIDE)
    del doc["model_arguments"]["attention_dim"]
    doc["model_arguments"].update({"model_type": "abmil", "attn_dim": 6, "drop_out": True})
    options = parse_config(doc, Path("my_config.yaml")).model_options
    assert (options["attention_dim"], options["dropout"]) == (6, 0.25)


def _writable(mapping: MappingProxyType) -> dict:
    """The dict behind one of scoremap.defaults' read-only mappings (to change a default)."""
    (inner,) = [r for r in gc.get_referents(mapping) if isinstance(r, dict)]
    return inner


def test_a_default_changed_in_scoremap_defaults_reaches_the_command_and_the_tiles(
    monkeypatch, viewer_cohort
):
    monkeypatch.setitem(_writable(defaults.OVERLAY), "cmap", "viridis")
    monkeypatch.setitem(_writable(defaults.OVERLAY), "norm", "raw")
    monkeypatch.setitem(_writable(defaults.OVERLAY), "threshold", 0.6)
    monkeypatch.setitem(_writable(defaults.VIEWER_SETTINGS), "DEFAULT_CMAP", "viridis")
    args = parse_args(["--config", "c.yaml", "--to", "csv"])
    assert (args.cmap, args.norm) == ("viridis", "raw")
    client = create_app({"SCORING_CONFIG": str(viewer_cohort.config)}).test_client()
    plain = _tile(client, CMU)
    assert plain.status_code == 200
    assert plain.data == _tile(client, CMU, "?cmap=viridis&threshold=0.6").data
    assert plain.data != _tile(client, CMU, "?cmap=viridis&threshold=0").data
