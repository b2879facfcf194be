"""The five MIL models: reference numerics (../shared), checkpoint layouts, errors, attention semantics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scoring.attention import BagScores, score_bag
from scoring.errors import CheckpointMismatch, ConfigError, FeatureError
from scoring.models import MODEL_TYPES, build_model, load_model
from tests.conftest import shared_path

TOL = dict(atol=1e-5, rtol=1e-5)

# Small widths keep the user-clone tests fast; every one differs from the defaults, so a loaded model
# only matches when the widths were really read from the checkpoint.
SMALL: dict[str, dict] = {
    "abmil": dict(embed_dim=24, attention_dim=12),
    "clam_sb": dict(embed_dim=24, attention_dim=12),
    "clam_mb": dict(embed_dim=24, attention_dim=12),
    "transmil": dict(embed_dim=32, num_heads=2, num_layers=2),
    "dsmil": dict(embed_dim=24, attention_dim=12),
}
IN_DIM = 20
N_CLASSES = 3


def _bag(n: int = 37, d: int = IN_DIM, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).standard_normal((n, d)).astype(np.float32)


def _fresh(model_type: str, seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(
        model_type, in_dim=IN_DIM, n_classes=N_CLASSES, **{**SMALL[model_type], **extra}
    )


def _assert_same(a: BagScores, b: BagScores) -> None:
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.probs, b.probs)
    assert a.pred == b.pred
    np.testing.assert_array_equal(a.attention, b.attention)
    if a.attention_per_class is None:
        assert b.attention_per_class is None
    else:
        np.testing.assert_array_equal(a.attention_per_class, b.attention_per_class)


# --------------------------------------------------------------------------- reference numerics (shared)

REFERENCE_CASES = [
    ("clam_sb", "clam_sb.pt"),
    ("clam_sb", "clam_sb_dataparallel.pt"),
    ("clam_mb", "clam_mb.pt"),
    ("abmil", "abmil.pt"),
    ("transmil", "transmil.pt"),
    ("dsmil", "dsmil.pt"),
]


@pytest.mark.shared
@pytest.mark.parametrize("model_type,filename", REFERENCE_CASES)
def test_matches_reference_implementation(model_type: str, filename: str) -> None:
    ckpt = shared_path("reference", filename)
    expected = np.load(shared_path("reference", f"{model_type}_expected.npz"))
    features = np.load(shared_path("reference", "features_500x1024.npy"))

    scores = score_bag(load_model(model_type, ckpt), features)

    np.testing.assert_allclose(scores.logits, expected["logits"], **TOL)
    np.testing.assert_allclose(scores.probs, expected["probs"], **TOL)
    assert scores.pred == int(expected["pred"])
    assert scores.attention.shape == (500,) and scores.attention.dtype == np.float32
    if model_type in ("clam_sb", "clam_mb"):
        per_class = expected["attention_raw"].T  # (N, branches)
    elif model_type == "dsmil":
        per_class = expected["attention"][0]  # (N, C)
    else:  # abmil (1, 1, N); transmil (1, 529): padding entries dropped
        per_class = expected["attention"].reshape(-1)[:500, None]
    if model_type in ("clam_mb", "dsmil"):
        np.testing.assert_allclose(scores.attention_per_class, per_class, **TOL)
        np.testing.assert_allclose(scores.attention, per_class[:, scores.pred], **TOL)
    else:
        assert scores.attention_per_class is None
        np.testing.assert_allclose(
            scores.attention, per_class[:, 0], **_attention_tolerance(model_type, per_class)
        )


def _attention_tolerance(model_type: str, reference: np.ndarray) -> dict:
    """1e-5, except that TransMIL's attention is held to 1e-5 of the map's own scale.

    TransMIL's scores are dot products of 512-wide float32 tokens after Nystrom attention (an
    iterated pseudo-inverse), spanning about -225..225 here. The reference numbers are float32 too:
    a float64 run of the same checkpoint differs from them by up to 1.2e-4, and float32 runs by
    1e-4 to 2e-4 depending on the CPU's BLAS kernels (AVX2 or AVX-512). No implementation can agree
    with a float32 reference more closely than the reference agrees with exact arithmetic, so the
    absolute tolerance is 1e-5 of the largest score (2.3e-3 here); a wrong formula is off by whole
    units. Logits and probabilities keep 1e-5.
    """
    if model_type != "transmil":
        return TOL
    return dict(rtol=1e-5, atol=1e-5 * float(np.abs(reference).max()))


@pytest.mark.shared
def test_real_trained_clam_checkpoint() -> None:
    ckpt = shared_path("checkpoints", "clam_sb_luad_vs_lscc_s0.pt")
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert any(k.startswith("attention_net.module.") for k in raw)
    assert any(k.startswith("instance_loss_fn.") for k in raw)

    model = load_model("clam_sb", ckpt, n_classes=2, in_dim=1024)
    features = _bag(300, 1024, seed=3)
    scores = score_bag(model, features)

    w = {
        k.replace("attention_net.module.", "attention_net."): v.double().numpy()
        for k, v in raw.items()
    }
    x = features[[0, 17, 299]].astype(np.float64)
    h = np.maximum(x @ w["attention_net.0.weight"].T + w["attention_net.0.bias"], 0)
    a = np.tanh(
        h @ w["attention_net.3.attention_a.0.weight"].T + w["attention_net.3.attention_a.0.bias"]
    )
    g = 1 / (
        1
        + np.exp(
            -(
                h @ w["attention_net.3.attention_b.0.weight"].T
                + w["attention_net.3.attention_b.0.bias"]
            )
        )
    )
    logits = (a * g) @ w["attention_net.3.attention_c.weight"].T + w[
        "attention_net.3.attention_c.bias"
    ]
    np.testing.assert_allclose(scores.attention[[0, 17, 299]], logits[:, 0], **TOL)
    assert scores.logits.shape == (2,) and scores.probs.sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------- layouts (no shared data)


def _save_layouts(state: dict[str, torch.Tensor], folder: Path) -> dict[str, Path]:
    from safetensors.torch import save_file

    paths = {
        "plain.pt": folder / "plain.pt",
        "milab.bin": folder / "pytorch_model.bin",
        "dataparallel.pth": folder / "dataparallel.pth",
        "model.safetensors": folder / "model.safetensors",
        "wrapped.pt": folder / "wrapped.pt",
        "wrapped_model_state_dict.pt": folder / "wrapped2.pt",
    }
    torch.save(state, paths["plain.pt"])
    torch.save({f"model.{k}": v for k, v in state.items()}, paths["milab.bin"])
    torch.save({f"module.{k}": v for k, v in state.items()}, paths["dataparallel.pth"])
    save_file({k: v.contiguous() for k, v in state.items()}, str(paths["model.safetensors"]))
    torch.save({"epoch": 3, "state_dict": state}, paths["wrapped.pt"])
    torch.save({"model_state_dict": state, "optimizer": {}}, paths["wrapped_model_state_dict.pt"])
    return paths


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_layout_round_trips_with_widths_from_checkpoint(
    model_type: str, tmp_path: Path
) -> None:
    model = _fresh(model_type)
    bag = _bag()
    before = score_bag(model, bag)
    for layout, path in _save_layouts(model.state_dict(), tmp_path).items():
        loaded = load_model(model_type, path)  # no width options: all read from the tensors
        assert not loaded.training, layout
        assert loaded.config() == model.config(), layout
        _assert_same(before, score_bag(loaded, bag))


def test_clam_inner_dataparallel_and_instance_loss_keys(tmp_path: Path) -> None:
    """CLAM's own DataParallel layout: only the attention net is wrapped; loss buffers are saved too."""
    model = _fresh("clam_sb")
    state = {
        k.replace("attention_net.", "attention_net.module."): v
        for k, v in model.state_dict().items()
    }
    state["instance_loss_fn.labels"] = torch.tensor([0, 1])
    torch.save(state, tmp_path / "s_0_checkpoint.pt")
    _assert_same(
        score_bag(model, _bag()),
        score_bag(load_model("clam_sb", tmp_path / "s_0_checkpoint.pt"), _bag()),
    )


