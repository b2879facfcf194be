"""Reading a config: YAML -> checked sections (schema) -> CLAM meanings mapped (clam) -> `Config`.

Everything is checked before any slide is touched, so a typo costs seconds, not a night of SLURM
time.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from scoremap.defaults import HEATMAP_ARGUMENTS, SCORING_ARGUMENTS
from scoring.config.clam import model_widths
from scoring.config.model import Config, HeatmapConfig
from scoring.config.schema import (
    REQUIRED_SECTIONS,
    SCHEMA,
    check_explain,
    check_samples,
    check_section,
    where,
)
from scoring.errors import ConfigError


def parse_config(raw: Any, source: Path) -> Config:
    """Validate a loaded YAML document; raise ConfigError naming file, key and expected form."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a YAML mapping with sections "
            f"{', '.join(SCHEMA)}, got {type(raw).__name__}"
        )
    unknown = [str(s) for s in raw if s not in SCHEMA]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(SCHEMA), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"{where(source, unknown[0])}: unknown section{hint}; expected one of: "
            f"{', '.join(SCHEMA)}"
        )
    for section in REQUIRED_SECTIONS:
        if raw.get(section) is None:
            raise ConfigError(f"{where(source, section)}: missing required section")
    sec = {
        name: check_section(source, name, raw.get(name), schema)
        for name, schema in SCHEMA.items()
        if name != "sample_arguments"
    }
    samples_raw = raw.get("sample_arguments")
    if samples_raw is not None and not isinstance(samples_raw, dict):
        raise ConfigError(
            f"{where(source, 'sample_arguments')} must be a mapping with key 'samples'"
        )
    samples_section = check_section(
        source, "sample_arguments", samples_raw, SCHEMA["sample_arguments"]
    )
    samples = check_samples(source, samples_section["samples"])

    exp, data, model, heat, patching = (
        sec["exp_arguments"],
        sec["data_arguments"],
        sec["model_arguments"],
        sec["heatmap_arguments"],
        sec["patching_arguments"],
    )
    n_exp, n_model = exp["n_classes"], model["n_classes"]
    if n_exp is not None and n_model is not None and n_exp != n_model:
        raise ConfigError(
            f"{source}: exp_arguments.n_classes ({n_exp}) and model_arguments.n_classes "
            f"({n_model}) disagree"
        )
    if isinstance(data["data_dir"], dict) and not data["data_dir_key"]:
        raise ConfigError(
            f"{where(source, 'data_arguments.data_dir_key')}: missing; a mapping data_dir needs "
            "the name of the process-list column that picks a folder for each slide"
        )
    if isinstance(data["data_dir"], dict) and data["process_list"] is None:
        raise ConfigError(
            f"{where(source, 'data_arguments.process_list')}: missing; a mapping data_dir needs "
            f"a process list with a '{data['data_dir_key']}' column"
        )

    model_type = model["model_type"]
    in_dim, options = model_widths(source, model)

    explain = (
        None
        if raw.get("explain_arguments") is None
        else check_explain(source, model_type, sec["explain_arguments"])
    )
    heatmap = HeatmapConfig(**{k: heat[k] for k in HEATMAP_ARGUMENTS})
    return Config(
        source=source,
        save_exp_code=exp["save_exp_code"],
        raw_save_dir=exp["raw_save_dir"],
        production_save_dir=exp["production_save_dir"],
        class_names=exp["class_names"],
        data_dir=data["data_dir"],
        data_dir_key=data["data_dir_key"],
        slide_ext=data["slide_ext"],
        features_dir=data["features_dir"],
        process_list=data["process_list"],
        label_dict=data["label_dict"],
        patch_size_level0=data["patch_size_level0"],
        annotations_dir=data["annotations_dir"],
        fallback_patch_size=patching["patch_size"],
        fallback_patch_level=(
            SCORING_ARGUMENTS["patch_level"]
            if patching["patch_level"] is None
            else patching["patch_level"]
        ),
        ckpt_path=model["ckpt_path"],
        model_type=model_type,
        n_classes=n_model if n_model is not None else n_exp,
        in_dim=in_dim,
        model_options=options,
        heatmap=heatmap,
        samples=samples,
        explain=explain,
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
