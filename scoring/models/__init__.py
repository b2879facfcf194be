"""The five MIL models the pipeline scores with, built fresh or from CLAM / MIL-Lab checkpoints.

`MODEL_TYPES` is importable without torch (config validation needs it); the models themselves are
imported on first use. Their options (`attn_dim` for `attention_dim`, CLAM's boolean `drop_out`)
are checked by the config's rule for `model_arguments` (`scoring.config.schema.MODEL_OPTIONS`),
whether they come from a config or from a caller.

Every model is a `scoring.models.base.MILModel`: `model(x)` gives `(1, C)` logits for one bag (for
training), `model.forward_with_attention(x)` gives logits `(C,)` and the heatmap attention, which
`scoring.attention.score_bag` turns into numpy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from scoremap.defaults import MODEL_ARGUMENTS

if TYPE_CHECKING:
    import torch

MODEL_TYPES: tuple[str, ...] = ("abmil", "clam_sb", "clam_mb", "transmil", "dsmil")

#: Options whose value a checkpoint can reveal; the checkpoint's value wins over a configured one.
_WIDTHS: tuple[str, ...] = (
    "embed_dim",
    "attention_dim",
    "num_heads",
    "num_layers",
    "gate",
    "dim_head",
    "residual_conv_kernel",
    "fcc_channels",
    "ungated_dropout_layer",
    "fc_dropout_layer",
)

_CONFIG_KEYS = {
    "n_classes": "model_arguments.n_classes or exp_arguments.n_classes",
    "in_dim": "model_arguments.in_dim, or embed_dim in a CLAM config",
}

log = logging.getLogger(__name__)


def _checked(model_type: str, options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model type and options by the config's rules for `model_arguments` (one validator:
    ConfigError naming model_arguments.<key> and what it accepts)."""
    from ..config.schema import check_model_options, check_model_type

    return check_model_type(model_type), check_model_options(options)


def _registry(
    model_type: str,
) -> tuple[Callable[..., Any], Callable[[Mapping[str, Any]], dict[str, Any]]]:
    """(build(in_dim, n_classes, options), infer(state_dict)) for a model type."""
    from . import abmil, clam, dsmil, transmil

    table: dict[str, tuple[Callable[..., Any], Callable[[Mapping[str, Any]], dict[str, Any]]]] = {
        "abmil": (abmil.build, abmil.infer),
        "clam_sb": (lambda i, c, o: clam.build(False, i, c, o), lambda sd: clam.infer(False, sd)),
        "clam_mb": (lambda i, c, o: clam.build(True, i, c, o), lambda sd: clam.infer(True, sd)),
        "transmil": (transmil.build, transmil.infer),
        "dsmil": (dsmil.build, dsmil.infer),
    }
    return table[model_type]


def build_model(model_type: str, *, in_dim: int, n_classes: int, **options: Any) -> torch.nn.Module:
    """A freshly initialised model whose `state_dict()` has the CLAM / MIL-Lab key layout of its type.

    Defaults are MIL-Lab's base configs (CLAM's "small" for clam_*), so that a model trained here and
    one trained there are interchangeable.
    """
    model_type, opts = _checked(model_type, options)
    build, _ = _registry(model_type)
    return build(int(in_dim), int(n_classes), opts)


def load_model(
    model_type: str,
    ckpt_path: str | os.PathLike[str],
    *,
    n_classes: int | None = None,
    in_dim: int | None = None,
    **options: Any,
) -> torch.nn.Module:
    """A model with a checkpoint's weights, on the CPU in eval mode.

    Widths are read from the checkpoint's tensor shapes because configs routinely disagree with the
    weights they point at (CLAM's `embed_dim` is the feature width, MIL-Lab's is the hidden one); only
    `n_classes` and `in_dim`, which the user states about the data, are checked against it.
    """
    from ..errors import CheckpointMismatch
    from .checkpoint import load_strict, normalise_keys, read_state_dict

    model_type, opts = _checked(model_type, options)
    build, infer = _registry(model_type)
    state = normalise_keys(read_state_dict(ckpt_path), ckpt_path)
    found = infer(state)
    for name, given in (("n_classes", n_classes), ("in_dim", in_dim)):
        if given is not None and name in found and int(given) != int(found[name]):
            raise CheckpointMismatch(
                f"checkpoint {ckpt_path} is a {model_type} with {name}={found[name]}, but the config says "
                f"{name}={given} ({_CONFIG_KEYS[name]})"
            )
    for name in _WIDTHS:
        if name in found:
            if name in opts and opts[name] != found[name]:
                log.warning(
                    "%s: %s=%r from the checkpoint used instead of the configured %r",
                    ckpt_path,
                    name,
                    found[name],
                    opts[name],
                )
            opts[name] = found[name]
    # Where the checkpoint hides a width, a default only serves to build a model whose strict load
    # then reports exactly which keys are missing.
    final_in = int(found.get("in_dim", in_dim if in_dim is not None else MODEL_ARGUMENTS["in_dim"]))
    final_classes = int(
        found.get("n_classes", n_classes if n_classes is not None else MODEL_ARGUMENTS["n_classes"])
    )
    model = build(final_in, final_classes, opts)
    description = (
        f"{model_type} (in_dim={final_in}, n_classes={final_classes}, "
        + ", ".join(
            f"{k}={v}"
            for k, v in sorted(model.config().items())
            if k not in ("in_dim", "n_classes")
        )
        + ")"
    )
    try:
        load_strict(model, state, ckpt_path, description)
    except CheckpointMismatch as exc:
        other = _looks_like(state, exclude=model_type)
        if other:
            raise CheckpointMismatch(
                f"{exc}\n  its keys are those of a {other} checkpoint: "
                f"set model_arguments.model_type: {other}"
            ) from None
        raise
    return model.cpu().eval()


def _looks_like(state: Mapping[str, Any], exclude: str) -> str | None:
    """The model type whose key layout a checkpoint has exactly, to turn a wall of keys into a fix."""
    from .base import strip_module

    keys = {strip_module(k) for k in state}
    for candidate in MODEL_TYPES:
        if candidate == exclude:
            continue
        build, infer = _registry(candidate)
        found = infer(state)
        try:
            opts = {k: v for k, v in found.items() if k in _WIDTHS}
            model = build(
                int(found.get("in_dim", MODEL_ARGUMENTS["in_dim"])),
                int(found.get("n_classes", MODEL_ARGUMENTS["n_classes"])),
                opts,
            )
        except Exception:
            continue
        if keys == {strip_module(k) for k in model.state_dict()}:
            return candidate
    return None


__all__ = ["MODEL_TYPES", "build_model", "load_model"]
