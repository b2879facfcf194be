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
from typing import Any, Literal, overload

import h5py
import numpy as np
import numpy.typing as npt

from scoremap.atomic import atomic_output
from scoremap.errors import BlockmapError
from scoremap.params import resolve_class

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
        return len(self.attention)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_per_class(self) -> bool:
        return self.attention_per_class is not None

    def scores_for_class(self, class_index: int | None) -> np.ndarray:
        """The attention used to colour class `class_index` (None: the predicted class);
        ParameterError (`scoremap.params.resolve_class`) when the slide has none for it."""
        index = resolve_class(self, class_index)
        if index == self.pred or self.attention_per_class is None:
            return self.attention
        return self.attention_per_class[:, index]


def write_blockmap(path: str | os.PathLike[str], bm: Blockmap) -> None:
    """Write atomically: the viewer and reruns treat an existing blockmap as a finished slide."""
    n = bm.bag_size
    if bm.l0_coords.shape != (n, 2):
        raise BlockmapError(f"coords shape {bm.l0_coords.shape} does not match {n} scores")
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset(
            "attention_scores", data=np.asarray(bm.attention, np.float32).reshape(n, 1)
        )
        fh.create_dataset("coords", data=np.asarray(bm.l0_coords, np.int32))
        if bm.attention_per_class is not None:
            fh.create_dataset(
                "attention_scores_per_class",
                data=np.asarray(bm.attention_per_class, np.float32),
            )
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


#: Largest level-0 patch side believed: 65536 px is a whole slide at 0.25 um/px; anything larger
#: (or <= 0) is a corrupt attribute, and would make every raster of the slide absurd.
MAX_PATCH_SIZE = 1 << 16
_KNOWN = {
    "format_version",
    "slide_id",
    "slide_path",
    "label",
    "model_type",
    "attention_definition",
    "class_names",
    "n_classes",
    "pred",
    "pred_name",
    "probs",
    "logits",
    "patch_size_level0",
    "bag_size",
}


@dataclass(frozen=True)
class BlockmapHeader:
    """What a blockmap says about its slide without its per-patch arrays (the cohort table's needs)."""

    slide_id: str
    slide_path: str
    label: str
    model_type: str
    class_names: list[str]
    pred: int
    probs: np.ndarray
    logits: np.ndarray
    l0_patch: int
    bag_size: int
    has_per_class: bool
    extra: dict[str, str]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


class _Reader:
    """One blockmap's attributes and datasets, each checked: every malformation is a BlockmapError
    naming the file and what was expected, never a JSON, type or value error from below."""

    def __init__(self, fh: h5py.File, path: Path):
        self.fh, self.path = fh, path

    def fail(self, message: str) -> BlockmapError:
        return BlockmapError(f"{self.path}: {message}", reason=message)

    def attr(self, key: str, default: Any = None, required: bool = True) -> Any:
        if key not in self.fh.attrs:
            if required:
                raise self.fail(f"missing attribute '{key}' (not written by create_heatmaps.py?)")
            return default
        try:
            return self.fh.attrs[key]
        except (OSError, TypeError, ValueError) as exc:  # an attribute h5py cannot decode
            raise self.fail(f"attribute '{key}' cannot be read ({exc})") from None

    def text(self, key: str, default: str | None = None) -> str:
        value = self.attr(key, default, required=default is None)
        if isinstance(value, bytes):
            try:
                return value.decode()
            except UnicodeDecodeError:
                raise self.fail(f"attribute '{key}' is not UTF-8 text") from None
        if isinstance(value, np.ndarray) and value.shape != ():
            raise self.fail(f"attribute '{key}' must be text, got an array of shape {value.shape}")
        return str(value)

    def integer(self, key: str, lo: int, hi: int, expected: str) -> int:
        value = self.attr(key)
        try:
            number = float(np.asarray(value).item())
        except (TypeError, ValueError):
            raise self.fail(f"attribute '{key}' must be {expected}, got {value!r}"[:300]) from None
        if not (np.isfinite(number) and number.is_integer() and lo <= number <= hi):
            raise self.fail(f"attribute '{key}' must be {expected}, got {value!r}"[:300])
        return int(number)

    def numbers(self, key: str, n: int, required: bool = True) -> np.ndarray:
        value = self.attr(key, np.full(n, np.nan), required)
        try:
            array = np.asarray(value, np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise self.fail(f"attribute '{key}' must be {n} numbers, got {value!r}"[:300]) from None
        if array.shape != (n,):
            raise self.fail(
                f"attribute '{key}' must be {n} numbers (one per class), got {array.shape[0]}"
            )
        return array

    def class_names(self) -> list[str]:
        raw = self.text("class_names")
        try:
            names = json.loads(raw)
        except ValueError:
            raise self.fail(
                f"attribute 'class_names' must be a JSON list of names, got {raw[:80]!r}"
            ) from None
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, (str, int, float)) for n in names)
        ):
            raise self.fail(
                f"attribute 'class_names' must be a non-empty JSON list of names, got {raw[:80]!r}"
            )
        return [str(n) for n in names]

    @overload
    def dataset(self, key: str, width: int | None, required: Literal[True]) -> h5py.Dataset: ...
    @overload
    def dataset(self, key: str, width: int | None, required: bool) -> h5py.Dataset | None: ...
    def dataset(self, key: str, width: int | None, required: bool = True) -> h5py.Dataset | None:
        node = self.fh.get(key)
        if node is None:
            if required:
                raise self.fail(f"missing dataset '{key}'")
            return None
        if not isinstance(node, h5py.Dataset):
            raise self.fail(f"'{key}' must be a dataset, got a {type(node).__name__.lower()}")
        if not np.issubdtype(node.dtype, np.number) or np.issubdtype(
            node.dtype, np.complexfloating
        ):
            raise self.fail(f"dataset '{key}' must hold real numbers, got {node.dtype}")
        shape = node.shape
        ok = (len(shape) == 2 and (width is None or shape[1] == width)) or (
            width == 1 and len(shape) == 1
        )
        if not ok:
            raise self.fail(
                f"dataset '{key}' has shape {shape}, expected (N, {width if width else 'C'})"
            )
        return node

    def header(self) -> BlockmapHeader:
        scores = self.dataset("attention_scores", 1, required=True)
        coords = self.dataset("coords", 2, required=True)
        per_class = self.dataset("attention_scores_per_class", None, required=False)
        n = scores.shape[0]
        if coords.shape[0] != n:
            raise self.fail(
                f"attention_scores ({n} patches) and coords ({coords.shape[0]}) disagree"
            )
        names = self.class_names()
        c = len(names)
        if per_class is not None and per_class.shape != (n, c):
            raise self.fail(
                f"attention_scores_per_class has shape {per_class.shape}, expected ({n}, {c})"
            )
        return BlockmapHeader(
            slide_id=self.text("slide_id"),
            slide_path=self.text("slide_path"),
            label=self.text("label", "Unspecified"),
            model_type=self.text("model_type"),
            class_names=names,
            pred=self.integer("pred", 0, c - 1, f"a class index 0..{c - 1}"),
            probs=self.numbers("probs", c),
            logits=self.numbers("logits", c, required=False),
            l0_patch=self.integer(
                "patch_size_level0",
                1,
                MAX_PATCH_SIZE,
                f"a level-0 patch size in pixels, 1..{MAX_PATCH_SIZE}",
            ),
            bag_size=n,
            has_per_class=per_class is not None,
            extra={k: self.text(k) for k in self.fh.attrs if k not in _KNOWN},
        )

    def array(self, key: str, dtype: npt.DTypeLike) -> np.ndarray:
        node = self.fh[key]
        try:
            return np.asarray(node[()], dtype)
        except (OSError, TypeError, ValueError) as exc:
            raise self.fail(f"dataset '{key}' cannot be read ({exc})") from None


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise BlockmapError(
            f"{path}: cannot read as HDF5: {exc}", reason="not a readable HDF5 file"
        ) from None


