"""What every MIL model here shares, so that scoring and training treat the five alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

#: Patches per chunk of the per-patch layers at inference: ~50 MB of activations at 512 wide,
#: whatever the bag's size (a million overlapping patches would otherwise need gigabytes).
PATCH_CHUNK = 16384


class MILModel(nn.Module):
    """A bag classifier that can also say how much each patch mattered.

    Scoring calls `forward_with_attention` on one whole bag (N, D); training code (the demo) calls the
    module itself and gets `(1, C)` logits, the shape `nn.CrossEntropyLoss` expects for one bag.
    """

    model_type: str = ""
    #: Bags larger than this are scored by streaming the per-patch layers a chunk of this many
    #: patches at a time (inference only; the same scores, memory bounded by the chunk). Smaller
    #: bags, and training, take the plain whole-bag path.
    patch_chunk: int = PATCH_CHUNK
    #: True where the attention is one column per class (N, C) rather than one score per patch (N,).
    per_class_attention: bool = False

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        if in_dim < 1 or n_classes < 1:
            raise ValueError(f"in_dim and n_classes must be positive (got {in_dim}, {n_classes})")
        self.in_dim = int(in_dim)
        self.n_classes = int(n_classes)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (C,) and the heatmap attention ((N,) or (N, C)) of the bag x (N, D)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (1, C) of one bag given as (N, D) or (1, N, D)."""
        if x.dim() == 3:
            if x.shape[0] != 1:
                raise ValueError(f"one bag at a time: got a batch of {x.shape[0]}")
            x = x[0]
        logits, _ = self.forward_with_attention(x)
        return logits.unsqueeze(0)

    def config(self) -> dict[str, Any]:
        """The constructor arguments, so that a log or a blockmap can say what was built."""
        return dict(getattr(self, "_config", {}))


class GatedAttention(nn.Module):
    """Attention pooling logits of Ilse et al. 2018: w^T (tanh(V h) * sigmoid(U h)), one row per branch.

    The gate (sigmoid branch) lets the model switch off patches whose tanh response is large but
    uninformative; without it the score is w^T tanh(V h). Submodule names follow the state dicts of
    CLAM and MIL-Lab (`attention_a.0`, `attention_b.0`, `attention_c`) so their checkpoints load.
    """

    def __init__(
        self,
        in_dim: int,
        attn_dim: int,
        n_branches: int = 1,
        dropout: float = 0.0,
        gate: bool = True,
    ) -> None:
        super().__init__()
        self.gate = gate
        self.attention_a = nn.Sequential(
            nn.Linear(in_dim, attn_dim), nn.Tanh(), nn.Dropout(dropout)
        )
        self.attention_b = (
            nn.Sequential(nn.Linear(in_dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
            if gate
            else None
        )
        self.attention_c = nn.Linear(attn_dim, n_branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Pre-softmax attention logits (N, n_branches)."""
        a = self.attention_a(h)
        if self.attention_b is not None:
            a = a * self.attention_b(h)
        return self.attention_c(a)


def chunks(n: int, size: int = PATCH_CHUNK) -> list[slice]:
    """Row slices of a bag of n patches, `size` at a time (one slice when the bag is small)."""
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


def attention_pool(x: torch.Tensor, embed, attend, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(attention)^T @ embed(x) over the whole bag, and the raw attention (N, branches).

    The per-patch layers (`embed`, then `attend` on its output) run `chunk` patches at a time and
    the softmax pooling is accumulated exactly across chunks (the running maximum rescales what was
    summed so far, as in a streaming softmax), so peak memory is bounded by the chunk, not the bag.
    A bag that fits one chunk takes the plain path (identical to pooling the whole bag at once).
    """
    n = x.shape[0]
    if n <= chunk or torch.is_grad_enabled():
        h = embed(x)
        raw = attend(h)
        return torch.softmax(raw, dim=0).transpose(0, 1) @ h, raw
    raws = []
    peak = total = pooled = None
    for rows in chunks(n, chunk):
        h = embed(x[rows])
        raw = attend(h)  # (c, branches)
        raws.append(raw)
        top = raw.amax(dim=0)
        if peak is None:
            peak = top
            weights = torch.exp(raw - peak)
            total = weights.sum(dim=0)
            pooled = weights.transpose(0, 1) @ h
            continue
        new_peak = torch.maximum(peak, top)
        rescale = torch.exp(peak - new_peak)
        weights = torch.exp(raw - new_peak)
        total = total * rescale + weights.sum(dim=0)
        pooled = pooled * rescale[:, None] + weights.transpose(0, 1) @ h
        peak = new_peak
    return pooled / total[:, None], torch.cat(raws)


def strip_module(key: str) -> str:
    """A key with every DataParallel `module.` segment removed: the form two layouts are compared in."""
    parts = [p for p in key.split(".") if p != "module"]
    return ".".join(parts)


def shape_of(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    """The shape of a checkpoint tensor, or None where it is absent (width inference then falls back).

    Matching ignores `module.` segments, so that widths are read alike from CLAM's DataParallel
    (`attention_net.module.0`) and plain layouts before the keys themselves are reconciled.
    """
    t = state_dict.get(key)
    if t is None:
        wanted = strip_module(key)
        for k, v in state_dict.items():
            if strip_module(k) == wanted:
                t = v
                break
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def linear_shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, int] | None:
    """(out, in) of a saved linear weight, or None where it is absent or not 2-D: the widths a
    checkpoint reveals are read from these."""
    shape = shape_of(state_dict, key)
    return (shape[0], shape[1]) if shape is not None and len(shape) == 2 else None
