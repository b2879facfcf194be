"""ABMIL (Ilse, Tomczak & Welling 2018, "Attention-based deep multiple instance learning"), gated variant.

Patches are projected (`patch_embed`), scored by gated attention (`global_attn`), pooled by the
softmax of those scores and classified (`classifier`): the key layout of MIL-Lab's ABMIL, whose
Hugging-Face wrapper adds a `model.` prefix that the checkpoint loader strips.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import GatedAttention, MILModel, attention_pool, linear_shape, shape_of


class ABMIL(MILModel):
    """Gated (or plain tanh) attention MIL with one attention branch."""

    model_type = "abmil"

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        embed_dim: int = 512,
        attention_dim: int = 384,
        gate: bool = True,
        dropout: float = 0.25,
    ) -> None:
        super().__init__(in_dim, n_classes)
        self.patch_embed = nn.Sequential(
            nn.Linear(in_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.global_attn = GatedAttention(embed_dim, attention_dim, 1, dropout, gate=gate)
        self.classifier = nn.Linear(embed_dim, n_classes)
        self._config = {
            "in_dim": in_dim,
            "n_classes": n_classes,
            "embed_dim": embed_dim,
            "attention_dim": attention_dim,
            "gate": gate,
            "dropout": dropout,
        }

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # raw (N, 1): the pre-softmax attention the heatmap shows
        bag, raw = attention_pool(x, self.patch_embed, self.global_attn, self.patch_chunk)
        return self.classifier(bag[0]), raw[:, 0]


def build(in_dim: int, n_classes: int, options: Mapping[str, Any]) -> ABMIL:
    kwargs = {
        k: options[k]
        for k in ("embed_dim", "attention_dim", "gate", "dropout")
        if options.get(k) is not None
    }
    return ABMIL(in_dim, n_classes, **kwargs)


def infer(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Widths an ABMIL checkpoint reveals; the gate is on where its sigmoid branch is saved."""
    out: dict[str, Any] = {}
    proj = linear_shape(sd, "patch_embed.0.weight")
    if proj is not None:
        out["embed_dim"], out["in_dim"] = proj
    attn = linear_shape(sd, "global_attn.attention_a.0.weight")
    if attn is not None:
        out["attention_dim"] = attn[0]
        out["gate"] = shape_of(sd, "global_attn.attention_b.0.weight") is not None
    clf = linear_shape(sd, "classifier.weight")
    if clf is not None:
        out["n_classes"] = clf[0]
    return out
