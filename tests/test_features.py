"""Features and coords as CLAM and TRIDENT write them; a wrong bag names the file and the problem."""

from __future__ import annotations

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from scoring.config import parse_config
from scoring.errors import FeatureError
from scoring.features import load_bag, load_coords, load_features
from scoring.inventory import SlideJob

DOWNSAMPLES = (1.0, 4.0, 16.0)


def _config(tmp_path: Path, **data):
    doc = {
        "exp_arguments": {"save_exp_code": "E", "raw_save_dir": "r", "production_save_dir": "p"},
        "data_arguments": {"data_dir": str(tmp_path), "features_dir": str(tmp_path / "feats")},
        "model_arguments": {"ckpt_path": "c.pt", "model_type": "clam_sb"},
    }
    doc["data_arguments"].update(data)
    return parse_config(copy.deepcopy(doc), tmp_path / "c.yaml")


def _coords_file(path: Path, coords, **attrs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        ds = fh.create_dataset("coords", data=np.asarray(coords))
        for k, v in attrs.items():
            ds.attrs[k] = v
    return path


def test_level0_patch_size_from_clam_trident_override_and_fallback(tmp_path):
    cfg = _config(tmp_path)
    clam = _coords_file(tmp_path / "clam.h5", [[0, 0], [512, 0]], patch_size=256, patch_level=1)
    assert load_coords(clam, DOWNSAMPLES, cfg)[1] == 1024  # 256 px at a 4x level
    trident = _coords_file(tmp_path / "trident.h5", [[0, 0]], patch_size_level0=448, patch_size=224)
    assert load_coords(trident, DOWNSAMPLES, cfg)[1] == 448
    assert load_coords(trident, DOWNSAMPLES, _config(tmp_path, patch_size_level0=300))[1] == 300
    bare = _coords_file(tmp_path / "bare.h5", [[0, 0]])
    with pytest.raises(
        FeatureError, match=r"bare.h5: cannot tell the level-0 patch size.*patch_size_level0"
    ):
        load_coords(bare, DOWNSAMPLES, cfg)
    clam_cfg = parse_config(
        {
            "exp_arguments": {
                "save_exp_code": "E",
                "raw_save_dir": "r",
                "production_save_dir": "p",
            },
            "data_arguments": {"data_dir": "d"},
            "patching_arguments": {"patch_size": 128, "patch_level": 2},
            "model_arguments": {"ckpt_path": "c", "model_type": "clam_sb"},
        },
        tmp_path / "c.yaml",
    )
    assert load_coords(bare, DOWNSAMPLES, clam_cfg)[1] == 2048
    deep = _coords_file(tmp_path / "deep.h5", [[0, 0]], patch_size=256, patch_level=5)
    with pytest.raises(FeatureError, match="patch_level 5 does not exist"):
        load_coords(deep, DOWNSAMPLES, cfg)


def test_features_pt_and_h5_and_bad_files(tmp_path):
    feats = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    torch.save(
        torch.from_numpy(feats)[None], tmp_path / "a.pt"
    )  # (1, N, D) as some CLAM versions save
    np.testing.assert_array_equal(load_features(tmp_path / "a.pt"), feats)
    with h5py.File(tmp_path / "a.h5", "w") as fh:
        fh["features"] = feats.astype(np.float16)
    np.testing.assert_allclose(load_features(tmp_path / "a.h5"), feats, atol=1e-2)
    with h5py.File(tmp_path / "nofeat.h5", "w") as fh:
        fh["coords"] = np.zeros((4, 2))
    with pytest.raises(FeatureError, match=r"nofeat.h5: no 'features' dataset \(found: coords\)"):
        load_features(tmp_path / "nofeat.h5")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(FeatureError, match=r"junk.pt: cannot read features as a torch file"):
        load_features(tmp_path / "junk.pt")
    torch.save(torch.zeros(5), tmp_path / "flat.pt")
    with pytest.raises(FeatureError, match=r"flat.pt: features must have shape \(N, D\)"):
        load_features(tmp_path / "flat.pt")


def test_bag_checks_counts_and_slide_bounds(tmp_path):
    cfg = _config(tmp_path)
    fdir = tmp_path / "feats"
    fdir.mkdir()
    torch.save(torch.zeros(3, 8), fdir / "s.pt")
    _coords_file(fdir / "s.h5", [[0, 0], [256, 0]], patch_size_level0=256)
    job = SlideJob(index=0, slide_id="s", slide_path=tmp_path / "s.svs", label="x")
    with pytest.raises(FeatureError, match=r"s.pt has 3 feature rows but .*s.h5 has 2 coords"):
        load_bag(job, cfg, DOWNSAMPLES, (1000, 1000))
    torch.save(torch.zeros(2, 8), fdir / "s.pt")
    with pytest.raises(
        FeatureError, match=r"1 coords .* lie outside the slide \(200x1000 at level 0\)"
    ):
        load_bag(job, cfg, DOWNSAMPLES, (200, 1000))
    bag = load_bag(job, cfg, DOWNSAMPLES, (1000, 1000))
    assert bag.features.shape == (2, 8) and bag.l0_patch == 256 and bag.coords_path == fdir / "s.h5"
    missing = SlideJob(index=1, slide_id="m", slide_path=tmp_path / "m.svs", label="x")
    with pytest.raises(
        FeatureError, match=r"features not found for slide m: looked at .*m.pt, .*pt_files/m.pt"
    ):
        load_bag(missing, cfg, DOWNSAMPLES, (1000, 1000))
