"""What a validated config is: `Config` (paths as written, relative ones taken from the working
directory), its `heatmap_arguments` (`HeatmapConfig`) and sample specs (`SampleSpec`)."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scoremap.defaults import HEATMAP_ARGUMENTS, SCORING_ARGUMENTS


@dataclass(frozen=True)
class SampleSpec:
    """One `sample_arguments.samples` entry; `mode` is canonical (`reverse_topk` -> `bottomk`)."""

    name: str
    mode: str
    k: int  # defaults: scoremap.defaults.SAMPLE_ARGUMENTS, given by the schema
    seed: int
    score_start: float | None = None  # quantile in [0, 1] for range_sample
    score_end: float | None = None


@dataclass(frozen=True)
class ExplainConfig:
    """The validated `explain_arguments` (defaults: `scoremap.defaults.EXPLAIN_ARGUMENTS`)."""

    methods: tuple[str, ...]
    ig_steps: int
    faithfulness: bool
    target: str | int  # "predicted", a class name or a class index
    occlusion_block: str | int


#: The validated `heatmap_arguments`: one field per key of `scoremap.defaults.HEATMAP_ARGUMENTS`,
#: which also gives every default (a section that leaves a key out gets it from there).
HeatmapConfig = namedtuple(
    "HeatmapConfig", tuple(HEATMAP_ARGUMENTS), defaults=tuple(HEATMAP_ARGUMENTS.values())
)


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
    slide_ext: str  # default: scoremap.defaults.SCORING_ARGUMENTS, given by the schema
    data_dir_key: str | None = None
    features_dir: Path | None = None
    process_list: Path | None = None
    label_dict: dict[str, int] | None = None
    n_classes: int | None = None
    in_dim: int | None = None
    class_names: list[str] | None = None
    patch_size_level0: int | None = None
    annotations_dir: Path | None = None  # ground truth for the viewer: {slide_id}.geojson / .xml
    fallback_patch_size: int | None = None  # CLAM patching_arguments.patch_size at patch_level
    fallback_patch_level: int = SCORING_ARGUMENTS["patch_level"]
    model_options: dict[str, Any] = field(default_factory=dict)
    heatmap: HeatmapConfig = field(default_factory=HeatmapConfig)
    samples: tuple[SampleSpec, ...] = ()
    explain: ExplainConfig | None = None  # None: no `explain_arguments`, no explanation maps

    @property
    def exp_raw_dir(self) -> Path:
        return self.raw_save_dir / self.save_exp_code

    @property
    def exp_production_dir(self) -> Path:
        return self.production_save_dir / self.save_exp_code

    def resolved_class_names(self, n_classes: int) -> list[str]:
        """Names for class indices: class_names, else label_dict inverted, else "0", "1", ..."""
        if self.class_names:
            return list(self.class_names) + [
                str(i) for i in range(len(self.class_names), n_classes)
            ]
        names = [str(i) for i in range(n_classes)]
        if self.label_dict:
            for label, index in self.label_dict.items():
                if 0 <= index < n_classes:
                    names[index] = label
        return names
