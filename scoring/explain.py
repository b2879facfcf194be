"""Explanation maps that follow the model's decision, and how faithful each map is.

Attention says where the model looked, not what pushed its logit: a patch with high attention and a
value near zero changes nothing. The maps here are per patch (N,), signed, for one target class c
with logit f(B) and probability p_c(B):

- `contribution`: the exact share of each patch in f(B) for models whose head after attention
  pooling is linear (sum over patches + `bias` = f(B));
- `occlusion`: f(B) - f(B without patch i), in closed form for attention pooling (removing a patch
  renormalises the softmax over the others: no N forward passes);
- `integrated_gradients`: zero baseline, the whole bag scaled together, midpoint rule;
- faithfulness: the patch-dropping curve p_c(B minus the top floor(qN) patches of a map) for
  q = 0, 0.05, ..., 0.95 and its mean, the AUPC (lower = more faithful), also for five random orders.

The per-patch layers run a chunk at a time (`MILModel.patch_chunk`), as in scoring; the pooled
sums over patches are taken in float64 because closed-form occlusion subtracts one patch's term
from sums over hundreds of thousands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .config.model import ExplainConfig
from .config.schema import check_explain_methods
from .errors import ConfigError
from .models.abmil import ABMIL
from .models.base import MILModel, chunks
from .models.clam import CLAM
from .models.dsmil import DSMIL

#: The patch-dropping fractions q = 0, 0.05, ..., 0.95 (as k/20, so floor(qN) is exact).
DROP_STEPS = 20
#: How many random orders the `random` baseline averages, all drawn from one default_rng(0).
RANDOM_ORDERS = 5


@dataclass(frozen=True)
class Explanation:
    """The maps of one bag for class `target`, each (N,) float32; `faithfulness` is the blockmap's
    JSON attribute (None when not asked)."""

    target: int
    maps: dict[str, np.ndarray]
    bias: float | None  # the contribution's constant term b_c (None without contribution)
    faithfulness: dict[str, Any] | None


@dataclass(frozen=True)
class PoolingHead:
    """An attention-pooling model reduced to what its logits need per patch.

    logit_c(S) = bias_c + sum_{i in S} softmax_S(raw[:, branch[c]])_i * values[i, c] for any subset
    S of the bag: ABMIL and CLAM-SB (one branch), CLAM-MB (class c's own branch and classifier).
    """

    raw: torch.Tensor  # (N, branches) float64: pre-softmax attention
    values: torch.Tensor  # (N, C) float64: W_c . h_i
    bias: torch.Tensor  # (C,) float64
    branch: tuple[int, ...]  # the attention branch each class is pooled with

    def weights(self, c: int, keep: torch.Tensor | None = None) -> torch.Tensor:
        a = self.raw[:, self.branch[c]]
        return torch.softmax(a if keep is None else a[keep], dim=0)

    def logits(self, keep: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                self.bias[c] + self.weights(c, keep) @ self.values[keep, c]
                for c in range(len(self.branch))
            ]
        )

    def contribution(self, c: int) -> torch.Tensor:
        return self.weights(c) * self.values[:, c]

    def occlusion(self, c: int) -> torch.Tensor:
        """f(B) - f(B without i) for every i from the softmax sums: with e_i = exp(a_i - max),
        f(B without i) = b_c + (S - e_i v_i) / (Z - e_i). Z - e_i >= 1 except at the top patch,
        whose case is summed directly (Z - 1 could cancel to nothing)."""
        a, v, b = self.raw[:, self.branch[c]], self.values[:, c], self.bias[c]
        n = a.shape[0]
        e = torch.exp(a - a.max())
        z, s = e.sum(), (e * v).sum()
        full = b + s / z
        if n == 1:  # the empty bag pools to nothing: only the bias is left
            return (full - b).reshape(1)
        without = b + (s - e * v) / (z - e)
        top = int(torch.argmax(a))
        others = torch.arange(n, device=a.device) != top
        without[top] = b + torch.softmax(a[others], dim=0) @ v[others]
        return full - without


def _linear_parts(
    model: MILModel,
) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """(embed, attend, W (C, E), b (C,), branch per class) of an attention-pooling model."""
    if isinstance(model, ABMIL):
        w, b = model.classifier.weight, model.classifier.bias
        return model.patch_embed, model.global_attn, w, b, (0,) * model.n_classes
    if isinstance(model, CLAM):
        embed, attend = model.attention_net[:-1], model.attention_net[-1]
        if model.multi_branch:
            clfs = list(model.classifiers)  # type: ignore[arg-type]
            w = torch.cat([clf.weight for clf in clfs])
            b = torch.cat([clf.bias for clf in clfs])
            return embed, attend, w, b, tuple(range(model.n_classes))
        clf = model.classifiers
        return embed, attend, clf.weight, clf.bias, (0,) * model.n_classes  # type: ignore[return-value]
    raise TypeError(f"{type(model).__name__} has no linear head after attention pooling")


def pooling_head(model: MILModel, x: torch.Tensor) -> PoolingHead:
    """One streamed pass of the per-patch layers; nothing of width E is kept."""
    embed, attend, w, b, branch = _linear_parts(model)
    raws, values = [], []
    for rows in chunks(x.shape[0], model.patch_chunk):
        h = embed(x[rows])
        raws.append(attend(h).double())
        values.append((h @ w.transpose(0, 1)).double())
    return PoolingHead(torch.cat(raws), torch.cat(values), b.detach().double(), branch)


class DsmilParts:
    """DSMIL's logit of class c split over patches.

    logit_c = (bag_c + max_c) / 2 with max_c the instance score of c's critical patch and
    bag_c = sum_{c'} W[c, c'] . LayerNorm(p_{c'}) + b_c, p_{c'} = sum_i w^{c'}_i v_i. With the bag's
    own LayerNorm statistics fixed, LayerNorm(p) = gamma * (p - mean p) / sigma + beta is linear in
    the w_i, so each patch's share is 1/2 sum_{c'} w^{c'}_i (W[c, c'] * gamma / sigma_{c'}) .
    (v_i - mean v_i), and the critical patch adds max_c / 2.
    """

    def __init__(self, model: DSMIL, x: torch.Tensor) -> None:
        self.model, self.x = model, x
        self.logits, attention = model.forward_with_attention(x)
        self.w = attention.double()  # (N, C)
        scores = torch.cat(
            [
                model.i_classifier(model.patch_embed(x[r]))
                for r in chunks(x.shape[0], model.patch_chunk)
            ]
        )
        self.max_scores, self.critical = scores.max(dim=0)
        pooled = sum(
            (self.w[r].transpose(0, 1) @ self.v(r) for r in self._rows()),
            torch.zeros(
                model.n_classes,
                self.model.b_classifier.norm.normalized_shape[0],
                dtype=torch.float64,
                device=x.device,
            ),
        )
        self.pooled = pooled  # (C, E), before LayerNorm
        norm = model.b_classifier.norm
        self.gamma, self.beta, self.eps = norm.weight.double(), norm.bias.double(), float(norm.eps)
        self.sigma = torch.sqrt(pooled.var(dim=1, unbiased=False) + self.eps)  # (C,)

    def _rows(self) -> list[slice]:
        return chunks(self.x.shape[0], max(1, self.model.patch_chunk // 8))

    def v(self, rows: slice) -> torch.Tensor:
        return self.model.b_classifier.v(self.model.patch_embed(self.x[rows])).double()

    def conv(self, c: int) -> tuple[torch.Tensor, float]:
        clf = self.model.classifier
        return clf.weight[c].double(), float(clf.bias[c])  # (C', E)

    def contribution(self, c: int) -> tuple[torch.Tensor, float]:
        weight, b = self.conv(c)
        u = weight * self.gamma / self.sigma[:, None]  # (C', E)
        parts = []
        for rows in self._rows():
            v = self.v(rows)
            centred = v - v.mean(dim=1, keepdim=True)
            parts.append(0.5 * (self.w[rows] * (centred @ u.transpose(0, 1))).sum(dim=1))
        out = torch.cat(parts)
        out[int(self.critical[c])] += 0.5 * float(self.max_scores[c])
        return out, 0.5 * (float((weight * self.beta).sum()) + b)

    def bag_logit(self, pooled: torch.Tensor, c: int) -> torch.Tensor:
        """Logit c from pooled rows (..., C', E) with the critical instances unchanged."""
        weight, b = self.conv(c)
        mean = pooled.mean(dim=-1, keepdim=True)
        var = pooled.var(dim=-1, unbiased=False, keepdim=True)
        normed = (pooled - mean) / torch.sqrt(var + self.eps) * self.gamma + self.beta
        return 0.5 * ((normed * weight).sum(dim=(-2, -1)) + b) + 0.5 * float(self.max_scores[c])

    def occlusion(self, c: int) -> torch.Tensor:
        """Removing a non-critical patch renormalises each branch's softmax: p_{-i} = (p - w_i v_i)
        / (1 - w_i); removing a critical patch changes the critical instances, so that bag is
        run again through the model."""
        n = self.x.shape[0]
        full = float(self.logits[c])
        if n == 1:
            return torch.tensor([full], dtype=torch.float64)
        parts = []
        for rows in self._rows():
            w = self.w[rows][:, :, None]  # (n, C', 1)
            reduced = (self.pooled[None] - w * self.v(rows)[:, None, :]) / (1 - w)
            parts.append(full - self.bag_logit(reduced, c))
        out = torch.cat(parts)
        for i in sorted({int(k) for k in self.critical}):
            keep = torch.arange(n, device=self.x.device) != i
            logits, _ = self.model.forward_with_attention(self.x[keep])
            out[i] = full - float(logits[c])
        return out


def resolve_target(target: str | int, pred: int, class_names: Sequence[str]) -> int:
    """The class explained: the predicted one, or the one `explain_arguments.target` names."""
    if target == "predicted":
        return pred
    if isinstance(target, str) and target in class_names:
        return list(class_names).index(target)
    index = int(target) if isinstance(target, int) or target.isdigit() else -1
    if 0 <= index < len(class_names):
        return index
    raise ConfigError(
        f"explain_arguments.target: {target!r} is not 'predicted', a class name "
        f"({', '.join(class_names)}) or a class index 0..{len(class_names) - 1}"
    )


def integrated_gradients(
    model: MILModel, x: torch.Tensor, c: int, steps: int
) -> tuple[torch.Tensor, float]:
    """IG_i = sum_d x_id (1/m) sum_k df/dx_id (x (k - 1/2) / m) and the relative completeness gap
    |sum_i IG_i - (f(x) - f(0))| / |f(x) - f(0)|. One step at a time: memory is one bag's forward
    and backward, whatever m."""
    total = torch.zeros_like(x)
    with torch.enable_grad():
        for k in range(1, steps + 1):
            scaled = (x * ((k - 0.5) / steps)).requires_grad_(True)
            logits, _ = model.forward_with_attention(scaled)
            (grad,) = torch.autograd.grad(logits[c], scaled)
            total += grad
    ig = (x.double() * total.double()).sum(dim=1) / steps
    with torch.inference_mode():
        rise = float(model.forward_with_attention(x)[0][c]) - float(
            model.forward_with_attention(torch.zeros_like(x))[0][c]
        )
    gap = abs(float(ig.sum()) - rise) / max(abs(rise), 1e-12)
    return ig, gap


def drop_curve(order: np.ndarray, prob_of: Any, n: int) -> list[float]:
    """p_c of the bag without the first floor(qN) patches of `order`, q = 0, 1/20, ..., 19/20."""
    curve = []
    for k in range(DROP_STEPS):
        keep = np.sort(order[(k * n) // DROP_STEPS :])
        curve.append(float(prob_of(torch.from_numpy(keep))))
    return curve


def faithfulness(maps: dict[str, np.ndarray], prob_of: Any, n: int, target: int) -> dict[str, Any]:
    """The patch-dropping curve and AUPC of every map (descending, ties by patch index) and of
    the mean over RANDOM_ORDERS permutations of one numpy.random.default_rng(0)."""
    out: dict[str, Any] = {}
    for name, values in maps.items():
        order = np.argsort(-np.asarray(values, np.float64), kind="stable")
        curve = drop_curve(order, prob_of, n)
        out[name] = {"aupc": float(np.mean(curve)), "curve": curve}
    rng = np.random.default_rng(0)
    curves = [drop_curve(rng.permutation(n), prob_of, n) for _ in range(RANDOM_ORDERS)]
    out["random"] = {
        "aupc": float(np.mean([np.mean(cv) for cv in curves])),
        "curve": [float(v) for v in np.mean(curves, axis=0)],
    }
    return {"target": target, "q": [k / DROP_STEPS for k in range(DROP_STEPS)], "maps": out}


def explain_bag(
    model: MILModel,
    x: torch.Tensor,
    attention: np.ndarray,
    target: int,
    settings: ExplainConfig,
) -> Explanation:
    """Every map `settings.methods` asks for, of the checked bag x (N, D) on the model's device,
    and their faithfulness next to `attention`'s (the map the blockmap already holds)."""
    check_explain_methods(None, model.model_type, settings.methods)
    was_training = model.training
    model.eval()
    try:
        return _explain(model, x, attention, target, settings)
    finally:
        if was_training:
            model.train()


def _explain(
    model: MILModel, x: torch.Tensor, attention: np.ndarray, target: int, settings: ExplainConfig
) -> Explanation:
    n = x.shape[0]
    maps: dict[str, torch.Tensor] = {}
    bias: float | None = None
    gap: float | None = None
    head: PoolingHead | None = None
    with torch.inference_mode():
        if isinstance(model, (ABMIL, CLAM)):
            head = pooling_head(model, x)
            if "contribution" in settings.methods:
                maps["contribution"] = head.contribution(target)
                bias = float(head.bias[target])
            if "occlusion" in settings.methods:
                maps["occlusion"] = head.occlusion(target)
        elif isinstance(model, DSMIL) and {"contribution", "occlusion"} & set(settings.methods):
            parts = DsmilParts(model, x)
            if "contribution" in settings.methods:
                maps["contribution"], bias = parts.contribution(target)
            if "occlusion" in settings.methods:
                maps["occlusion"] = parts.occlusion(target)
    if "integrated_gradients" in settings.methods:
        maps["integrated_gradients"], gap = integrated_gradients(
            model, x, target, settings.ig_steps
        )
    ordered = {m: maps[m].detach().cpu().numpy().astype(np.float32) for m in settings.methods}
    report: dict[str, Any] | None = None
    if settings.faithfulness:
        report = faithfulness(
            {"attention": attention, **ordered}, _prob_of(model, x, head, target), n, target
        )
        report["ig_completeness"] = gap
    return Explanation(target=target, maps=ordered, bias=bias, faithfulness=report)


def _prob_of(model: MILModel, x: torch.Tensor, head: PoolingHead | None, target: int) -> Any:
    """p_target of a sub-bag given by its patch indices: from the pooling head where there is one
    (no re-embedding), else by running the model on those patches."""

    def prob(keep: torch.Tensor) -> float:
        keep = keep.to(x.device)
        with torch.inference_mode():
            if head is not None:
                logits = head.logits(keep)
            else:
                logits = model.forward_with_attention(x[keep])[0].double()
        return float(torch.softmax(logits, dim=0)[target])

    return prob


__all__ = ["Explanation", "explain_bag", "faithfulness", "resolve_target"]
