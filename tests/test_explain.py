"""Explanation maps against the definitions, computed here independently in float64.

The reference runs the model classes themselves in float64 (a double copy): occlusion literally
removes each patch and re-runs the model, IG is an autograd loop over the midpoint steps, AUPC a
direct loop over the drop fractions. Only the model classes are shared with the code under test.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from scoring.config import parse_config
from scoring.config.model import ExplainConfig
from scoring.errors import ConfigError
from scoring.explain import explain_bag
from scoring.models import build_model

N, D = 40, 16
MODELS = ("abmil", "clam_sb", "clam_mb", "dsmil")
ALL = ("contribution", "occlusion", "integrated_gradients")


def _model_and_bag(model_type: str, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(model_type, in_dim=D, n_classes=2).eval()
    with torch.no_grad():  # larger weights than the default init: logits well away from 0
        for p in model.parameters():
            p.mul_(2.0)
    return model, torch.randn(N, D)


def _logit(model64: torch.nn.Module, x: torch.Tensor, c: int) -> float:
    with torch.no_grad():
        return float(model64.forward_with_attention(x)[0][c])


def _prob(model64: torch.nn.Module, x: torch.Tensor, c: int) -> float:
    with torch.no_grad():
        return float(torch.softmax(model64.forward_with_attention(x)[0], dim=0)[c])


def _reference_contribution(model_type: str, m: torch.nn.Module, x: torch.Tensor, c: int):
    """w_i (W_c . h_i) written out from the submodules, and the constant b_c."""
    with torch.no_grad():
        if model_type == "abmil":
            h = m.patch_embed(x)
            w = torch.softmax(m.global_attn(h)[:, 0], dim=0)
            return (w * (h @ m.classifier.weight[c])).numpy(), float(m.classifier.bias[c])
        if model_type in ("clam_sb", "clam_mb"):
            h = m.attention_net[:-1](x)
            raw = m.attention_net[-1](h)
            if model_type == "clam_sb":
                w = torch.softmax(raw[:, 0], dim=0)
                return (w * (h @ m.classifiers.weight[c])).numpy(), float(m.classifiers.bias[c])
            w = torch.softmax(raw[:, c], dim=0)
            clf = m.classifiers[c]
            return (w * (h @ clf.weight[0])).numpy(), float(clf.bias[0])
        # dsmil: bag stream with the bag's LayerNorm statistics held, plus the critical patch
        h = m.patch_embed(x)
        scores = m.i_classifier(h)
        top, crit = scores.max(dim=0)
        q = m.b_classifier.q(h)
        att = torch.softmax(q @ q[crit].T / math.sqrt(q.shape[1]), dim=0)  # (N, C)
        v = m.b_classifier.v(h)
        norm = m.b_classifier.norm
        pooled = att.T @ v
        sigma = torch.sqrt(pooled.var(dim=1, unbiased=False) + norm.eps)
        weight = m.classifier.weight[c]  # (C, E)
        out = np.zeros(x.shape[0])
        for i in range(x.shape[0]):
            for k in range(att.shape[1]):
                centred = v[i] - v[i].mean()
                out[i] += 0.5 * float(att[i, k] * (weight[k] * norm.weight / sigma[k]) @ centred)
        out[int(crit[c])] += 0.5 * float(top[c])
        const = 0.5 * (float((weight * norm.bias).sum()) + float(m.classifier.bias[c]))
        return out, const


def _reference_occlusion(m: torch.nn.Module, x: torch.Tensor, c: int) -> np.ndarray:
    full = _logit(m, x, c)
    return np.array(
        [full - _logit(m, torch.cat([x[:i], x[i + 1 :]]), c) for i in range(x.shape[0])]
    )


def _reference_ig(m: torch.nn.Module, x: torch.Tensor, c: int, steps: int) -> np.ndarray:
    total = torch.zeros_like(x)
    for k in range(1, steps + 1):
        xs = (x * (k - 0.5) / steps).clone().requires_grad_(True)
        m.forward_with_attention(xs)[0][c].backward()
        total += xs.grad
    return (x * total / steps).sum(dim=1).detach().numpy()


def _reference_aupc(m: torch.nn.Module, x: torch.Tensor, c: int, order: np.ndarray) -> float:
    n = x.shape[0]
    values = []
    for k in range(20):
        q = 0.05 * k
        removed = set(order[: math.floor(q * n + 1e-9)].tolist())
        keep = [i for i in range(n) if i not in removed]
        values.append(_prob(m, x[keep], c))
    return float(np.mean(values))


def _descending(values: np.ndarray) -> np.ndarray:
    return np.array(sorted(range(len(values)), key=lambda i: (-float(values[i]), i)))


def _close(got: np.ndarray, want: np.ndarray, rel: float = 1e-4) -> None:
    scale = float(np.max(np.abs(want)))
    assert np.max(np.abs(np.asarray(got, np.float64) - want)) <= rel * scale, (got, want)


def _explain(model, x, methods=ALL, steps=32):
    with torch.no_grad():
        logits, att = model.forward_with_attention(x)
    c = int(logits.argmax())
    attention = (att if att.dim() == 1 else att[:, c]).numpy()
    settings = ExplainConfig(tuple(methods), steps, True, "predicted", "auto")
    return explain_bag(model, x, attention, c, settings), attention, c


@pytest.mark.parametrize("model_type", MODELS)
def test_every_map_and_aupc_match_the_definitions(model_type):
    model, x = _model_and_bag(model_type)
    got, attention, c = _explain(model, x)
    m64, x64 = copy.deepcopy(model).double(), x.double()
    f = _logit(m64, x64, c)

    contribution, const = _reference_contribution(model_type, m64, x64, c)
    _close(got.maps["contribution"], contribution)
    assert abs(
        float(got.maps["contribution"].astype(np.float64).sum()) + got.bias - f
    ) <= 1e-4 * max(1.0, abs(f))
    assert abs(contribution.sum() + const - f) < 1e-9  # the reference itself is a decomposition
    _close(got.maps["occlusion"], _reference_occlusion(m64, x64, c))
    ig = _reference_ig(m64, x64, c, 32)
    _close(got.maps["integrated_gradients"], ig)
    rise = f - _logit(m64, torch.zeros_like(x64), c)
    gap = abs(ig.sum() - rise) / abs(rise)
    assert abs(got.faithfulness["ig_completeness"] - gap) <= 1e-3
    if model_type != "dsmil":  # DSMIL's critical instance jumps along the path: f is not smooth
        assert gap <= 0.05

    report = got.faithfulness
    assert report["target"] == c and len(report["q"]) == 20
    for name, values in {"attention": attention, **got.maps}.items():
        want = _reference_aupc(m64, x64, c, _descending(values))
        assert abs(report["maps"][name]["aupc"] - want) <= 1e-6, name
    rng = np.random.default_rng(0)
    orders = [rng.permutation(N) for _ in range(5)]
    want_random = np.mean([_reference_aupc(m64, x64, c, o) for o in orders])
    assert abs(report["maps"]["random"]["aupc"] - want_random) <= 1e-6


def test_a_target_class_other_than_the_predicted_one():
    model, x = _model_and_bag("clam_mb", seed=3)
    with torch.no_grad():
        logits, att = model.forward_with_attention(x)
    other = 1 - int(logits.argmax())
    settings = ExplainConfig(("contribution",), 32, False, other, "auto")
    got = explain_bag(model, x, att[:, other].numpy(), other, settings)
    m64 = copy.deepcopy(model).double()
    want, _ = _reference_contribution("clam_mb", m64, x.double(), other)
    _close(got.maps["contribution"], want)
    assert got.faithfulness is None


def _config(tmp_path, explain) -> dict:
    raw = {
        "exp_arguments": {"save_exp_code": "E", "raw_save_dir": "r", "production_save_dir": "p"},
        "data_arguments": {"data_dir": str(tmp_path)},
        "model_arguments": {"ckpt_path": "c.pt", "model_type": "clam_sb"},
    }
    if explain is not None:
        raw["explain_arguments"] = explain
    return raw


def test_config_defaults_and_absence(tmp_path):
    assert parse_config(_config(tmp_path, None), tmp_path / "c.yaml").explain is None
    cfg = parse_config(_config(tmp_path, {}), tmp_path / "c.yaml").explain
    assert cfg is not None and cfg.methods == ALL and cfg.ig_steps == 32 and cfg.faithfulness
    assert cfg.target == "predicted"


@pytest.mark.parametrize(
    "explain, words",
    [
        (
            {"methods": ["contribution", "lrp"]},
            ["'lrp'", "contribution, occlusion, integrated_gradients"],
        ),
        ({"method": ["occlusion"]}, ["explain_arguments.method", "unknown key", "methods"]),
        ({"ig_steps": 0}, ["explain_arguments.ig_steps", "positive"]),
        ({"occlusion_block": 4}, ["explain_arguments.occlusion_block"]),
    ],
)
def test_config_errors_name_the_key_and_the_allowed_values(tmp_path, explain, words):
    with pytest.raises(ConfigError) as err:
        parse_config(_config(tmp_path, explain), tmp_path / "c.yaml")
    for word in words:
        assert word in str(err.value)


def test_transmil_contribution_is_refused_naming_what_works(tmp_path):
    raw = _config(tmp_path, {"methods": ["contribution"]})
    raw["model_arguments"]["model_type"] = "transmil"
    with pytest.raises(ConfigError) as err:
        parse_config(raw, tmp_path / "c.yaml")
    assert "contribution" in str(err.value) and "integrated_gradients" in str(err.value)
    model = build_model("transmil", in_dim=D, n_classes=2).eval()
    with pytest.raises(ConfigError, match="integrated_gradients"):
        explain_bag(
            model,
            torch.randn(8, D),
            np.zeros(8, np.float32),
            0,
            ExplainConfig(("contribution",), 4, False, "predicted", "auto"),
        )


def test_a_run_with_explain_arguments_stops_before_any_work_until_blockmaps_hold_the_maps(
    tmp_path,
):
    """The maps are computed (above) but not written yet: a config asking for them is refused
    (exit 2 through the CLI's ConfigError) rather than silently scored without them."""
    from scoring.pipeline import run

    config = parse_config(_config(tmp_path, {}), tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="explain_arguments: explanation maps are not written"):
        run(config, progress=False)
    assert not any(tmp_path.rglob("*_blockmap.h5"))