@pytest.mark.parametrize("model_type", ["abmil", "clam_sb", "clam_mb"])
def test_ungated_attention_round_trips(model_type: str, tmp_path: Path) -> None:
    model = _fresh(model_type, gate=False)
    state = model.state_dict()
    if model_type.startswith(
        "clam"
    ):  # CLAM's ungated head lives under `module`, also under DataParallel
        assert "attention_net.3.module.0.weight" in state
        state = {k.replace("attention_net.", "attention_net.module."): v for k, v in state.items()}
    torch.save(state, tmp_path / "ungated.pt")
    loaded = load_model(model_type, tmp_path / "ungated.pt")
    assert loaded.config()["gate"] is False
    _assert_same(score_bag(model, _bag()), score_bag(loaded, _bag()))


def test_fresh_models_have_the_reference_key_layouts() -> None:
    clam = build_model("clam_sb", in_dim=1024, n_classes=2)
    assert list(clam.state_dict()) == [
        "attention_net.0.weight",
        "attention_net.0.bias",
        "attention_net.3.attention_a.0.weight",
        "attention_net.3.attention_a.0.bias",
        "attention_net.3.attention_b.0.weight",
        "attention_net.3.attention_b.0.bias",
        "attention_net.3.attention_c.weight",
        "attention_net.3.attention_c.bias",
        "classifiers.weight",
        "classifiers.bias",
        "instance_classifiers.0.weight",
        "instance_classifiers.0.bias",
        "instance_classifiers.1.weight",
        "instance_classifiers.1.bias",
    ]
    assert clam.state_dict()["attention_net.3.attention_c.weight"].shape == (1, 256)
    mb = build_model("clam_mb", in_dim=1024, n_classes=3).state_dict()
    assert mb["attention_net.3.attention_c.weight"].shape == (3, 256) and mb[
        "classifiers.2.weight"
    ].shape == (1, 512)
    abmil = build_model("abmil", in_dim=1024, n_classes=2).state_dict()
    assert abmil["global_attn.attention_b.0.weight"].shape == (384, 512)
    tm = build_model("transmil", in_dim=1024, n_classes=2).state_dict()
    assert tm["blocks.1.attention.res_conv.weight"].shape == (4, 1, 33, 1)
    assert tm["pos_layer.proj.weight"].shape == (512, 1, 7, 7) and tm["cls_token"].shape == (
        1,
        1,
        512,
    )
    ds = build_model("dsmil", in_dim=1024, n_classes=2).state_dict()
    assert ds["b_classifier.q.weight"].shape == (384, 512) and ds["classifier.weight"].shape == (
        2,
        2,
        512,
    )
    assert "b_classifier.v.1.weight" in ds and "b_classifier.norm.weight" in ds
    assert (
        build_model("clam_sb", in_dim=1024, n_classes=2, model_size="big").config()["attention_dim"]
        == 384
    )


