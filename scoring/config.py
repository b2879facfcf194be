"""The heatmap config: the guide's YAML schema, plus CLAM's own heatmap config mapped onto it.

Everything is checked before any slide is touched, so a typo costs seconds, not a night of SLURM
time. Each problem is reported with the file, the dotted key and the form that was expected.
"""
from __future__ import annotations

import difflib
import logging
import math
import os
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from scoremap.colormap import check_colormap
from scoremap.defaults import HEATMAP_ARGUMENTS
from scoremap.errors import UnknownColormap
from scoring.errors import ConfigError
from scoring.models import MODEL_TYPES  # torch-free import: the registry loads models lazily

log = logging.getLogger(__name__)

SAMPLE_MODES = ("topk", "bottomk", "reverse_topk", "range_sample")
SAVE_EXTS = ("png", "jpg", "jpeg", "tiff", "tif")


# ---------------------------------------------------------------------------------------------
# Typed values: each checker returns the converted value or raises ValueError(expected form).

def _str(v: Any) -> str:
    if isinstance(v, str) and v.strip():
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)  # YAML reads `save_exp_code: 2024` as an int; a name is still meant
    raise ValueError("a non-empty string")


def _opt_str(v: Any) -> str | None:
    return None if v is None else _str(v)


def _int(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise ValueError("an integer")


def _opt_int(v: Any) -> int | None:
    return None if v is None else _int(v)


def _pos_int(v: Any) -> int:
    i = _int(v)
    if i < 1:
        raise ValueError("a positive integer")
    return i


def _opt_pos_int(v: Any) -> int | None:
    return None if v is None else _pos_int(v)


def _float(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    raise ValueError("a number")


def _opt_float(v: Any) -> float | None:
    return None if v is None else _float(v)


def _unit(v: Any) -> float:
    f = _float(v)
    if not 0.0 <= f <= 1.0:
        raise ValueError("a number between 0 and 1")
    return f


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if v in (0, 1) and not isinstance(v, float):
        return bool(v)
    raise ValueError("true or false")


def _dropout(v: Any) -> float | None:
    """A rate, or older CLAM configs' `drop_out: true` (CLAM then used 0.25). No effect at inference."""
    if v is None:
        return None
    if isinstance(v, bool):
        return 0.25 if v else 0.0
    f = _float(v)
    if not 0.0 <= f < 1.0:
        raise ValueError("a dropout rate in [0, 1) or true/false")
    return f


def _opt_bool(v: Any) -> bool | None:
    return None if v is None else _bool(v)


def _path(v: Any) -> Path:
    if isinstance(v, str) and v.strip():
        return Path(os.path.expanduser(v))
    raise ValueError("a path (string)")


def _opt_path(v: Any) -> Path | None:
    return None if v is None else _path(v)


def _dir_or_map(v: Any) -> Path | dict[str, Path]:
    if isinstance(v, dict):
        if not v:
            raise ValueError("a folder path or a non-empty mapping {key: folder}")
        return {str(k): _path(p) for k, p in v.items()}
    try:
        return _path(v)
    except ValueError:
        raise ValueError("a folder path or a mapping {key: folder}") from None


def _label_dict(v: Any) -> dict[str, int] | None:
    if v is None:
        return None
    if not isinstance(v, dict) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v.values()):
        raise ValueError("a mapping {label name: class index}")
    return {str(k): int(i) for k, i in v.items()}


def _names(v: Any) -> list[str] | None:
    if v is None:
        return None
    if not isinstance(v, list) or not v:
        raise ValueError("a list of class names")
    return [_str(x) for x in v]


def _ext(v: Any) -> str:
    s = _str(v).lower().lstrip(".")
    if s not in SAVE_EXTS:
        raise ValueError("one of " + ", ".join(SAVE_EXTS))
    return s


def _slide_ext(v: Any) -> str:
    s = _str(v)
    return s if s.startswith(".") else "." + s


def _cmap(v: Any) -> str:
    try:
        return check_colormap(_str(v))
    except UnknownColormap as exc:
        raise ValueError(str(exc).replace("expected ", "")) from None


def _vis_level(v: Any) -> int:
    i = _int(v)
    if i < -1:
        raise ValueError("-1 (closest to 32x downsample) or a pyramid level >= 0")
    return i


def _custom_downsample(v: Any) -> float:
    f = _float(v)
    if f < 1:
        raise ValueError("a number >= 1")
    return f


def _thresh(v: Any) -> float:
    f = _float(v)
    if f > 1:
        raise ValueError("a number in (0, 1), or -1 for 1/N")
    return f


def _model_type(v: Any) -> str:
    name = _str(v).lower()
    if name not in MODEL_TYPES:
        raise ValueError("one of " + ", ".join(MODEL_TYPES))
    return name


def _ignored(v: Any) -> Any:
    return v


@dataclass(frozen=True)
class _Key:
    check: Callable[[Any], Any]
    default: Any = None
    required: bool = False
    target: str | None = None  # canonical name when the key is CLAM's spelling of ours
    ignored: str | None = None  # why a recognised key has no effect here (warned once)


_EXTRACTION_ONLY = "feature-extraction setting, has no effect on scoring"
_HEAT = HEATMAP_ARGUMENTS

SCHEMA: dict[str, dict[str, _Key]] = {
    "exp_arguments": {
        "n_classes": _Key(_opt_pos_int),
        "save_exp_code": _Key(_str, required=True),
        "raw_save_dir": _Key(_path, required=True),
        "production_save_dir": _Key(_path, required=True),
        "batch_size": _Key(_pos_int, 256),
        "class_names": _Key(_names),
    },
    "data_arguments": {
        "data_dir": _Key(_dir_or_map, required=True),
        "data_dir_key": _Key(_opt_str),
        "slide_ext": _Key(_slide_ext, ".svs"),
        "features_dir": _Key(_opt_path),
        "process_list": _Key(_opt_path),
        "label_dict": _Key(_label_dict),
        "patch_size_level0": _Key(_opt_pos_int),
        "preset": _Key(_ignored, ignored="CLAM segmentation preset, " + _EXTRACTION_ONLY),
    },
    "patching_arguments": {
        "patch_size": _Key(_opt_pos_int),
        "patch_level": _Key(_opt_int, 0),
        "overlap": _Key(_ignored, ignored=_EXTRACTION_ONLY),
        "custom_downsample": _Key(_ignored, ignored=_EXTRACTION_ONLY),
    },
    "encoder_arguments": {
        "model_name": _Key(_ignored, ignored=_EXTRACTION_ONLY + " (features are read from features_dir)"),
        "target_img_size": _Key(_ignored, ignored=_EXTRACTION_ONLY),
    },
    "model_arguments": {
        "ckpt_path": _Key(_path, required=True),
        "model_type": _Key(_model_type, required=True),
        "n_classes": _Key(_opt_pos_int),
        "in_dim": _Key(_opt_pos_int),
        "embed_dim": _Key(_opt_pos_int),
        "attention_dim": _Key(_opt_pos_int),
        "attn_dim": _Key(_opt_pos_int, target="attention_dim"),
        "num_heads": _Key(_opt_pos_int),
        "num_layers": _Key(_opt_pos_int),
        "gate": _Key(_opt_bool),
        "model_size": _Key(_opt_str),
        "dropout": _Key(_dropout),
        "drop_out": _Key(_dropout, target="dropout"),
        "initiate_fn": _Key(_ignored, ignored="CLAM's loader name; models are chosen by model_type"),
    },
    "heatmap_arguments": {
        "vis_level": _Key(_vis_level, _HEAT["vis_level"]),
        "alpha": _Key(_unit, _HEAT["alpha"]),
        "cmap": _Key(_cmap, _HEAT["cmap"]),
        "convert_to_percentiles": _Key(_bool, _HEAT["convert_to_percentiles"]),
        "blur": _Key(_bool, _HEAT["blur"]),
        "save_orig": _Key(_bool, _HEAT["save_orig"]),
        "save_ext": _Key(_ext, _HEAT["save_ext"]),
        "custom_downsample": _Key(_custom_downsample, _HEAT["custom_downsample"]),
        "blank_canvas": _Key(_bool, _HEAT["blank_canvas"]),
        "binarize": _Key(_bool, _HEAT["binarize"]),
        "binary_thresh": _Key(_thresh, _HEAT["binary_thresh"]),
        "use_roi": _Key(_opt_bool, _HEAT["use_roi"]),
        "use_ref_scores": _Key(_ignored, ignored="percentiles are always taken over the slide's own patches"),
        "use_center_shift": _Key(_ignored, ignored="CLAM patch-in-contour test, " + _EXTRACTION_ONLY),
        "calc_heatmap": _Key(_ignored, ignored="heatmaps are always computed from the blockmap"),
    },
    "sample_arguments": {
        "samples": _Key(lambda v: v, []),
    },
}

REQUIRED_SECTIONS = ("exp_arguments", "data_arguments", "model_arguments")

SAMPLE_SCHEMA: dict[str, _Key] = {
    "name": _Key(_str, required=True),
    "sample": _Key(_bool, True),
    "k": _Key(_pos_int, 15),
    "mode": _Key(_str, required=True),
    "seed": _Key(_int, 1),
    "score_start": _Key(_opt_float),
    "score_end": _Key(_opt_float),
}

_EXPECTED_FORM = {
    "n_classes": "the number of classes, e.g. 2",
    "save_exp_code": "a name for this experiment, e.g. MY_EXPERIMENT",
    "raw_save_dir": "a folder for blockmaps, e.g. heatmaps/heatmap_raw_results",
    "production_save_dir": "a folder for heatmaps, e.g. heatmaps/heatmap_production_results",
    "data_dir": "a folder of slides, or a mapping {key: folder} with data_dir_key",
    "ckpt_path": "the path of the trained checkpoint (.pt, .bin or .safetensors)",
    "model_type": "one of abmil, clam_sb, clam_mb, transmil, dsmil",
    "name": "a folder name for these patches, e.g. topk_high_attention",
    "mode": "one of " + ", ".join(SAMPLE_MODES),
}


# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleSpec:
    """One `sample_arguments.samples` entry; `mode` is canonical (`reverse_topk` -> `bottomk`)."""

    name: str
    mode: str
    k: int = 15
    seed: int = 1
    score_start: float | None = None  # quantile in [0, 1] for range_sample
    score_end: float | None = None


#: The validated `heatmap_arguments`: one field per key of `scoremap.defaults.HEATMAP_ARGUMENTS`,
#: which also gives every default (a section that leaves a key out gets it from there).
HeatmapConfig = namedtuple("HeatmapConfig", tuple(HEATMAP_ARGUMENTS), defaults=tuple(HEATMAP_ARGUMENTS.values()))


@dataclass(frozen=True)
class Config:
    """A validated config; paths are as written (relative ones are taken from the working dir)."""

    source: Path
    save_exp_code: str
    raw_save_dir: Path
    production_save_dir: Path
    data_dir: Path | dict[str, Path]
    ckpt_path: Path
    model_type: str
    slide_ext: str = ".svs"
    data_dir_key: str | None = None
    features_dir: Path | None = None
    process_list: Path | None = None
    label_dict: dict[str, int] | None = None
    n_classes: int | None = None
    in_dim: int | None = None
    class_names: list[str] | None = None
    batch_size: int = 256
    patch_size_level0: int | None = None
    fallback_patch_size: int | None = None  # CLAM patching_arguments.patch_size at patch_level
    fallback_patch_level: int = 0
    model_options: dict[str, Any] = field(default_factory=dict)
    heatmap: HeatmapConfig = field(default_factory=HeatmapConfig)
    samples: tuple[SampleSpec, ...] = ()

    @property
    def exp_raw_dir(self) -> Path:
        return self.raw_save_dir / self.save_exp_code

    @property
    def exp_production_dir(self) -> Path:
        return self.production_save_dir / self.save_exp_code

    def class_name(self, index: int) -> str:
        names = self.resolved_class_names(index + 1)
        return names[index]

    def resolved_class_names(self, n_classes: int) -> list[str]:
        """Names for class indices: class_names, else label_dict inverted, else "0", "1", ..."""
        if self.class_names:
            return list(self.class_names) + [str(i) for i in range(len(self.class_names), n_classes)]
        names = [str(i) for i in range(n_classes)]
        if self.label_dict:
            for label, index in self.label_dict.items():
                if 0 <= index < n_classes:
                    names[index] = label
        return names


def _where(source: Path, key: str) -> str:
    return f"{source}: {key}"


def _check_section(source: Path, section: str, raw: Any, schema: dict[str, _Key]) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{_where(source, section)} must be a mapping of keys, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        spec = schema.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{_where(source, section + '.' + key)}: unknown key{hint}; "
                f"expected one of: {', '.join(k for k in schema)}")
        if spec.ignored is not None:
            log.warning("%s: %s.%s is ignored: %s", source, section, key, spec.ignored)
            continue
        try:
            checked = spec.check(value)
        except ValueError as exc:
            raise ConfigError(
                f"{_where(source, section + '.' + key)} must be {exc}, got {value!r} "
                f"({type(value).__name__})") from None
        target = spec.target or key
        if target in out and out[target] is not None and checked is not None and out[target] != checked:
            raise ConfigError(f"{_where(source, section)}: {key} and {target} disagree ({value!r} vs {out[target]!r})")
        if checked is not None or target not in out:
            out[target] = checked
    for key, spec in schema.items():
        if spec.required and out.get(key) is None:
            raise ConfigError(
                f"{_where(source, section + '.' + key)}: missing required key; "
                f"expected {_EXPECTED_FORM.get(key, 'a value')}")
        if spec.target is None and spec.ignored is None and key not in out:
            out[key] = spec.default
    return out


