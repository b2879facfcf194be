"""Config validation: every mistake stops the run with file, key and expected form."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import yaml

from scoremap.checkout import REPO_ROOT as REPO
from scoring.config import load_config, parse_config
from scoring.errors import ConfigError

GUIDE = {
    "exp_arguments": {
        "n_classes": 2,
        "save_exp_code": "EXP",
        "raw_save_dir": "raw",
        "production_save_dir": "prod",
        "batch_size": 256,
    },
    "data_arguments": {
        "data_dir": "slides",
        "slide_ext": ".svs",
        "features_dir": "feats",
        "process_list": None,
    },
    "model_arguments": {
        "ckpt_path": "ckpt.pt",
        "model_type": "abmil",
        "n_classes": 2,
        "in_dim": 1024,
        "attention_dim": 256,
        "dropout": 0.25,
    },
    "heatmap_arguments": {
        "vis_level": -1,
        "alpha": 0.4,
        "cmap": "jet",
        "convert_to_percentiles": True,
        "blur": False,
        "save_orig": True,
        "save_ext": "png",
    },
    "sample_arguments": {
        "samples": [
            {"name": "high_attention", "sample": True, "k": 15, "mode": "topk", "seed": 1},
            {"name": "low_attention", "sample": True, "k": 10, "mode": "bottomk", "seed": 1},
        ]
    },
}

# CLAM's own heatmaps/configs/config_template.yaml, as its users have it.
CLAM = {
    "exp_arguments": {
        "n_classes": 2,
        "save_exp_code": "HEATMAP_OUTPUT",
        "raw_save_dir": "raw",
        "production_save_dir": "prod",
        "batch_size": 256,
    },
    "data_arguments": {
        "data_dir": {"a": "/slides/a", "b": "/slides/b"},
        "data_dir_key": "source",
        "process_list": "list.csv",
        "preset": "presets/bwh_biopsy.csv",
        "slide_ext": ".tiff",
        "label_dict": {"LUAD": 0, "LSCC": 1},
    },
    "patching_arguments": {
        "patch_size": 256,
        "overlap": 0.5,
        "patch_level": 0,
        "custom_downsample": 1,
    },
    "encoder_arguments": {"model_name": "uni_v1", "target_img_size": 224},
    "model_arguments": {
        "ckpt_path": "s_1_checkpoint.pt",
        "model_type": "clam_sb",
        "initiate_fn": "initiate_model",
        "model_size": "big",
        "drop_out": 0.35,
        "embed_dim": 1024,
    },
    "heatmap_arguments": {
        "vis_level": -1,
        "alpha": 0.4,
        "blank_canvas": False,
        "save_orig": True,
        "save_ext": "jpg",
        "use_ref_scores": False,
        "blur": False,
        "use_center_shift": True,
        "use_roi": False,
        "calc_heatmap": True,
        "binarize": False,
        "binary_thresh": -1,
        "custom_downsample": 1,
        "cmap": "jet",
    },
    "sample_arguments": {
        "samples": [
            {"name": "topk_high_attention", "sample": True, "seed": 1, "k": 10, "mode": "topk"},
            {"name": "reverse", "sample": True, "seed": 1, "k": 5, "mode": "reverse_topk"},
            {
                "name": "band",
                "sample": True,
                "seed": 1,
                "k": 5,
                "mode": "range_sample",
                "score_start": 0.45,
                "score_end": 0.55,
            },
        ]
    },
}


def _parse(doc):
    return parse_config(doc, Path("my_config.yaml"))


def _with(doc, section, key, value):
    doc = copy.deepcopy(doc)
    if value is _DELETE:
        del doc[section][key]
    else:
        doc[section][key] = value
    return doc


_DELETE = object()


def test_guide_schema_parses_with_its_values():
    cfg = _parse(GUIDE)
    assert cfg.exp_raw_dir == Path("raw/EXP") and cfg.exp_production_dir == Path("prod/EXP")
    assert cfg.model_type == "abmil" and cfg.in_dim == 1024 and cfg.n_classes == 2
    assert cfg.model_options == {"attention_dim": 256, "dropout": 0.25}
    assert cfg.heatmap.cmap == "jet" and cfg.heatmap.alpha == 0.4 and cfg.heatmap.save_ext == "png"
    assert [(s.name, s.mode, s.k) for s in cfg.samples] == [
        ("high_attention", "topk", 15),
        ("low_attention", "bottomk", 10),
    ]


def test_clam_config_is_mapped_and_extraction_keys_warned_once_each(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = _parse(CLAM)
    # CLAM's embed_dim is the input width; drop_out is dropout; reverse_topk is bottomk.
    assert cfg.in_dim == 1024 and "embed_dim" not in cfg.model_options
    assert cfg.model_options == {"model_size": "big", "dropout": 0.35}
    assert (
        cfg.data_dir == {"a": Path("/slides/a"), "b": Path("/slides/b")}
        and cfg.data_dir_key == "source"
    )
    assert cfg.fallback_patch_size == 256 and cfg.fallback_patch_level == 0
    assert [s.mode for s in cfg.samples] == ["topk", "bottomk", "range_sample"]
    assert cfg.samples[2].score_start == 0.45
    assert cfg.resolved_class_names(2) == ["LUAD", "LSCC"]
    warned = [r.getMessage() for r in caplog.records]
    for key in (
        "data_arguments.preset",
        "encoder_arguments.model_name",
        "model_arguments.initiate_fn",
        "heatmap_arguments.use_center_shift",
        "patching_arguments.overlap",
    ):
        assert sum(key in w for w in warned) == 1, key


@pytest.mark.parametrize(
    "section,key,value,expect",
    [
        (
            "heatmap_arguments",
            "cmapp",
            "jet",
            ["heatmap_arguments.cmapp", "unknown key", "did you mean 'cmap'"],
        ),
        ("heatmap_arguments", "alpha", "high", ["heatmap_arguments.alpha", "a number", "'high'"]),
        ("heatmap_arguments", "alpha", 1.5, ["heatmap_arguments.alpha", "between 0 and 1"]),
        ("heatmap_arguments", "cmap", "virdis", ["heatmap_arguments.cmap", "colormap", "viridis"]),
        ("heatmap_arguments", "blur", "yes", ["heatmap_arguments.blur", "true or false"]),
        ("heatmap_arguments", "save_ext", "bmp", ["heatmap_arguments.save_ext", "png"]),
        ("heatmap_arguments", "vis_level", -3, ["heatmap_arguments.vis_level", "-1"]),
        (
            "exp_arguments",
            "save_exp_code",
            _DELETE,
            ["exp_arguments.save_exp_code", "missing required key"],
        ),
        ("exp_arguments", "n_classes", "two", ["exp_arguments.n_classes", "integer"]),
        (
            "model_arguments",
            "model_type",
            "attmil",
            ["model_arguments.model_type", "abmil, clam_sb"],
        ),
        (
            "model_arguments",
            "ckpt_path",
            _DELETE,
            ["model_arguments.ckpt_path", "missing required key", "checkpoint"],
        ),
        (
            "data_arguments",
            "data_dir",
            3.5,
            ["data_arguments.data_dir", "folder path or a mapping"],
        ),
        ("model_arguments", "n_classes", 3, ["n_classes", "disagree"]),
    ],
)
def test_bad_config_names_file_key_and_expected_form(section, key, value, expect):
    with pytest.raises(ConfigError) as err:
        _parse(_with(GUIDE, section, key, value))
    message = str(err.value)
    assert message.startswith("my_config.yaml")
    for part in expect:
        assert part in message, (part, message)


def test_unknown_section_and_bad_sample_are_named():
    doc = copy.deepcopy(GUIDE)
    doc["heatmap_argument"] = doc.pop("heatmap_arguments")
    with pytest.raises(
        ConfigError, match=r"heatmap_argument: unknown section \(did you mean 'heatmap_arguments'"
    ):
        _parse(doc)
    doc = copy.deepcopy(GUIDE)
    doc["sample_arguments"]["samples"][1]["mode"] = "top"
    with pytest.raises(ConfigError, match=r"samples\[1\]\.mode must be one of topk, bottomk"):
        _parse(doc)
    doc["sample_arguments"]["samples"][1] = {"name": "band", "mode": "range_sample", "k": 3}
    with pytest.raises(ConfigError, match=r"samples\[1\]\.score_start must be a quantile"):
        _parse(doc)
    doc["sample_arguments"]["samples"][1] = {"name": "x", "mode": "topk", "kk": 3}
    with pytest.raises(ConfigError, match=r"samples\[1\]\.kk: unknown key \(did you mean 'k'\?\)"):
        _parse(doc)


def test_mapping_data_dir_needs_its_key_column():
    doc = _with(GUIDE, "data_arguments", "data_dir", {"a": "/x"})
    with pytest.raises(ConfigError, match="data_dir_key"):
        _parse(doc)


def test_load_config_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("exp_arguments: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(bad)


def test_shipped_template_is_valid():
    cfg = load_config(REPO / "heatmaps" / "configs" / "config_template.yaml")
    assert cfg.model_type == "abmil" and len(cfg.samples) == 2


def test_yaml_roundtrip_of_guide_example(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GUIDE))
    assert load_config(path).save_exp_code == "EXP"


def test_older_clam_boolean_drop_out_is_accepted():
    assert _parse(_with(CLAM, "model_arguments", "drop_out", True)).model_options["dropout"] == 0.25
    assert _parse(_with(CLAM, "model_arguments", "drop_out", False)).model_options["dropout"] == 0.0
    with pytest.raises(ConfigError, match=r"model_arguments.drop_out must be a dropout rate"):
        _parse(_with(CLAM, "model_arguments", "drop_out", 3))
