"""The config's schema: which sections and keys exist, their types, defaults and CLAM spellings,
and the checks that turn a YAML mapping into validated sections (or one ConfigError naming the
file, the dotted key and the expected form).

CLAM's heatmap config is part of the schema: its spellings of our keys (`drop_out`, `attn_dim`)
are `Key(target=...)`, its extraction-only keys `Key(ignored=...)` (warned once, no effect).
`MODEL_OPTIONS` (the model's hyper-parameters) is also the rule of `scoring.models.build_model`
and `load_model`, and `HEATMAP_SCHEMA` that of `scoring.static.render_static`: the same value is
refused with the same message whichever way it comes in.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoremap.defaults import (
    EXPLAIN_ARGUMENTS,
    HEATMAP_ARGUMENTS,
    SAMPLE_ARGUMENTS,
    SCORING_ARGUMENTS,
)
from scoring.config.model import ExplainConfig, SampleSpec
from scoring.config.values import (
    SAMPLE_MODES,
    _alpha,
    _bool,
    _cmap,
    _custom_downsample,
    _dir_or_map,
    _dropout,
    _ext,
    _ignored,
    _int,
    _label_dict,
    _methods,
    _model_type,
    _names,
    _occlusion_block,
    _opt_bool,
    _opt_float,
    _opt_int,
    _opt_path,
    _opt_pos_int,
    _opt_str,
    _path,
    _pos_int,
    _rate,
    _slide_ext,
    _str,
    _target,
    _thresh,
    _vis_level,
)
from scoring.errors import ConfigError
from scoring.models import MODEL_TYPES

log = logging.getLogger("scoring.config")


@dataclass(frozen=True)
class Key:
    check: Callable[[Any], Any]
    default: Any = None
    required: bool = False
    target: str | None = None  # canonical name when the key is CLAM's spelling of ours
    ignored: str | None = None  # why a recognised key has no effect here (warned once)


def _defaulted(
    defaults: Mapping[str, Any], checks: dict[str, Callable[[Any], Any]]
) -> dict[str, Key]:
    """A section whose every key takes its default from one `scoremap.defaults` mapping."""
    return {key: Key(check, defaults[key]) for key, check in checks.items()}


_EXTRACTION_ONLY = "feature-extraction setting, has no effect on scoring"

#: The models' hyper-parameters (those a model type does not use are ignored by it), with CLAM's
#: and MIL-Lab's spellings; unset ones keep the model's own default.
MODEL_OPTIONS: dict[str, Key] = {
    "embed_dim": Key(_opt_pos_int),
    "attention_dim": Key(_opt_pos_int),
    "attn_dim": Key(_opt_pos_int, target="attention_dim"),
    "num_heads": Key(_opt_pos_int),
    "heads": Key(_opt_pos_int, target="num_heads"),
    "num_layers": Key(_opt_pos_int),
    "gate": Key(_opt_bool),
    "model_size": Key(_opt_str),
    "dropout": Key(_dropout),
    "drop_out": Key(_dropout, target="dropout"),
    "num_landmarks": Key(_opt_pos_int),
    "pinv_iterations": Key(_opt_pos_int),
    "dim_head": Key(_opt_pos_int),
    "residual_conv_kernel": Key(_opt_pos_int),
    "dropout_v": Key(_rate),
    "fcc_channels": Key(_opt_pos_int),
    "ungated_dropout_layer": Key(_opt_bool),
    "fc_dropout_layer": Key(_opt_bool),
}

#: `heatmap_arguments`: each key's checker; its default is `scoremap.defaults.HEATMAP_ARGUMENTS`.
HEATMAP_SCHEMA: dict[str, Key] = _defaulted(
    HEATMAP_ARGUMENTS,
    {
        "vis_level": _vis_level,
        "alpha": _alpha,
        "cmap": _cmap,
        "convert_to_percentiles": _bool,
        "blur": _bool,
        "save_orig": _bool,
        "save_ext": _ext,
        "custom_downsample": _custom_downsample,
        "blank_canvas": _bool,
        "binarize": _bool,
        "binary_thresh": _thresh,
        "use_roi": _opt_bool,
    },
)

SCHEMA: dict[str, dict[str, Key]] = {
    "exp_arguments": {
        "n_classes": Key(_opt_pos_int),
        "save_exp_code": Key(_str, required=True),
        "raw_save_dir": Key(_path, required=True),
        "production_save_dir": Key(_path, required=True),
        "batch_size": Key(_opt_pos_int),  # CLAM's; accepted, no effect: bags are scored whole
        "class_names": Key(_names),
    },
    "data_arguments": {
        "data_dir": Key(_dir_or_map, required=True),
        "data_dir_key": Key(_opt_str),
        "slide_ext": Key(_slide_ext, SCORING_ARGUMENTS["slide_ext"]),
        "features_dir": Key(_opt_path),
        "process_list": Key(_opt_path),
        "label_dict": Key(_label_dict),
        "patch_size_level0": Key(_opt_pos_int),
        "annotations_dir": Key(_opt_path),
        "preset": Key(_ignored, ignored="CLAM segmentation preset, " + _EXTRACTION_ONLY),
    },
    "patching_arguments": {
        "patch_size": Key(_opt_pos_int),
        "patch_level": Key(_opt_int, SCORING_ARGUMENTS["patch_level"]),
        "overlap": Key(_ignored, ignored=_EXTRACTION_ONLY),
        "custom_downsample": Key(_ignored, ignored=_EXTRACTION_ONLY),
    },
    "encoder_arguments": {
        "model_name": Key(
            _ignored, ignored=_EXTRACTION_ONLY + " (features are read from features_dir)"
        ),
        "target_img_size": Key(_ignored, ignored=_EXTRACTION_ONLY),
    },
    "model_arguments": {
        "ckpt_path": Key(_path, required=True),
        "model_type": Key(_model_type, required=True),
        "n_classes": Key(_opt_pos_int),
        "in_dim": Key(_opt_pos_int),
        **MODEL_OPTIONS,
        "initiate_fn": Key(_ignored, ignored="CLAM's loader name; models are chosen by model_type"),
    },
    "heatmap_arguments": {
        **HEATMAP_SCHEMA,
        "use_ref_scores": Key(
            _ignored, ignored="percentiles are always taken over the slide's own patches"
        ),
        "use_center_shift": Key(
            _ignored, ignored="CLAM patch-in-contour test, " + _EXTRACTION_ONLY
        ),
        "calc_heatmap": Key(_ignored, ignored="heatmaps are always computed from the blockmap"),
    },
    "sample_arguments": {
        "samples": Key(lambda v: v, []),
    },
    "explain_arguments": _defaulted(
        EXPLAIN_ARGUMENTS,
        {
            "methods": _methods,
            "ig_steps": _pos_int,
            "faithfulness": _bool,
            "target": _target,
            "occlusion_block": _occlusion_block,
        },
    ),
}

#: The explanation methods a model type can give where not all of them: TransMIL's head after its
#: transformer is not a linear read-out of patches (no exact contribution), and its occlusion needs
#: one forward pass per patch (not built yet).
EXPLAIN_SUPPORT: dict[str, tuple[str, ...]] = {"transmil": ("integrated_gradients",)}

REQUIRED_SECTIONS = ("exp_arguments", "data_arguments", "model_arguments")

SAMPLE_SCHEMA: dict[str, Key] = {
    "name": Key(_str, required=True),
    "sample": Key(_bool, SAMPLE_ARGUMENTS["sample"]),
    "k": Key(_pos_int, SAMPLE_ARGUMENTS["k"]),
    "mode": Key(_str, required=True),
    "seed": Key(_int, SAMPLE_ARGUMENTS["seed"]),
    "score_start": Key(_opt_float),
    "score_end": Key(_opt_float),
}

_EXPECTED_FORM = {
    "n_classes": "the number of classes, e.g. 2",
    "save_exp_code": "a name for this experiment, e.g. MY_EXPERIMENT",
    "raw_save_dir": "a folder for blockmaps, e.g. heatmaps/heatmap_raw_results",
    "production_save_dir": "a folder for heatmaps, e.g. heatmaps/heatmap_production_results",
    "data_dir": "a folder of slides, or a mapping {key: folder} with data_dir_key",
    "ckpt_path": "the path of the trained checkpoint (.pt, .bin or .safetensors)",
    "model_type": "one of " + ", ".join(MODEL_TYPES),
    "name": "a folder name for these patches, e.g. topk_high_attention",
    "mode": "one of " + ", ".join(SAMPLE_MODES),
}


def where(source: Path | None, key: str) -> str:
    """How a message names a key: with its file where it came from one."""
    return key if source is None else f"{source}: {key}"


def checked(label: str, spec: Key, value: Any) -> Any:
    """`value` through the key's checker; ConfigError "<label> must be <form>, got <value>"."""
    try:
        return spec.check(value)
    except ValueError as exc:
        raise ConfigError(
            f"{label} must be {exc}, got {value!r} ({type(value).__name__})"
        ) from None


