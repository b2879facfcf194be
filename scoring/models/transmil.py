"""TransMIL (Shao et al. 2021, "TransMIL: Transformer based correlated multiple instance learning for
whole slide image classification").

Patches are projected, the bag is padded to a square H x W grid by repeating its first patches, a class
token is prepended, and two Nystrom-attention transformer layers run with the PPEG position encoding
(depth-wise 7/5/3 convolutions over the grid) between them; the class token is classified.

Nystrom attention comes from the `nystrom-attention` package (the implementation the paper used), whose
submodule names (`to_qkv`, `to_out.0`, `res_conv`) are the checkpoint keys.

Heatmap attention: each patch token's dot product with the class token after the first transformer
layer. It is a property of the whole bag (every token attends to every other), which is why bags are
never scored in pieces.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from .base import MILModel, linear_shape, shape_of


def _nystrom_attention() -> type[nn.Module]:
    try:
        from nystrom_attention import NystromAttention
    except ImportError as exc:  # pragma: no cover - requirements.txt pins it
        raise ImportError(
            "transmil needs the nystrom-attention package: pip install nystrom-attention==0.0.14 einops==0.8.2"
        ) from exc
    return NystromAttention


class TransLayer(nn.Module):
    """Pre-norm Nystrom self-attention with a residual connection (no feed-forward, as in the paper)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        num_landmarks: int,
        pinv_iterations: int,
        residual_conv_kernel: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = _nystrom_attention()(
            dim=dim,
            dim_head=dim_head,
            heads=heads,
            num_landmarks=num_landmarks,
            pinv_iterations=pinv_iterations,
            residual=True,
            residual_conv_kernel=residual_conv_kernel,
            dropout=dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.norm(x))


class PPEG(nn.Module):
    """Pyramid position encoding: the patch grid plus three depth-wise convolutions of it.

    Several kernel sizes let a token see neighbours at several ranges; the class token is passed through.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 7, 1, 7 // 2, groups=dim)
        self.proj1 = nn.Conv2d(dim, dim, 5, 1, 5 // 2, groups=dim)
        self.proj2 = nn.Conv2d(dim, dim, 3, 1, 3 // 2, groups=dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        b, _, c = x.shape
        cls_token, tokens = x[:, :1], x[:, 1:]
        grid = tokens.transpose(1, 2).reshape(b, c, height, width)
        grid = grid + self.proj(grid) + self.proj1(grid) + self.proj2(grid)
        return torch.cat([cls_token, grid.flatten(2).transpose(1, 2)], dim=1)


class TransMIL(MILModel):
    model_type = "transmil"

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        embed_dim: int = 512,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_head: int | None = None,
        num_landmarks: int = 256,
        pinv_iterations: int = 6,
        residual_conv_kernel: int = 33,
        dropout: float = 0.25,
    ) -> None:
        super().__init__(in_dim, n_classes)
        if num_layers < 1:
            raise ValueError("transmil needs at least one transformer layer")
        if dim_head is None:
            if embed_dim % num_heads:
                from ..errors import ConfigError

                raise ConfigError(
                    f"model_arguments.num_heads: embed_dim {embed_dim} is not divisible by num_heads {num_heads}"
                )
            dim_head = embed_dim // num_heads
        self.patch_embed = nn.Sequential(nn.Linear(in_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout))
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))
        layer_args = (embed_dim, num_heads, dim_head, num_landmarks, pinv_iterations, residual_conv_kernel, dropout)
        self.blocks = nn.ModuleList([TransLayer(*layer_args) for _ in range(num_layers)])
        self.pos_layer = PPEG(embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        self.classifier = nn.Linear(embed_dim, n_classes)
        self._config = {
            "in_dim": in_dim, "n_classes": n_classes, "embed_dim": embed_dim, "num_heads": num_heads,
            "num_layers": num_layers, "dim_head": dim_head, "num_landmarks": num_landmarks,
            "pinv_iterations": pinv_iterations, "residual_conv_kernel": residual_conv_kernel, "dropout": dropout,
        }

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        h = self.patch_embed(x).unsqueeze(0)
        side = math.ceil(math.sqrt(n))
        pad = side * side - n
        if pad:
            # Square grid for PPEG; repeating real patches keeps the padding in-distribution.
            reps = math.ceil(pad / n)
            h = torch.cat([h, h.repeat(1, reps, 1)[:, :pad]], dim=1)
        h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
        h = self.blocks[0](h)
        attention = h[0, 1 : n + 1] @ h[0, 0]
        h = self.pos_layer(h, side, side)
        for block in self.blocks[1:]:
            h = block(h)
        logits = self.classifier(self.norm(h)[0, 0])
        return logits, attention


def build(in_dim: int, n_classes: int, options: Mapping[str, Any]) -> TransMIL:
    names = ("embed_dim", "num_heads", "num_layers", "dim_head", "num_landmarks", "pinv_iterations",
             "residual_conv_kernel", "dropout")
    return TransMIL(in_dim, n_classes, **{k: options[k] for k in names if options.get(k) is not None})


def infer(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Widths, heads, depth and residual kernel a TransMIL checkpoint reveals.

    The landmark count and pseudo-inverse iterations have no weights, so they keep their defaults.
    """
    out: dict[str, Any] = {}
    proj = linear_shape(sd, "patch_embed.0.weight")
    if proj is not None:
        out["embed_dim"], out["in_dim"] = proj
    layers = 0
    while shape_of(sd, f"blocks.{layers}.norm.weight") is not None:
        layers += 1
    if layers:
        out["num_layers"] = layers
    res = shape_of(sd, "blocks.0.attention.res_conv.weight")
    if res is not None and len(res) == 4:
        out["num_heads"] = res[0]
        out["residual_conv_kernel"] = res[2]
        qkv = shape_of(sd, "blocks.0.attention.to_qkv.weight")
        if qkv is not None and len(qkv) == 2 and qkv[0] % (3 * res[0]) == 0:
            out["dim_head"] = qkv[0] // (3 * res[0])
    clf = linear_shape(sd, "classifier.weight")
    if clf is not None:
        out["n_classes"] = clf[0]
    return out
