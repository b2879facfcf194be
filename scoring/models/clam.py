"""CLAM (Lu et al. 2021, "Data-efficient and weakly supervised computational pathology on whole-slide
images"): gated-attention pooling with one attention branch (SB) or one per class (MB).

The state-dict layout is CLAM's, so its checkpoints load unchanged:
`attention_net.0` (patch projection), `attention_net.3` (attention head), `classifiers`,
`instance_classifiers.{c}`. The instance classifiers only serve CLAM's clustering loss during
training; they are kept so that checkpoints load strictly and so that a model saved here loads in CLAM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import GatedAttention, MILModel, attention_pool, linear_shape, shape_of

#: CLAM's `size_arg`: (hidden width, attention width); the input width is the feature width.
MODEL_SIZES: dict[str, tuple[int, int]] = {"small": (512, 256), "big": (512, 384)}


class UngatedAttention(nn.Module):
    """CLAM's attention without the sigmoid gate, under CLAM's key names (`module.0`, `module.3`).

    `with_dropout=False` gives the layout of a model built without dropout, where the last linear
    layer sits at index 2 instead of 3.
    """

    def __init__(
        self, in_dim: int, attn_dim: int, n_branches: int, dropout: float, with_dropout: bool = True
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, attn_dim), nn.Tanh()]
        if with_dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(attn_dim, n_branches))
        self.module = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.module(h)


class CLAM(MILModel):
    """CLAM-SB (`multi_branch=False`) or CLAM-MB (`multi_branch=True`)."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        multi_branch: bool,
        embed_dim: int = 512,
        attention_dim: int = 256,
        gate: bool = True,
        dropout: float = 0.25,
        ungated_dropout_layer: bool = True,
        fc_dropout_layer: bool = True,
    ) -> None:
        super().__init__(in_dim, n_classes)
        self.model_type = "clam_mb" if multi_branch else "clam_sb"
        self.multi_branch = multi_branch
        self.per_class_attention = multi_branch
        n_branches = n_classes if multi_branch else 1
        head: nn.Module
        if gate:
            head = GatedAttention(embed_dim, attention_dim, n_branches, dropout, gate=True)
        else:
            head = UngatedAttention(
                embed_dim, attention_dim, n_branches, dropout, ungated_dropout_layer
            )
        # Older CLAM versions add the Dropout only when trained with dropout: their attention head
        # then sits at `attention_net.2` instead of `attention_net.3`.
        fc: list[nn.Module] = [nn.Linear(in_dim, embed_dim), nn.ReLU()]
        if fc_dropout_layer:
            fc.append(nn.Dropout(dropout))
        self.attention_net = nn.Sequential(*fc, head)
        self.classifiers: nn.Module
        if multi_branch:
            # One scalar classifier per class, each reading the bag vector of its own branch.
            self.classifiers = nn.ModuleList([nn.Linear(embed_dim, 1) for _ in range(n_classes)])
        else:
            self.classifiers = nn.Linear(embed_dim, n_classes)
        self.instance_classifiers = nn.ModuleList(
            [nn.Linear(embed_dim, 2) for _ in range(n_classes)]
        )
        self._config = {
            "in_dim": in_dim,
            "n_classes": n_classes,
            "embed_dim": embed_dim,
            "attention_dim": attention_dim,
            "gate": gate,
            "dropout": dropout,
            "fc_dropout_layer": fc_dropout_layer,
        }

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # raw (N, branches): what CLAM's heatmaps store; bag (branches, embed)
        bag, raw = attention_pool(
            x, self.attention_net[:-1], self.attention_net[-1], self.patch_chunk
        )
        if self.multi_branch:
            logits = torch.cat([clf(bag[c]) for c, clf in enumerate(self.classifiers)])
            return logits, raw
        return self.classifiers(bag[0]), raw[:, 0]


def _options(
    model_size: str | None, embed_dim: int | None, attention_dim: int | None
) -> tuple[int, int]:
    size = model_size or "small"
    if size not in MODEL_SIZES:
        from ..errors import ConfigError

        raise ConfigError(
            f"model_arguments.model_size: {size!r} is not one of {', '.join(map(repr, MODEL_SIZES))}"
        )
    default_embed, default_attn = MODEL_SIZES[size]
    return embed_dim or default_embed, attention_dim or default_attn


def build(multi_branch: bool, in_dim: int, n_classes: int, options: Mapping[str, Any]) -> CLAM:
    """A CLAM from the normalised options (model_size picks the widths that are not given)."""
    embed_dim, attention_dim = _options(
        options.get("model_size"), options.get("embed_dim"), options.get("attention_dim")
    )
    kwargs: dict[str, Any] = {}
    for name in ("gate", "dropout", "ungated_dropout_layer", "fc_dropout_layer"):
        if options.get(name) is not None:
            kwargs[name] = options[name]
    return CLAM(
        in_dim,
        n_classes,
        multi_branch=multi_branch,
        embed_dim=embed_dim,
        attention_dim=attention_dim,
        **kwargs,
    )


def infer(multi_branch: bool, sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Widths a CLAM checkpoint reveals; what cannot be read is left out (the strict load reports it)."""
    out: dict[str, Any] = {}
    proj = linear_shape(sd, "attention_net.0.weight")
    if proj is not None:
        out["embed_dim"], out["in_dim"] = proj
    head = 3
    if not any(k.startswith("attention_net.3.") for k in sd) and any(
        k.startswith("attention_net.2.") for k in sd
    ):
        head = (
            2  # saved by a CLAM version that builds no Dropout layer when trained without dropout
        )
        out["fc_dropout_layer"] = False
    gated = linear_shape(sd, f"attention_net.{head}.attention_a.0.weight")
    ungated = linear_shape(sd, f"attention_net.{head}.module.0.weight")
    if gated is not None:
        out["gate"] = True
        out["attention_dim"] = gated[0]
    elif ungated is not None:
        out["gate"] = False
        out["attention_dim"] = ungated[0]
        out["ungated_dropout_layer"] = shape_of(sd, f"attention_net.{head}.module.2.weight") is None
    if multi_branch:
        n = 0
        while shape_of(sd, f"classifiers.{n}.weight") is not None:
            n += 1
        if n:
            out["n_classes"] = n
    else:
        clf = linear_shape(sd, "classifiers.weight")
        if clf is not None:
            out["n_classes"] = clf[0]
    return out
