"""The SLURM path on a real single-node cluster: `sbatch --array=1-3 slurm/create_heatmaps.sbatch CONFIG`
gives the same blockmaps, heatmaps and results.csv as one `create_heatmaps.py` process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from scoremap.blockmap import read_blockmap
from scoremap.checkout import REPO_ROOT
from scoring.cli import main
from scoring.models import build_model
from tests.conftest import require_system_tool
from tests.slurm_cluster import MUNGED, SLURMCTLD, SLURMD, slurm_cluster

SLIDES = [f"case{i:02d}" for i in range(7)]
PATCH, DIM = 256, 16
pytestmark = pytest.mark.slow


def _cohort(root: Path, cmu_slide: Path) -> dict:
    slides, feats = root / "slides", root / "features"
    slides.mkdir()
    feats.mkdir()
    xs, ys = np.meshgrid(np.arange(0, 2220 - PATCH, PATCH), np.arange(0, 2967 - PATCH, PATCH))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)[:60]
    rng = np.random.default_rng(0)
    for _i, sid in enumerate(SLIDES):
        os.symlink(cmu_slide, slides / f"{sid}.svs")
        with h5py.File(feats / f"{sid}.h5", "w") as fh:
            fh["features"] = rng.standard_normal((len(coords), DIM)).astype(np.float32)
            fh.create_dataset("coords", data=coords).attrs["patch_size_level0"] = PATCH
    (root / "process_list.csv").write_text(
        "slide_id,label\n"
        + "".join(f"{sid},{'tumor' if i % 2 else 'normal'}\n" for i, sid in enumerate(SLIDES))
    )
    torch.manual_seed(0)
    torch.save(build_model("clam_sb", in_dim=DIM, n_classes=2).state_dict(), root / "model.pt")
    configs = {}
    for name in ("SINGLE", "ARRAY"):
        config = {
            "exp_arguments": {
                "save_exp_code": name,
                "raw_save_dir": str(root / "raw"),
                "production_save_dir": str(root / "prod"),
            },
            "data_arguments": {
                "data_dir": str(slides),
                "slide_ext": ".svs",
                "features_dir": str(feats),
                "process_list": str(root / "process_list.csv"),
            },
            "model_arguments": {"ckpt_path": str(root / "model.pt"), "model_type": "clam_sb"},
            "heatmap_arguments": {"vis_level": -1, "save_ext": "png"},
            "sample_arguments": {"samples": [{"name": "top", "k": 3, "mode": "topk"}]},
        }
        configs[name] = root / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(config))
    return configs


def _results(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_job_array_equals_a_single_process_run(tmp_path, cmu_slide):
    for tool in (MUNGED, SLURMCTLD, SLURMD, "/usr/bin/sbatch"):
        require_system_tool(tool, "the SLURM tests", "apt-get install -y slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs slurmd as root")
    configs = _cohort(tmp_path, cmu_slide)
    assert main(["--config", str(configs["SINGLE"]), "--no-progress"]) == 0
    env_bin = str(Path(sys.executable).parent)
    with slurm_cluster(tmp_path / "cluster") as env:
        env = {**env, "PATH": f"{env_bin}:{env['PATH']}", "MIL_HEATMAPS": f"{env_bin}/mil-heatmaps"}
        submitted = subprocess.run(
            [
                "sbatch",
                "--wait",
                "--array=1-3",
                "--cpus-per-task=1",
                "--mem=1500M",
                "--time=10",
                f"--output={tmp_path}/task-%a.out",
                str(REPO_ROOT / "slurm" / "create_heatmaps.sbatch"),
                str(configs["ARRAY"]),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("task-*.out")))
    assert submitted.returncode == 0, submitted.stderr + logs
    for i in (1, 2, 3):
        assert f"task {i} of 3" in logs and f"--shard {i}/3" in logs
    # every slide scored once, by one task, to the same numbers and files as the single run
    single_rows = _results(tmp_path / "prod" / "SINGLE" / "results.csv")
    array_rows = _results(tmp_path / "prod" / "ARRAY" / "results.csv")
    assert [r["slide_id"] for r in single_rows] == SLIDES
    assert array_rows == single_rows
    for sid, row in zip(SLIDES, single_rows, strict=True):
        label = row["label"]
        a = read_blockmap(tmp_path / "raw" / "SINGLE" / label / sid / f"{sid}_blockmap.h5")
        b = read_blockmap(tmp_path / "raw" / "ARRAY" / label / sid / f"{sid}_blockmap.h5")
        np.testing.assert_array_equal(a.attention, b.attention)
        np.testing.assert_array_equal(a.l0_coords, b.l0_coords)
        np.testing.assert_array_equal(a.probs, b.probs)
        heat = f"{label}/{sid}_heatmap.png"
        assert (tmp_path / "prod" / "ARRAY" / heat).read_bytes() == (
            tmp_path / "prod" / "SINGLE" / heat
        ).read_bytes()
    samples = sorted(
        p.name for p in (tmp_path / "prod" / "ARRAY" / "sampled_patches").rglob("*.png")
    )
    assert samples == sorted(
        p.name for p in (tmp_path / "prod" / "SINGLE" / "sampled_patches").rglob("*.png")
    )
    assert not list((tmp_path / "prod" / "ARRAY").glob("errors*.csv"))