def test_a_briefly_trained_model_loads_as_a_clam_checkpoint(tmp_path: Path) -> None:
    """What the demo does: train a few steps through `model(x)`, torch.save the state dict, load it."""
    torch.manual_seed(0)
    model = build_model("clam_sb", in_dim=IN_DIM, n_classes=2)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(3):
        x = torch.from_numpy(_bag(30, seed=step))
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([step % 2]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    torch.save(model.state_dict(), tmp_path / "demo.pt")
    loaded = load_model("clam_sb", tmp_path / "demo.pt")
    _assert_same(score_bag(model, _bag()), score_bag(loaded, _bag()))
    assert model.training  # score_bag leaves a training model as it found it


# --------------------------------------------------------------------------- errors


def test_mismatch_names_missing_unexpected_and_misshaped_keys(tmp_path: Path) -> None:
    state = _fresh("clam_sb").state_dict()
    del state["instance_classifiers.1.bias"]
    state["attention_net.3.extra.weight"] = torch.zeros(3)
    state["instance_classifiers.0.weight"] = torch.zeros(2, 7)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatch) as info:
        load_model("clam_sb", path)
    message = str(info.value)
    assert str(path) in message
    assert "missing" in message and "instance_classifiers.1.bias" in message
    assert "unexpected" in message and "attention_net.3.extra.weight" in message
    assert "mis-shaped" in message and "instance_classifiers.0.weight" in message
    assert "2x24" in message and "2x7" in message


def test_wrong_model_type_is_a_mismatch_that_suggests_the_right_one(tmp_path: Path) -> None:
    torch.save(_fresh("abmil").state_dict(), tmp_path / "abmil.pt")
    with pytest.raises(CheckpointMismatch, match="model_type: abmil"):
        load_model("dsmil", tmp_path / "abmil.pt")