def _check_samples(source: Path, raw: Any) -> tuple[SampleSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{_where(source, 'sample_arguments.samples')} must be a list of sample specs, "
                          f"got {type(raw).__name__}")
    specs: list[SampleSpec] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        where = f"sample_arguments.samples[{i}]"
        values = _check_section(source, where, item, SAMPLE_SCHEMA)
        mode = values["mode"]
        if mode not in SAMPLE_MODES:
            raise ConfigError(f"{_where(source, where + '.mode')} must be one of {', '.join(SAMPLE_MODES)}, "
                              f"got {mode!r}")
        if not values["sample"]:
            continue
        start, end = values["score_start"], values["score_end"]
        if mode == "range_sample":
            for key, v in (("score_start", start), ("score_end", end)):
                if v is None or not 0.0 <= v <= 1.0:
                    raise ConfigError(f"{_where(source, where + '.' + key)} must be a quantile between 0 and 1 "
                                      f"for range_sample, got {v!r}")
            if start > end:
                raise ConfigError(f"{_where(source, where)}: score_start ({start}) is above score_end ({end})")
        if values["name"] in names:
            raise ConfigError(f"{_where(source, where + '.name')}: {values['name']!r} is used twice; "
                              "each sample needs its own folder name")
        names.add(values["name"])
        specs.append(SampleSpec(name=values["name"], mode="bottomk" if mode == "reverse_topk" else mode,
                                k=values["k"], seed=values["seed"], score_start=start, score_end=end))
    return tuple(specs)