def check_section(
    source: Path | None, section: str, raw: Any, schema: dict[str, Key]
) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where(source, section)} must be a mapping of keys, got {type(raw).__name__}"
        )
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        spec = schema.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{where(source, section + '.' + key)}: unknown key{hint}; "
                f"expected one of: {', '.join(k for k in schema)}"
            )
        if spec.ignored is not None:
            log.warning("%s: %s.%s is ignored: %s", source, section, key, spec.ignored)
            continue
        value_checked = checked(where(source, section + "." + key), spec, value)
        target = spec.target or key
        if (
            target in out
            and out[target] is not None
            and value_checked is not None
            and out[target] != value_checked
        ):
            raise ConfigError(
                f"{where(source, section)}: {key} and {target} disagree ({value!r} vs {out[target]!r})"
            )
        if value_checked is not None or target not in out:
            out[target] = value_checked
    for key, spec in schema.items():
        if spec.required and out.get(key) is None:
            raise ConfigError(
                f"{where(source, section + '.' + key)}: missing required key; "
                f"expected {_EXPECTED_FORM.get(key, 'a value')}"
            )
        if spec.target is None and spec.ignored is None and key not in out:
            out[key] = spec.default
    return out


def check_model_type(model_type: Any) -> str:
    """`model_arguments.model_type`: one of `scoring.models.MODEL_TYPES` (any case)."""
    return checked(
        "model_arguments.model_type", SCHEMA["model_arguments"]["model_type"], model_type
    )


