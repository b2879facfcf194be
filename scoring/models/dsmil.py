"""DSMIL (Li, Li & Eliceiri 2021, "Dual-stream multiple instance learning network for whole slide
image classification with self-supervised contrastive learning").

Two streams over the projected patches h_i:
- instance stream: a linear instance classifier; its top-scoring patch per class is the *critical
  instance* and its score is the max-pooling bag score;
- bag stream: each patch attends to the critical instance of class c through a learned query
  projection, softmax(q(h_i) . q(h_crit_c) / sqrt(d)) over patches, and the attention-pooled values
  are layer-normed and classified by a Conv1d spanning the whole embedding.
The logits are the mean of the two streams. The heatmap attention is the bag stream's attention,
one column per class, each summing to 1 over the patches.

Key names follow MIL-Lab (`i_classifier.inst_classifier`, `b_classifier.{q,v.1,norm,fcc}`,
`classifier`). `b_classifier.fcc` is saved by MIL-Lab but plays no part in its output; it is kept
(with the width read from the checkpoint) only so that checkpoints load strictly in both directions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import MILModel, chunks, linear_shape, shape_of


class InstanceClassifier(nn.Module):
    def __init__(self, embed_dim: int, n_classes: int) -> None:
        super().__init__()
        self.inst_classifier = nn.Linear(embed_dim, n_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.inst_classifier(h)


class BagClassifier(nn.Module):
    """The bag stream up to the pooled, normalised bag embedding (one row per class)."""

    def __init__(
        self, embed_dim: int, attention_dim: int, fcc_channels: int, dropout_v: float
    ) -> None:
        super().__init__()
        self.q = nn.Linear(embed_dim, attention_dim)
        self.v = nn.Sequential(nn.Dropout(dropout_v), nn.Linear(embed_dim, embed_dim))
        self.norm = nn.LayerNorm(embed_dim)
        self.fcc = nn.Conv1d(fcc_channels, fcc_channels, kernel_size=embed_dim)

    def forward(self, h: torch.Tensor, critical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled bag rows (C, E) and the attention (N, C) of every patch to each critical instance."""
        queries = self.q(h)
        sim = queries @ queries[critical].transpose(0, 1)  # (N, C)
        attention = torch.softmax(sim / math.sqrt(queries.shape[1]), dim=0)
        pooled = attention.transpose(0, 1) @ self.v(h)
        return self.norm(pooled), attention


class DSMIL(MILModel):
    model_type = "dsmil"
    per_class_attention = True

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        embed_dim: int = 512,
        attention_dim: int = 384,
        dropout: float = 0.25,
        dropout_v: float = 0.0,
        fcc_channels: int | None = None,
    ) -> None:
        super().__init__(in_dim, n_classes)
        fcc_channels = fcc_channels or n_classes + 1
        self.patch_embed = nn.Sequential(
            nn.Linear(in_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.i_classifier = InstanceClassifier(embed_dim, n_classes)
        self.b_classifier = BagClassifier(embed_dim, attention_dim, fcc_channels, dropout_v)
        self.classifier = nn.Conv1d(n_classes, n_classes, kernel_size=embed_dim)
        self._config = {
            "in_dim": in_dim,
            "n_classes": n_classes,
            "embed_dim": embed_dim,
            "attention_dim": attention_dim,
            "dropout": dropout,
            "dropout_v": dropout_v,
        }

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] > self.patch_chunk and not torch.is_grad_enabled():
            return self._streamed(x)
        h = self.patch_embed(x)
        instance_scores = self.i_classifier(h)  # (N, C)
        max_scores, critical = instance_scores.max(dim=0)
        pooled, attention = self.b_classifier(h, critical)
        return self._logits(pooled, max_scores), attention

    def _logits(self, pooled: torch.Tensor, max_scores: torch.Tensor) -> torch.Tensor:
        bag_scores = self.classifier(pooled.unsqueeze(0))[
            0, :, 0
        ]  # Conv1d over the whole embedding
        return (bag_scores + max_scores) / 2

    def _streamed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same computation a chunk of patches at a time (inference on large bags).

        Pass 1 finds each class's critical instance (the top instance score over the whole bag);
        pass 2 recomputes the chunk's embedding, its query similarity to the critical instances
        and the values, and accumulates the softmax-weighted values exactly (a streaming softmax).
        The embedding is computed twice, the bag's activations never held at once: 200,000 x 1024
        features need ~100 MB beyond themselves instead of 1.2 GB.
        """
        b = self.b_classifier
        n = x.shape[0]
        best = best_at = None
        for rows in chunks(n, self.patch_chunk):
            scores = self.i_classifier(self.patch_embed(x[rows]))  # (c, C)
            top, at = scores.max(dim=0)
            at = at + rows.start
            if best is None:
                best, best_at = top, at
            else:
                better = top > best  # ties keep the earlier patch, as one max over the bag does
                best, best_at = torch.where(better, top, best), torch.where(better, at, best_at)
        critical_queries = b.q(self.patch_embed(x[best_at]))  # (C, A)
        scale = math.sqrt(critical_queries.shape[1])
        sims = []
        peak = total = pooled = None
        for rows in chunks(n, self.patch_chunk):
            h = self.patch_embed(x[rows])
            sim = (b.q(h) @ critical_queries.transpose(0, 1)) / scale  # (c, C)
            sims.append(sim)
            values = b.v(h)
            top = sim.amax(dim=0)
            new_peak = top if peak is None else torch.maximum(peak, top)
            weights = torch.exp(sim - new_peak)
            part = weights.transpose(0, 1) @ values  # (C, E)
            if peak is None:
                total, pooled = weights.sum(dim=0), part
            else:
                rescale = torch.exp(peak - new_peak)
                total = total * rescale + weights.sum(dim=0)
                pooled = pooled * rescale[:, None] + part
            peak = new_peak
        attention = torch.softmax(torch.cat(sims), dim=0)
        return self._logits(b.norm(pooled / total[:, None]), best), attention


def build(in_dim: int, n_classes: int, options: Mapping[str, Any]) -> DSMIL:
    names = ("embed_dim", "attention_dim", "dropout", "dropout_v", "fcc_channels")
    return DSMIL(in_dim, n_classes, **{k: options[k] for k in names if options.get(k) is not None})


def infer(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    proj = linear_shape(sd, "patch_embed.0.weight")
    if proj is not None:
        out["embed_dim"], out["in_dim"] = proj
    q = linear_shape(sd, "b_classifier.q.weight")
    if q is not None:
        out["attention_dim"] = q[0]
    fcc = shape_of(sd, "b_classifier.fcc.weight")
    if fcc is not None and len(fcc) == 3:
        out["fcc_channels"] = fcc[0]
    clf = linear_shape(sd, "i_classifier.inst_classifier.weight")
    if clf is not None:
        out["n_classes"] = clf[0]
    return out
