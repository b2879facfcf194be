"""Reading CLAM / MIL-Lab checkpoints and fitting them to our modules, with errors that name the keys.

Checkpoints arrive in several layouts for the same weights: CLAM saves `attention_net.module.*` when its
attention net was wrapped in DataParallel and keeps the `instance_loss_fn.*` buffers; MIL-Lab's
Hugging-Face wrapper prefixes every key with `model.`; training scripts wrap the dict in
`{"state_dict": ...}` and the like. All of them are reduced to our key names before a strict load, so
that a genuinely wrong checkpoint still fails loudly instead of half-loading.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointMismatch
from .base import strip_module

#: Dict keys under which training scripts commonly nest the state dict.
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "net", "module")
#: Leading prefixes added by wrappers: MIL-Lab's Hugging-Face model (`model.`) and DataParallel (`module.`).
LEADING_PREFIXES: tuple[str, ...] = ("model.", "module.")
#: Training-only buffers that CLAM saves and that no inference module has.
DROPPED_PREFIXES: tuple[str, ...] = ("instance_loss_fn.",)
_MAX_LISTED = 30


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a .pt/.pth/.bin (torch) or .safetensors file, unwrapped, on the CPU.

    `weights_only=True`: a checkpoint is data from elsewhere, and unpickling arbitrary objects from it
    would run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatch(f"checkpoint {path}: no such file")
    try:
        if path.suffix.lower() == ".safetensors":
            obj: Any = _read_safetensors(path)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointMismatch:
        raise
    except (
        Exception
    ) as exc:  # torch and safetensors raise a zoo of types for corrupt or foreign files
        # A torch file that is really safetensors (or the reverse) still loads.
        alt = _try_other_format(path)
        if alt is None:
            if "weights only load failed" in str(exc).lower():
                why = (
                    "it is not a torch file of tensors (corrupt, not a checkpoint, or a pickled whole "
                    "model: save model.state_dict() instead)"
                )
            else:
                why = f"{type(exc).__name__}: {_first_line(exc)}"
            raise CheckpointMismatch(
                f"checkpoint {path} cannot be read as a torch or safetensors state dict: {why}"
            ) from exc
        obj = alt
    return _unwrap(obj, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def _try_other_format(path: Path) -> Any | None:
    try:
        if path.suffix.lower() == ".safetensors":
            return torch.load(path, map_location="cpu", weights_only=True)
        return _read_safetensors(path)
    except Exception:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(
        obj, nn.Module
    ):  # unreachable with weights_only, kept for callers passing modules
        obj = obj.state_dict()
    for _ in range(3):  # {"model": {"state_dict": ...}} and the like
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointMismatch(
            f"checkpoint {path} holds no state dict (found {type(obj).__name__}); "
            "expected a mapping of tensor names to tensors, "
            f"optionally under one of {', '.join(WRAPPER_KEYS)}"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointMismatch(
            f"checkpoint {path} is not a plain state dict: {_listing(bad)} hold non-tensor values"
        )
    return {str(k): v for k, v in obj.items()}


def normalise_keys(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str] = "<state dict>"
) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes and drop training-only buffers; inner `.module.` is left to `fit_keys`.

    Inner `module` segments are not removed blindly because a model may own a submodule called
    `module` (CLAM's ungated attention does); `fit_keys` removes them only where that makes a key fit.
    """
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state_dict.items():
        new = key
        changed = True
        while changed:
            changed = False
            for prefix in LEADING_PREFIXES:
                if new.startswith(prefix):
                    new = new[len(prefix) :]
                    changed = True
        if new.startswith(DROPPED_PREFIXES):
            continue
        if new in out:
            raise CheckpointMismatch(
                f"checkpoint {path}: keys {origin[new]!r} and {key!r} both name {new!r} "
                "once wrapper prefixes are removed"
            )
        out[new] = value
        origin[new] = key
    return out


def fit_keys(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys that differ from the model's only by DataParallel `module` segments."""
    by_stripped: dict[str, str] = {}
    for key in expected:
        by_stripped.setdefault(strip_module(key), key)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        target = key
        if key not in expected:
            target = by_stripped.get(strip_module(key), key)
            if (
                target in state_dict
            ):  # the exact name is in the checkpoint as well: keep both as they are
                target = key
        if target in out:
            target = key
        out[target] = value
    return out


def load_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    description: str,
) -> None:
    """Load every tensor or none; otherwise name missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    fitted = fit_keys(state_dict, expected)
    missing = [k for k in expected if k not in fitted]
    unexpected = [k for k in fitted if k not in expected]
    misshaped = [
        f"{k} (model expects {_shape(expected[k])}, checkpoint has {_shape(fitted[k])})"
        for k in expected
        if k in fitted and tuple(fitted[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or misshaped:
        lines = [f"checkpoint {path} does not fit {description}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if misshaped:
            lines.append(f"  mis-shaped keys ({len(misshaped)}): {_listing(misshaped)}")
        raise CheckpointMismatch("\n".join(lines))
    model.load_state_dict(fitted, strict=True)


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(d) for d in t.shape) if t.dim() else "scalar"


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f", ... and {len(items) - _MAX_LISTED} more"
    return shown
