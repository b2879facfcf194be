"""Typed config values: each checker returns the converted value or raises ValueError(expected form).

The message of the ValueError completes "<file>: <section.key> must be ...", so each names what a
user should have written.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from scoremap.colormap import check_colormap
from scoremap.errors import ParameterError, UnknownColormap
from scoremap.params import check_alpha
from scoring.models import MODEL_TYPES  # torch-free import: the registry loads models lazily

SAMPLE_MODES = ("topk", "bottomk", "reverse_topk", "range_sample")
SAVE_EXTS = ("png", "jpg", "jpeg", "tiff", "tif")


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


def _alpha(v: Any) -> float:
    try:
        return check_alpha(v)
    except ParameterError as exc:  # the config's message names the key itself
        raise ValueError(exc.expected) from None


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if v in (0, 1) and not isinstance(v, float):
        return bool(v)
    raise ValueError("true or false")


def _rate(v: Any) -> float | None:
    """A dropout rate in [0, 1). No effect at inference."""
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0:
        return float(v)
    raise ValueError("a dropout rate in [0, 1)")


def _dropout(v: Any) -> float | None:
    """A rate, or older CLAM configs' `drop_out: true` (CLAM then used 0.25)."""
    if isinstance(v, bool):
        return 0.25 if v else 0.0
    try:
        return _rate(v)
    except ValueError:
        raise ValueError("a dropout rate in [0, 1) or true/false") from None


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
    if not isinstance(v, dict) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in v.values()
    ):
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
        raise ValueError("a number >= 1 (1 keeps the level's size, 2 halves it)")
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


def _methods(v: Any) -> tuple[str, ...]:
    from scoremap.defaults import EXPLAIN_METHODS

    allowed = ", ".join(EXPLAIN_METHODS)
    if isinstance(v, str) or not isinstance(v, (list, tuple)):
        raise ValueError(f"a list of explanation methods from: {allowed}")
    for item in v:
        if item not in EXPLAIN_METHODS:
            raise ValueError(f"a list of explanation methods from: {allowed} ({item!r} is not one)")
    return tuple(dict.fromkeys(v))


def _target(v: Any) -> str | int:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ValueError("'predicted', a class name or a class index")
    if isinstance(v, int) and v < 0:
        raise ValueError("'predicted', a class name or a class index (0 or more)")
    return v


def _occlusion_block(v: Any) -> str | int:
    # Blocks of K x K patches only make sense for occlusion by forward passes (not built yet);
    # the closed form of the attention-pooling models removes one patch at a time, exactly.
    if v == "auto" or (v == 1 and not isinstance(v, bool)):
        return "auto" if v == "auto" else 1
    raise ValueError("'auto' or 1 (one patch at a time; larger blocks are not supported yet)")