def test_given_widths_that_contradict_the_checkpoint(tmp_path: Path) -> None:
    torch.save(_fresh("abmil").state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointMismatch, match=r"n_classes=3.*n_classes=5"):
        load_model("abmil", tmp_path / "m.pt", n_classes=5)
    with pytest.raises(CheckpointMismatch, match=r"in_dim=20.*in_dim=1024"):
        load_model("abmil", tmp_path / "m.pt", in_dim=1024)
    # Consistent values and a configured hidden width are fine: the checkpoint's width wins.
    model = load_model(
        "abmil", tmp_path / "m.pt", n_classes=3, in_dim=IN_DIM, embed_dim=512, attn_dim=384
    )
    assert model.config()["embed_dim"] == 24


def test_unknown_model_type_and_option() -> None:
    with pytest.raises(
        ConfigError, match=r"model_arguments\.model_type.*abmil.*clam_sb.*clam_mb.*transmil.*dsmil"
    ):
        build_model("resnet", in_dim=8, n_classes=2)
    with pytest.raises(ConfigError, match=r"model_arguments\.model_type"):
        load_model("clam", "whatever.pt")
    with pytest.raises(ConfigError, match="embeddim"):
        build_model("abmil", in_dim=8, n_classes=2, embeddim=5)
    with pytest.raises(ConfigError, match="model_size"):
        build_model("clam_sb", in_dim=8, n_classes=2, model_size="huge")


def test_unreadable_checkpoints_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    not_a_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], not_a_dict)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    for path in (garbage, not_a_dict, bad_st, tmp_path / "absent.pt"):
        with pytest.raises(CheckpointMismatch, match=str(path.name)):
            load_model("clam_sb", path)


def test_feature_errors_name_expected_and_got() -> None:
    model = _fresh("abmil")
    with pytest.raises(FeatureError, match=rf"\b21\b.*\b{IN_DIM}\b"):
        score_bag(model, _bag(d=21))
    with pytest.raises(FeatureError, match="2-D"):
        score_bag(model, np.zeros(IN_DIM, dtype=np.float32))
    with pytest.raises(FeatureError, match="empty"):
        score_bag(model, np.zeros((0, IN_DIM), dtype=np.float32))
    with pytest.raises(FeatureError, match="NaN"):
        score_bag(model, np.full((4, IN_DIM), np.nan, dtype=np.float32))


# --------------------------------------------------------------------------- attention semantics


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_scores_have_documented_types_and_shapes(model_type: str) -> None:
    scores = score_bag(
        _fresh(model_type), torch.from_numpy(_bag()).double()
    )  # a float64 tensor is fine too
    assert scores.logits.dtype == np.float64 and scores.logits.shape == (N_CLASSES,)
    np.testing.assert_allclose(
        scores.probs, np.exp(scores.logits) / np.exp(scores.logits).sum(), atol=1e-12
    )
    assert scores.pred == int(np.argmax(scores.logits))
    assert scores.attention.dtype == np.float32 and scores.attention.shape == (37,)
    if model_type in ("clam_mb", "dsmil"):
        assert scores.attention_per_class.shape == (37, N_CLASSES)
        assert scores.attention_per_class.dtype == np.float32
        np.testing.assert_array_equal(scores.attention, scores.attention_per_class[:, scores.pred])
    else:
        assert scores.attention_per_class is None


def test_dsmil_attention_columns_sum_to_one() -> None:
    scores = score_bag(_fresh("dsmil"), _bag())
    np.testing.assert_allclose(
        scores.attention_per_class.sum(axis=0), np.ones(N_CLASSES), atol=1e-5
    )
    assert (scores.attention_per_class >= 0).all()


@pytest.mark.parametrize("model_type", ["abmil", "clam_sb", "clam_mb"])
def test_attention_pooling_is_permutation_equivariant(model_type: str) -> None:
    model = _fresh(model_type)
    bag = _bag()
    order = np.random.RandomState(5).permutation(len(bag))
    a, b = score_bag(model, bag), score_bag(model, bag[order])
    np.testing.assert_allclose(b.logits, a.logits, atol=1e-5)
    np.testing.assert_allclose(b.attention, a.attention[order], atol=1e-6)
    if a.attention_per_class is not None:
        np.testing.assert_allclose(b.attention_per_class, a.attention_per_class[order], atol=1e-6)