def read_blockmap_header(path: str | os.PathLike[str]) -> BlockmapHeader:
    """The checked attributes and shapes of a blockmap, without reading its per-patch arrays."""
    path = Path(path)
    with _open(path) as fh:
        return _Reader(fh, path).header()


def read_blockmap(path: str | os.PathLike[str]) -> Blockmap:
    """Read and check one blockmap; BlockmapError names the file and what is wrong."""
    path = Path(path)
    with _open(path) as fh:
        reader = _Reader(fh, path)
        head = reader.header()
        scores = reader.array("attention_scores", np.float32).reshape(-1)
        coords = reader.array("coords", np.float64)
        per_class = (
            reader.array("attention_scores_per_class", np.float32) if head.has_per_class else None
        )
    if (
        not np.isfinite(coords).all()
        or (coords < 0).any()
        or (coords > 2**31 - 1 - head.l0_patch).any()
    ):
        raise BlockmapError(
            f"{path}: coords must be non-negative level-0 pixel positions",
            reason="coords must be non-negative level-0 pixel positions",
        )
    return Blockmap(
        slide_id=head.slide_id,
        slide_path=head.slide_path,
        label=head.label,
        model_type=head.model_type,
        class_names=head.class_names,
        pred=head.pred,
        probs=head.probs,
        logits=head.logits,
        l0_patch=head.l0_patch,
        attention=scores,
        l0_coords=coords.astype(np.int32),
        attention_per_class=per_class,
        extra=head.extra,
    )


def blockmap_path(raw_exp_dir: Path, label: str, slide_id: str) -> Path:
    """`{raw_save_dir}/{save_exp_code}/{label}/{slide_id}/{slide_id}_blockmap.h5`, as in the guide."""
    return Path(raw_exp_dir) / label / slide_id / f"{slide_id}_blockmap.h5"


BLOCKMAP_SUFFIX = "_blockmap.h5"


def find_blockmaps(raw_exp_dir: Path) -> list[tuple[str, str, Path]]:
    """(label, slide_id, path) of every `{label}/{slide_id}/{slide_id}_blockmap.h5` below the folder.

    Only that exact layout counts: partial files of an interrupted run (hidden names) and stray
    HDF5 files are ignored.
    """
    found = []
    for path in sorted(Path(raw_exp_dir).glob(f"*/*/*{BLOCKMAP_SUFFIX}")):
        slide_id = path.parent.name
        if path.name == f"{slide_id}{BLOCKMAP_SUFFIX}" and path.is_file():
            found.append((path.parent.parent.name, slide_id, path))
    return found
