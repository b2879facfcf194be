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
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import MILModel, chunks, linear_shape, shape_of


def moore_penrose_iter_pinv(x: torch.Tensor, iters: int) -> torch.Tensor:
    """The package's iterative pseudo-inverse (imported when first needed, as the module is)."""
    from nystrom_attention.nystrom_attention import moore_penrose_iter_pinv as pinv

    return pinv(x, iters)


def _nystrom_attention() -> type[nn.Module]:
    try:
        from nystrom_attention import NystromAttention
    except ImportError as exc:  # pragma: no cover - requirements.txt pins it
        raise ImportError(
            "transmil needs the nystrom-attention package: "
            "pip install nystrom-attention==0.0.14 einops==0.8.2"
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
                    f"model_arguments.num_heads: embed_dim {embed_dim} "
                    f"is not divisible by num_heads {num_heads}"
                )
            dim_head = embed_dim // num_heads
        self.patch_embed = nn.Sequential(
            nn.Linear(in_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))
        layer_args = (
            embed_dim,
            num_heads,
            dim_head,
            num_landmarks,
            pinv_iterations,
            residual_conv_kernel,
            dropout,
        )
        self.blocks = nn.ModuleList([TransLayer(*layer_args) for _ in range(num_layers)])
        self.pos_layer = PPEG(embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        self.classifier = nn.Linear(embed_dim, n_classes)
        self._config = {
            "in_dim": in_dim,
            "n_classes": n_classes,
            "embed_dim": embed_dim,
            "num_heads": num_heads,
            "num_layers": num_layers,
            "dim_head": dim_head,
            "num_landmarks": num_landmarks,
            "pinv_iterations": pinv_iterations,
            "residual_conv_kernel": residual_conv_kernel,
            "dropout": dropout,
        }

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] > self.patch_chunk and not torch.is_grad_enabled():
            return self._inference(x)
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

    def _inference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward_with_attention` for large bags without gradients, in one token buffer: the same
        scores (float64 runs of both paths agree to 3e-15).

        Where the plain path's memory goes at 200,000 x 1024 (11 GB): the padded token copies
        (`repeat`, two `cat`s), and inside each Nystrom layer the 1536-wide qkv projection, the padded
        input, the (heads x tokens x 256) similarity and softmax matrices (0.8 GB each, four of them
        alive at once) and their product, then PPEG's three full-size convolution outputs. Here the
        tokens live in one buffer, filled in place: the embedding a chunk of patches at a time, each
        Nystrom layer one head at a time with its token-by-landmark matrices a chunk of rows at a
        time (`nystrom_inference`), PPEG a block of channels at a time (it is depth-wise), and the
        final norm on the class token only (LayerNorm is per token).
        """
        n = x.shape[0]
        side = math.ceil(math.sqrt(n))
        embed = self.patch_embed[0]
        tokens = x.new_empty((1 + side * side, embed.out_features))
        tokens[0] = self.cls_token[0, 0]
        for rows in chunks(n, self.patch_chunk):
            tokens[1 + rows.start : 1 + rows.stop] = torch.relu(
                embed(x[rows])
            )  # dropout: identity in eval
        for start in range(n, side * side, n):  # square grid padding: the first patches repeated
            stop = min(side * side, start + n)
            tokens[1 + start : 1 + stop] = tokens[1 : 1 + stop - start]
        _residual_nystrom(self.blocks[0], tokens, self.patch_chunk)
        attention = tokens[1 : n + 1] @ tokens[0]
        _ppeg_in_place(self.pos_layer, tokens, side)
        for block in self.blocks[1:]:
            _residual_nystrom(block, tokens, self.patch_chunk)
        logits = self.classifier(self.norm(tokens[:1])[0])
        return logits, attention


def _residual_nystrom(layer: TransLayer, tokens: torch.Tensor, chunk: int) -> None:
    """tokens += attention(norm(tokens)), in place (TransLayer's forward for one bag, no gradients)."""
    out = nystrom_inference(layer.attention, layer.norm(tokens), chunk)
    for rows in chunks(tokens.shape[0], chunk):
        tokens[rows] += layer.attention.to_out(out[rows])


def nystrom_inference(attn: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """What `NystromAttention.forward` computes for one unmasked sequence x (T, dim), before its
    output projection (`to_out`), as (T, heads * dim_head), with memory bounded by one head.

    Same math: the sequence is padded in front to a multiple of the landmark count with zero rows,
    landmarks are means of consecutive groups of the padded sequence, and out = softmax(q k_l^T)
    pinv(softmax(q_l k_l^T)) softmax(q_l k^T) v + conv(v). The zero rows are not materialised:
    they only move the landmark groups, add `padding` zero logits to each row of the third softmax
    (and nothing to its product with v), and are what the residual convolution's own zero padding
    sees anyway; their output rows are the ones the package drops. The residual convolution (a
    K x 1 kernel per head along the sequence) is summed as K shifted copies: PyTorch's convolution
    would unfold a (K x tokens x dim_head) matrix, 3.4 GB per head at 200,000 tokens.
    """
    t, _ = x.shape
    heads, m = attn.heads, attn.num_landmarks
    dim_head = attn.to_qkv.weight.shape[0] // (3 * heads)
    inner = heads * dim_head
    padding = (m - t % m) % m
    group = (t + padding) // m  # patches per landmark
    landmark_of = torch.div(
        torch.arange(t, device=x.device) + padding, group, rounding_mode="floor"
    )
    w_qkv = attn.to_qkv.weight
    w_q, w_k, w_v = w_qkv[:inner], w_qkv[inner : 2 * inner], w_qkv[2 * inner :]
    conv = attn.res_conv if attn.residual else None
    # landmarks are group means of q and k rows, and q, k are linear in x: means of x, projected
    x_land = x.new_zeros((m, x.shape[1])).index_add_(0, landmark_of, x).div_(group)
    q_land = (x_land @ w_q.T).mul_(attn.scale).reshape(m, heads, dim_head).transpose(0, 1)
    k_land = (x_land @ w_k.T).reshape(m, heads, dim_head).transpose(0, 1)
    # the package inverts every head's landmark kernel in one call (one scale for all heads)
    middle = moore_penrose_iter_pinv(
        torch.softmax(q_land @ k_land.transpose(-1, -2), dim=-1), attn.pinv_iterations
    )
    out = x.new_empty((t, inner))
    for hd in range(heads):
        cols = slice(hd * dim_head, (hd + 1) * dim_head)
        k = x @ w_k[cols].T
        v = x @ w_v[cols].T
        logits3 = (
            q_land[hd] @ k.T
        )  # (m, t): landmarks over the real keys; the zero keys give logit 0
        del k
        top = logits3.amax(dim=-1, keepdim=True)
        if padding:
            top = torch.clamp_min(top, 0.0)
        logits3.sub_(top).exp_()
        denominator = logits3.sum(dim=-1, keepdim=True) + padding * torch.exp(-top)
        right = logits3.div_(denominator) @ v  # (m, dim_head)
        del logits3
        for rows in chunks(t, chunk):
            q = (x[rows] @ w_q[cols].T).mul_(attn.scale)
            left = torch.softmax(q @ k_land[hd].T, dim=-1) @ middle[hd]
            out[rows, cols] = left @ right
        if conv is not None:  # depth-wise along the sequence: K shifted, weighted copies of v
            kernel = conv.weight[hd, 0, :, 0]
            reach = conv.padding[0]
            for offset, weight in enumerate(kernel.tolist()):
                shift = offset - reach  # out[i] += w * v[i + shift], zero outside the sequence
                if abs(shift) >= t:
                    continue
                src = slice(max(0, shift), min(t, t + shift))
                dst = slice(max(0, -shift), min(t, t - shift))
                out[dst, cols] += weight * v[src]
    return out


def _ppeg_in_place(ppeg: PPEG, tokens: torch.Tensor, side: int, block: int = 64) -> None:
    """PPEG on the patch tokens, written back into them: grid + three depth-wise convolutions, a
    block of channels at a time (depth-wise: each channel only sees itself)."""
    dim = tokens.shape[1]
    for start in range(0, dim, block):
        channels = slice(start, min(dim, start + block))
        grid = tokens[1:, channels].T.reshape(1, -1, side, side).contiguous()
        mixed = grid.clone()
        for conv in (ppeg.proj, ppeg.proj1, ppeg.proj2):
            mixed += torch.nn.functional.conv2d(
                grid,
                conv.weight[channels],
                conv.bias[channels],
                padding=conv.padding,
                groups=grid.shape[1],
            )
        tokens[1:, channels] = mixed.reshape(grid.shape[1], -1).T


def build(in_dim: int, n_classes: int, options: Mapping[str, Any]) -> TransMIL:
    names = (
        "embed_dim",
        "num_heads",
        "num_layers",
        "dim_head",
        "num_landmarks",
        "pinv_iterations",
        "residual_conv_kernel",
        "dropout",
    )
    return TransMIL(
        in_dim, n_classes, **{k: options[k] for k in names if options.get(k) is not None}
    )


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
