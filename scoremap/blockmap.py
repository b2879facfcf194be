"""The blockmap file: per-patch attention and coords, self-describing enough for the viewer.

CLAM's blockmap holds only `attention_scores` and `coords`; ours keeps those two datasets exactly
(so CLAM-era scripts still read it) and adds the attributes a viewer needs to colour a slide
without the config that produced it. This module is the one place that knows the layout; it is
shared by scoring (writer) and the viewer and exports (readers), and imports no torch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from scoremap.atomic import atomic_output
from scoremap.errors import BlockmapError

FORMAT_VERSION = 1

ATTENTION_DEFINITIONS = {
    "abmil": "gated-attention logits before softmax",
    "clam_sb": "attention logits before softmax (CLAM A_raw)",
    "clam_mb": "attention logits before softmax of the predicted class's branch (CLAM A_raw)",
    "transmil": "dot product of each patch token with the class token after the first transformer block",
    "dsmil": "softmax attention of each patch to the predicted class's critical instance",
}


@dataclass(frozen=True)
class Blockmap:
    """What one scored slide is: scores, where they lie, and what produced them."""

    slide_id: str
    slide_path: str
    label: str
    model_type: str
    class_names: list[str]
    pred: int
    probs: np.ndarray  # (C,)
    logits: np.ndarray  # (C,)
    l0_patch: int
    attention: np.ndarray  # (N,) float32, predicted class
    l0_coords: np.ndarray  # (N, 2) int32
    attention_per_class: np.ndarray | None = None  # (N, C) float32
    extra: dict[str, str] = field(default_factory=dict)  # provenance: checkpoint, features, coords

    @property
    def bag_size(self) -> int:
        return int(len(self.attention))

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def scores_for_class(self, class_index: int | None) -> np.ndarray:
        """The attention used to colour class `class_index` (None: the predicted class)."""
        if class_index is None or class_index == self.pred:
            return self.attention
        if self.attention_per_class is None:
            raise BlockmapError(f"{self.model_type} has a single attention branch; only the predicted class "
                                f"({self.pred}) has attention")
        if not 0 <= class_index < self.attention_per_class.shape[1]:
            raise BlockmapError(f"class {class_index} out of range 0..{self.attention_per_class.shape[1] - 1}")
        return self.attention_per_class[:, class_index]


def write_blockmap(path: str | os.PathLike, bm: Blockmap) -> None:
    """Write atomically: the viewer and reruns treat an existing blockmap as a finished slide."""
    n = bm.bag_size
    if bm.l0_coords.shape != (n, 2):
        raise BlockmapError(f"coords shape {bm.l0_coords.shape} does not match {n} scores")
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("attention_scores", data=np.asarray(bm.attention, np.float32).reshape(n, 1))
            fh.create_dataset("coords", data=np.asarray(bm.l0_coords, np.int32))
            if bm.attention_per_class is not None:
                fh.create_dataset("attention_scores_per_class", data=np.asarray(bm.attention_per_class, np.float32))
            a = fh.attrs
            a["format_version"] = FORMAT_VERSION
            a["slide_id"] = bm.slide_id
            a["slide_path"] = bm.slide_path
            a["label"] = bm.label
            a["model_type"] = bm.model_type
            a["attention_definition"] = ATTENTION_DEFINITIONS.get(bm.model_type, "")
            a["class_names"] = json.dumps(bm.class_names)
            a["n_classes"] = bm.n_classes
            a["pred"] = int(bm.pred)
            a["pred_name"] = bm.class_names[bm.pred]
            a["probs"] = np.asarray(bm.probs, np.float64)
            a["logits"] = np.asarray(bm.logits, np.float64)
            a["patch_size_level0"] = int(bm.l0_patch)
            a["bag_size"] = n
            for key, value in bm.extra.items():
                a[key] = value


def _require(fh: h5py.File, path: Path, key: str):
    if key not in fh.attrs:
        raise BlockmapError(f"{path}: missing attribute '{key}' (not written by create_heatmaps.py?)")
    return fh.attrs[key]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_blockmap(path: str | os.PathLike) -> Blockmap:
    """Read and check one blockmap; BlockmapError names the file and what is wrong."""
    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise BlockmapError(f"{path}: cannot read as HDF5: {exc}") from None
    with fh:
        for key in ("attention_scores", "coords"):
            if key not in fh:
                raise BlockmapError(f"{path}: missing dataset '{key}'")
        scores = np.asarray(fh["attention_scores"][()], np.float32)
        coords = np.asarray(fh["coords"][()], np.int32)
        per_class = (np.asarray(fh["attention_scores_per_class"][()], np.float32)
                     if "attention_scores_per_class" in fh else None)
        names = json.loads(_text(_require(fh, path, "class_names")))
        known = {"format_version", "slide_id", "slide_path", "label", "model_type", "attention_definition",
                 "class_names", "n_classes", "pred", "pred_name", "probs", "logits", "patch_size_level0",
                 "bag_size"}
        bm = Blockmap(
            slide_id=_text(_require(fh, path, "slide_id")),
            slide_path=_text(_require(fh, path, "slide_path")),
            label=_text(fh.attrs.get("label", "Unspecified")),
            model_type=_text(_require(fh, path, "model_type")),
            class_names=[str(n) for n in names],
            pred=int(_require(fh, path, "pred")),
            probs=np.asarray(_require(fh, path, "probs"), np.float64),
            logits=np.asarray(fh.attrs.get("logits", np.full(len(names), np.nan)), np.float64),
            l0_patch=int(_require(fh, path, "patch_size_level0")),
            attention=scores.reshape(-1),
            l0_coords=coords,
            attention_per_class=per_class,
            extra={k: _text(v) for k, v in fh.attrs.items() if k not in known},
        )
    n = bm.bag_size
    if scores.shape not in ((n, 1), (n,)) or coords.shape != (n, 2):
        raise BlockmapError(f"{path}: attention_scores {scores.shape} and coords {coords.shape} disagree")
    if per_class is not None and per_class.shape != (n, bm.n_classes):
        raise BlockmapError(f"{path}: attention_scores_per_class has shape {per_class.shape}, "
                            f"expected ({n}, {bm.n_classes})")
    if not 0 <= bm.pred < bm.n_classes or bm.probs.shape != (bm.n_classes,):
        raise BlockmapError(f"{path}: prediction {bm.pred} / probabilities {bm.probs.shape} do not fit "
                            f"{bm.n_classes} classes")
    return bm


def blockmap_path(raw_exp_dir: Path, label: str, slide_id: str) -> Path:
    """`{raw_save_dir}/{save_exp_code}/{label}/{slide_id}/{slide_id}_blockmap.h5`, as in the guide."""
    return Path(raw_exp_dir) / label / slide_id / f"{slide_id}_blockmap.h5"