def check_model_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Model options as `build_model` / `load_model` take them, by the rules of model_arguments:
    canonical names (`attn_dim` -> `attention_dim`), checked values, unset ones left out."""
    found = check_section(None, "model_arguments", dict(options), MODEL_OPTIONS)
    return {k: v for k, v in found.items() if v is not None}


def check_heatmap_arguments(values: Mapping[str, Any]) -> None:
    """ConfigError naming `heatmap_arguments.<key>` for the first value its key refuses."""
    for key, spec in HEATMAP_SCHEMA.items():
        if key in values:
            checked(f"heatmap_arguments.{key}", spec, values[key])


def check_samples(source: Path, raw: Any) -> tuple[SampleSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(
            f"{where(source, 'sample_arguments.samples')} must be a list of sample specs, "
            f"got {type(raw).__name__}"
        )
    specs: list[SampleSpec] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        entry = f"sample_arguments.samples[{i}]"
        values = check_section(source, entry, item, SAMPLE_SCHEMA)
        mode = values["mode"]
        if mode not in SAMPLE_MODES:
            raise ConfigError(
                f"{where(source, entry + '.mode')} must be one of {', '.join(SAMPLE_MODES)}, "
                f"got {mode!r}"
            )
        if not values["sample"]:
            continue
        start, end = values["score_start"], values["score_end"]
        if mode == "range_sample":
            for key, v in (("score_start", start), ("score_end", end)):
                if v is None or not 0.0 <= v <= 1.0:
                    raise ConfigError(
                        f"{where(source, entry + '.' + key)} must be a quantile between 0 and 1 "
                        f"for range_sample, got {v!r}"
                    )
            if start > end:
                raise ConfigError(
                    f"{where(source, entry)}: score_start ({start}) is above score_end ({end})"
                )
        if values["name"] in names:
            raise ConfigError(
                f"{where(source, entry + '.name')}: {values['name']!r} is used twice; "
                "each sample needs its own folder name"
            )
        names.add(values["name"])
        specs.append(
            SampleSpec(
                name=values["name"],
                mode="bottomk" if mode == "reverse_topk" else mode,
                k=values["k"],
                seed=values["seed"],
                score_start=start,
                score_end=end,
            )
        )
    return tuple(specs)


def check_explain(source: Path | None, model_type: str, values: Mapping[str, Any]) -> ExplainConfig:
    """The checked `explain_arguments` section; ConfigError where the model cannot give a method,
    naming the methods that work for it."""
    check_explain_methods(source, model_type, values["methods"])
    return ExplainConfig(
        methods=tuple(values["methods"]),
        ig_steps=int(values["ig_steps"]),
        faithfulness=bool(values["faithfulness"]),
        target=values["target"],
        occlusion_block=values["occlusion_block"],
    )


def check_explain_methods(source: Path | None, model_type: str, methods: tuple[str, ...]) -> None:
    """ConfigError naming the first method the model type cannot give, and those it can."""
    supported = EXPLAIN_SUPPORT.get(model_type)
    for method in methods:
        if supported is not None and method not in supported:
            raise ConfigError(
                f"{where(source, 'explain_arguments.methods')}: {method} is not available for "
                f"{model_type}; methods that work for {model_type}: {', '.join(supported)}"
            )
