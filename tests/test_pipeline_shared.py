"""A cohort the other tests never see: NDPI, JPEG 2000 SVS without MPP and DICOM slides from
../shared/testdata, scored with the real trained CLAM-SB checkpoint (skipped where absent)."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import openslide
import pytest
import yaml
from PIL import Image

from scoremap.blockmap import read_blockmap
from scoring.attention import score_bag
from scoring.cli import main
from scoring.models import load_model
from tests.conftest import shared_path

pytestmark = pytest.mark.shared


def _grid(dims: tuple[int, int], l0_patch: int, n: int) -> np.ndarray:
    w, h = dims
    xs, ys = np.meshgrid(
        np.arange(0, w - l0_patch + 1, l0_patch), np.arange(0, h - l0_patch + 1, l0_patch)
    )
    return np.stack([xs.ravel(), ys.ravel()], 1)[:n].astype(np.int64)


def test_real_clam_checkpoint_on_other_formats(tmp_path, monkeypatch):
    slides = shared_path("slides")
    ckpt = shared_path("checkpoints", "clam_sb_luad_vs_lscc_s0.pt")
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(7)
    cases = {
        # slide id: (data_dir key, file name, coords layout)
        "test3-DAPI-2-(387)": ("main", "test3-DAPI-2-(387).ndpi", "trident"),
        "tcga-cr-7395-01a-01-ts1": ("main", "tcga-cr-7395-01a-01-ts1.svs", "clam_level1"),
        "multiframe_camelyon_challenge_image": (
            "dicom",
            "multiframe_camelyon_challenge_image.dcm",
            "clam",
        ),
    }
    roots = {"main": slides, "dicom": slides / "dicom-camelyon"}
    feats: dict[str, np.ndarray] = {}
    rows = ["slide_id,source,label,process,features_path,coords_path"]
    for sid, (key, fname, layout) in cases.items():
        with openslide.OpenSlide(roots[key] / fname) as slide:
            dims, downsamples = slide.dimensions, slide.level_downsamples
        l0_patch = 256 if layout != "clam_level1" else int(128 * downsamples[1])
        coords = _grid(dims, l0_patch, 40)
        feats[sid] = rng.normal(size=(len(coords), 1024)).astype(np.float32)
        path = tmp_path / "feats" / f"{sid}.h5"
        path.parent.mkdir(exist_ok=True)
        with h5py.File(path, "w") as fh:
            fh["features"] = feats[sid]
            ds = fh.create_dataset("coords", data=coords)
            if layout == "trident":
                ds.attrs["patch_size_level0"] = 256
            else:
                ds.attrs["patch_size"] = 128 if layout == "clam_level1" else 256
                ds.attrs["patch_level"] = 1 if layout == "clam_level1" else 0
        rows.append(f"{fname},{key},{'LUAD' if len(rows) % 2 else 'LSCC'},1,{path},{path}")
    rows.append("not-there.svs,main,LUAD,0,,")  # skipped row: its files do not even exist
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    config = {
        "exp_arguments": {
            "n_classes": 2,
            "save_exp_code": "REAL",
            "raw_save_dir": "raw",
            "production_save_dir": "prod",
        },
        "data_arguments": {
            "data_dir": {k: str(v) for k, v in roots.items()},
            "data_dir_key": "source",
            "process_list": "list.csv",
            "slide_ext": ".svs",
            "label_dict": {"LUAD": 0, "LSCC": 1},
        },
        "model_arguments": {
            "ckpt_path": str(ckpt),
            "model_type": "clam_sb",
            "model_size": "small",
            "drop_out": 0.25,
            "embed_dim": 1024,
        },
        "heatmap_arguments": {"vis_level": -1, "cmap": "coolwarm", "save_ext": "jpg"},
        "sample_arguments": {"samples": [{"name": "topk", "k": 3, "mode": "topk"}]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["--config", "config.yaml", "--no-progress"]) == 0

    model = load_model("clam_sb", ckpt)
    with open(tmp_path / "prod" / "REAL" / "results.csv", newline="") as fh:
        results = {r["slide_id"]: r for r in csv.DictReader(fh)}
    assert set(results) == set(cases)
    for sid, (key, fname, _) in cases.items():
        label = results[sid]["label"]
        bm = read_blockmap(tmp_path / "raw" / "REAL" / label / sid / f"{sid}_blockmap.h5")
        expected = score_bag(model, feats[sid])
        np.testing.assert_allclose(bm.attention, expected.attention, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bm.probs, expected.probs, atol=1e-6)
        assert bm.class_names == ["LUAD", "LSCC"] and bm.model_type == "clam_sb"
        heat = tmp_path / "prod" / "REAL" / label / f"{sid}_heatmap.jpg"
        orig = tmp_path / "prod" / "REAL" / label / f"{sid}_original.jpg"
        with openslide.OpenSlide(roots[key] / fname) as slide:
            level = slide.get_best_level_for_downsample(32)
            assert Image.open(heat).size == Image.open(orig).size == slide.level_dimensions[level]
        assert (
            len(list((tmp_path / "prod" / "REAL" / "sampled_patches").glob(f"*/topk/*_{sid}_x_*")))
            == 3
        )