@pytest.mark.parametrize("model_type", ["transmil", "dsmil"])
def test_attention_depends_on_the_whole_bag(model_type: str) -> None:
    model = _fresh(model_type)
    bag = _bag()
    changed = bag.copy()
    changed[20] = _bag(1, seed=99)[0] * 3
    a, b = score_bag(model, bag), score_bag(model, changed)
    column = (
        (lambda s: s.attention_per_class[:, 0])
        if model_type == "dsmil"
        else (lambda s: s.attention)
    )
    assert not np.allclose(column(a)[:20], column(b)[:20], atol=1e-6)


def test_transmil_handles_tiny_and_non_square_bags() -> None:
    model = _fresh("transmil")
    for n in (1, 2, 3, 5, 17):
        scores = score_bag(model, _bag(n))
        assert scores.attention.shape == (n,) and np.isfinite(scores.logits).all()


@pytest.mark.shared
def test_older_clam_layout_without_dropout_layer_matches_reference(tmp_path: Path) -> None:
    """CLAM versions that build no Dropout when trained without it save the head at attention_net.2."""
    state = torch.load(
        shared_path("reference", "clam_sb.pt"), map_location="cpu", weights_only=True
    )
    old = {k.replace("attention_net.3.", "attention_net.2."): v for k, v in state.items()}
    torch.save(old, tmp_path / "old_clam.pt")
    expected = np.load(shared_path("reference", "clam_sb_expected.npz"))
    features = np.load(shared_path("reference", "features_500x1024.npy"))
    scores = score_bag(load_model("clam_sb", tmp_path / "old_clam.pt"), features)
    np.testing.assert_allclose(scores.logits, expected["logits"], **TOL)
    np.testing.assert_allclose(scores.attention, expected["attention_raw"][0], **TOL)


@pytest.mark.parametrize("model_type", ["clam_sb", "clam_mb"])
def test_clam_head_at_index_2_round_trips(model_type: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(model_type, in_dim=IN_DIM, n_classes=3, fc_dropout_layer=False).eval()
    assert any(k.startswith("attention_net.2.attention_a") for k in model.state_dict())
    torch.save(model.state_dict(), tmp_path / "m.pt")
    features = np.random.default_rng(0).normal(size=(30, IN_DIM)).astype(np.float32)
    loaded = load_model(model_type, tmp_path / "m.pt")
    np.testing.assert_array_equal(
        score_bag(loaded, features).attention, score_bag(model, features).attention
    )


def test_contradicting_n_classes_names_the_config_keys(tmp_path: Path) -> None:
    torch.save(_fresh("abmil").state_dict(), tmp_path / "m.pt")
    with pytest.raises(
        CheckpointMismatch, match=r"model_arguments.n_classes or exp_arguments.n_classes"
    ):
        load_model("abmil", tmp_path / "m.pt", n_classes=5)


# --------------------------------------------------------------------------- streaming large bags


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("n", [300, 1000])
def test_streamed_scoring_of_large_bags_gives_the_whole_bag_scores(model_type, n):
    """Bags above `patch_chunk` are scored a chunk at a time (memory bounded by the chunk): the
    logits and every patch's attention equal the plain whole-bag forward, to float64 rounding."""
    torch.manual_seed(5)
    model = (
        build_model(model_type, in_dim=IN_DIM, n_classes=N_CLASSES, **SMALL[model_type])
        .double()
        .eval()
    )
    x = torch.from_numpy(_bag(n, seed=n)).double()
    with torch.inference_mode():
        model.patch_chunk = 10**9
        plain_logits, plain_attention = model.forward_with_attention(x)
        model.patch_chunk = 64  # 5 or 16 chunks, the last one short
        logits, attention = model.forward_with_attention(x)
    np.testing.assert_allclose(logits.numpy(), plain_logits.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(attention.numpy(), plain_attention.numpy(), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_streamed_scoring_in_float32_matches_to_the_reference_tolerance(model_type):
    torch.manual_seed(6)
    model = _fresh(model_type, seed=6)
    features = _bag(700, seed=9)
    model.patch_chunk = 10**9
    plain = score_bag(model, features)
    model.patch_chunk = 100
    streamed = score_bag(model, features)
    np.testing.assert_allclose(streamed.logits, plain.logits, **TOL)
    np.testing.assert_allclose(streamed.attention, plain.attention, **TOL)
    assert streamed.pred == plain.pred
