"""One bag in, prediction and per-patch attention out, as numpy for the blockmap writer.

Every bag is scored as one bag: TransMIL's and DSMIL's attention of a patch depends on every other
patch, and every model's prediction on all of them. Inside the models, the per-patch layers run a
chunk of patches at a time where the result is the same (scoring.models.base.attention_pool), so
memory is bounded by the model, not the bag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from scoremap.memory import return_large_blocks

from .errors import FeatureError
from .models.base import chunks


@dataclass(frozen=True)
class BagScores:
    """What a model says about one slide.

    `attention` is what goes into the blockmap's `attention_scores`: for per-class models it is the
    predicted class's column of `attention_per_class`, because that is the map that explains the call.
    """

    logits: np.ndarray
    probs: np.ndarray
    pred: int
    attention: np.ndarray
    attention_per_class: np.ndarray | None


def _as_tensor(features: np.ndarray | torch.Tensor, in_dim: int | None) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        x = features
    else:
        try:
            x = torch.from_numpy(np.asarray(features))
        except (TypeError, ValueError) as exc:
            raise FeatureError(
                f"features must be a numeric (N, D) array; got {type(features).__name__}: {exc}"
            ) from exc
    if x.dim() != 2:
        raise FeatureError(
            f"features must be a 2-D (N, D) array of patch features; got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise FeatureError("the bag is empty: features have 0 patches")
    if in_dim is not None and x.shape[1] != in_dim:
        raise FeatureError(
            f"features are {x.shape[1]} wide but the model expects {in_dim}-wide features "
            f"(expected (N, {in_dim}), got {tuple(x.shape)}); "
            "were they made by the encoder the model was trained on?"
        )
    if not (
        x.is_floating_point()
        or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
    ):
        raise FeatureError(f"features must be numeric; got dtype {x.dtype}")
    x = x.detach().to(
        "cpu", torch.float32
    )  # no copy when it already is (features are read as float32)
    bad = sum(int((~torch.isfinite(x[rows])).any(dim=1).sum()) for rows in chunks(x.shape[0]))
    if bad:  # checked a chunk at a time: torch.isfinite of a whole 200,000 x 1024 bag takes 1.4 GB
        raise FeatureError(f"features hold NaN or infinite values in {bad} of {x.shape[0]} patches")
    return x


def score_bag(model: torch.nn.Module, features: np.ndarray | torch.Tensor) -> BagScores:
    """Score one bag in eval mode without gradients; float32 throughout, float64 logits/probs."""
    return_large_blocks()  # chunk-sized temporaries are returned, not kept in the heap
    in_dim = getattr(model, "in_dim", None)
    x = _as_tensor(features, in_dim)
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits_t, attention_t = model.forward_with_attention(x)  # type: ignore[operator]
    finally:
        if was_training:
            model.train()
    logits = logits_t.detach().cpu().double().numpy().reshape(-1)
    shifted = logits - logits.max()
    probs = np.exp(shifted) / np.exp(shifted).sum()
    pred = int(np.argmax(logits))
    attn = attention_t.detach().cpu().float().numpy().astype(np.float32, copy=False)
    per_class: np.ndarray | None = None
    if attn.ndim == 2:
        per_class = np.ascontiguousarray(attn)
        attention = np.ascontiguousarray(attn[:, pred])
    else:
        attention = np.ascontiguousarray(attn.reshape(-1))
    return BagScores(
        logits=logits, probs=probs, pred=pred, attention=attention, attention_per_class=per_class
    )