def parse_config(raw: Any, source: Path) -> Config:
    """Validate a loaded YAML document; raise ConfigError naming file, key and expected form."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping with sections "
                          f"{', '.join(SCHEMA)}, got {type(raw).__name__}")
    unknown = [str(s) for s in raw if s not in SCHEMA]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(SCHEMA), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{_where(source, unknown[0])}: unknown section{hint}; expected one of: "
                          f"{', '.join(SCHEMA)}")
    for section in REQUIRED_SECTIONS:
        if raw.get(section) is None:
            raise ConfigError(f"{_where(source, section)}: missing required section")
    sec = {name: _check_section(source, name, raw.get(name), schema) for name, schema in SCHEMA.items()
           if name != "sample_arguments"}
    samples_raw = raw.get("sample_arguments")
    if samples_raw is not None and not isinstance(samples_raw, dict):
        raise ConfigError(f"{_where(source, 'sample_arguments')} must be a mapping with key 'samples'")
    samples_section = _check_section(source, "sample_arguments", samples_raw, SCHEMA["sample_arguments"])
    samples = _check_samples(source, samples_section["samples"])

    exp, data, model, heat, patching = (sec["exp_arguments"], sec["data_arguments"], sec["model_arguments"],
                                        sec["heatmap_arguments"], sec["patching_arguments"])
    n_exp, n_model = exp["n_classes"], model["n_classes"]
    if n_exp is not None and n_model is not None and n_exp != n_model:
        raise ConfigError(f"{source}: exp_arguments.n_classes ({n_exp}) and model_arguments.n_classes "
                          f"({n_model}) disagree")
    if isinstance(data["data_dir"], dict) and not data["data_dir_key"]:
        raise ConfigError(f"{_where(source, 'data_arguments.data_dir_key')}: missing; a mapping data_dir needs "
                          "the name of the process-list column that picks a folder for each slide")
    if isinstance(data["data_dir"], dict) and data["process_list"] is None:
        raise ConfigError(f"{_where(source, 'data_arguments.process_list')}: missing; a mapping data_dir needs "
                          f"a process list with a '{data['data_dir_key']}' column")

    model_type = model["model_type"]
    in_dim = model["in_dim"]
    embed_dim = model["embed_dim"]
    if model_type.startswith("clam") and embed_dim is not None:
        # CLAM's configs call the input feature width `embed_dim`; MIL-Lab's call the hidden width so.
        if in_dim is not None and in_dim != embed_dim:
            raise ConfigError(f"{source}: model_arguments.embed_dim ({embed_dim}) is CLAM's input feature width "
                              f"and disagrees with in_dim ({in_dim})")
        in_dim, embed_dim = embed_dim, None
    options = {k: model[k] for k in ("attention_dim", "num_heads", "num_layers", "gate", "model_size", "dropout")
               if model.get(k) is not None}
    if embed_dim is not None:
        options["embed_dim"] = embed_dim

    heatmap = HeatmapConfig(**{k: heat[k] for k in HEATMAP_ARGUMENTS})
    return Config(
        source=source,
        save_exp_code=exp["save_exp_code"],
        raw_save_dir=exp["raw_save_dir"],
        production_save_dir=exp["production_save_dir"],
        batch_size=exp["batch_size"],
        class_names=exp["class_names"],
        data_dir=data["data_dir"],
        data_dir_key=data["data_dir_key"],
        slide_ext=data["slide_ext"],
        features_dir=data["features_dir"],
        process_list=data["process_list"],
        label_dict=data["label_dict"],
        patch_size_level0=data["patch_size_level0"],
        fallback_patch_size=patching["patch_size"],
        fallback_patch_level=patching["patch_level"] or 0,
        ckpt_path=model["ckpt_path"],
        model_type=model_type,
        n_classes=n_model if n_model is not None else n_exp,
        in_dim=in_dim,
        model_options=options,
        heatmap=heatmap,
        samples=samples,
    )


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a YAML config file."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"{source}: config file not found")
    try:
        with open(source, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse_config(raw, source)
