"""create_heatmaps.py end to end on the real CMU scan: outputs where the guide says, scores the model's."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import openslide
import pytest
import torch
import yaml
from PIL import Image

from scoremap.blockmap import read_blockmap
from scoring.attention import score_bag
from scoring.cli import main
from scoring.models import build_model, load_model
from tests.conftest import REPO_ROOT

D = 16  # feature width of the test model
PATCH = 256


def _grid_coords(width: int, height: int, step: int, n_max: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(0, width - step, step), np.arange(0, height - step, step))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    return coords[:n_max]


def _features(coords: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(len(coords), D)).astype(np.float32)


def _write_clam_h5(path: Path, coords: np.ndarray, feats: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh["features"] = feats
        ds = fh.create_dataset("coords", data=coords.astype(np.int64))
        ds.attrs["patch_size"] = PATCH
        ds.attrs["patch_level"] = 0


def _write_trident_h5(path: Path, coords: np.ndarray, feats: np.ndarray | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        if feats is not None:
            fh["features"] = feats
        ds = fh.create_dataset("coords", data=coords.astype(np.int64))
        ds.attrs["patch_size_level0"] = PATCH
        ds.attrs["patch_size"] = 224
        ds.attrs["target_magnification"] = 20


@pytest.fixture()
def cohort(tmp_path: Path, cmu_slide: Path, monkeypatch) -> dict:
    """Three real slides (copies of the CMU scan) in CLAM and TRIDENT layouts: one row skipped,
    one broken."""
    monkeypatch.chdir(tmp_path)
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("alpha", "beta", "gamma"):
        os.symlink(cmu_slide, slides / f"{name}.svs")
    (slides / "broken.svs").write_bytes(b"this is not a slide")
    coords = _grid_coords(2220, 2967, PATCH, 60)
    feats = {
        sid: _features(coords, i) for i, sid in enumerate(("alpha", "beta", "gamma", "broken"))
    }
    fdir = tmp_path / "features"
    # alpha: CLAM pt_files + h5_files layout (found via features_dir)
    (fdir / "pt_files").mkdir(parents=True)
    torch.save(torch.from_numpy(feats["alpha"]), fdir / "pt_files" / "alpha.pt")
    _write_clam_h5(fdir / "h5_files" / "alpha.h5", coords, feats["alpha"])
    # beta: TRIDENT h5 with features + coords, given per slide in the process list
    _write_trident_h5(tmp_path / "trident" / "beta.h5", coords, feats["beta"])
    # gamma: process=0 (skipped); broken: unreadable slide
    _write_clam_h5(fdir / "h5_files" / "gamma.h5", coords, feats["gamma"])
    _write_clam_h5(fdir / "h5_files" / "broken.h5", coords, feats["broken"])
    plist = tmp_path / "process_list.csv"
    plist.write_text(
        "slide_id,label,process,features_path,coords_path,x1,y1,x2,y2\n"
        "alpha.svs,tumor,1,,,,,,\n"
        "beta,normal,1,trident/beta.h5,trident/beta.h5,256,512,1280,2048\n"
        "gamma,tumor,0,,,,,,\n"
        "broken,normal,1,,,,,,\n"
    )
    torch.manual_seed(0)
    model = build_model("clam_sb", in_dim=D, n_classes=2)
    torch.save(model.state_dict(), tmp_path / "s_0_checkpoint.pt")
    config = {
        "exp_arguments": {
            "n_classes": 2,
            "save_exp_code": "EXP",
            "raw_save_dir": "raw",
            "production_save_dir": "prod",
        },
        "data_arguments": {
            "data_dir": "slides",
            "slide_ext": ".svs",
            "features_dir": "features",
            "process_list": "process_list.csv",
            "label_dict": {"normal": 0, "tumor": 1},
        },
        "model_arguments": {
            "ckpt_path": "s_0_checkpoint.pt",
            "model_type": "clam_sb",
            "n_classes": 2,
        },
        "heatmap_arguments": {
            "vis_level": -1,
            "alpha": 0.5,
            "cmap": "jet",
            "save_orig": True,
            "save_ext": "png",
        },
        "sample_arguments": {
            "samples": [
                {"name": "top", "k": 5, "mode": "topk"},
                {"name": "bottom", "k": 3, "mode": "reverse_topk"},
                {
                    "name": "band",
                    "k": 4,
                    "mode": "range_sample",
                    "score_start": 0.4,
                    "score_end": 0.6,
                    "seed": 3,
                },
            ]
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return {"root": tmp_path, "config": path, "feats": feats, "coords": coords, "raw": config}


def _results(root: Path) -> list[dict[str, str]]:
    with open(root / "prod" / "EXP" / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_cohort_outputs_at_guide_paths_with_model_scores(cohort):
    root = cohort["root"]
    assert (
        main(["--config", str(cohort["config"]), "--no-progress"]) == 1
    )  # `broken` failed, others done
    model = load_model("clam_sb", root / "s_0_checkpoint.pt")
    for sid, label in (("alpha", "tumor"), ("beta", "normal")):
        bm_path = root / "raw" / "EXP" / label / sid / f"{sid}_blockmap.h5"
        bm = read_blockmap(bm_path)
        expected = score_bag(model, cohort["feats"][sid])
        np.testing.assert_allclose(bm.attention, expected.attention, atol=1e-6)
        np.testing.assert_allclose(bm.probs, expected.probs, atol=1e-6)
        assert bm.pred == expected.pred and bm.l0_patch == PATCH and bm.label == label
        np.testing.assert_array_equal(bm.l0_coords, cohort["coords"])
        assert bm.class_names == ["normal", "tumor"]
        heat = root / "prod" / "EXP" / label / f"{sid}_heatmap.png"
        orig = root / "prod" / "EXP" / label / f"{sid}_original.png"
        # 1-level slide: vis level 0; beta has an ROI in the process list
        size = (2220, 2967) if sid == "alpha" else (1024, 1536)
        assert Image.open(heat).size == Image.open(orig).size == size
        for name, k in (("top", 5), ("bottom", 3), ("band", 4)):
            folder = (
                root / "prod" / "EXP" / "sampled_patches" / f"label_{label}_pred_{bm.pred}" / name
            )
            files = sorted(folder.glob(f"*_{sid}_x_*"))
            assert len(files) == k, (sid, name)
        top = sorted(
            (
                root / "prod" / "EXP" / "sampled_patches" / f"label_{label}_pred_{bm.pred}" / "top"
            ).glob(f"*_{sid}_x_*"),
            key=lambda p: int(p.name.split("_")[0]),
        )
        best = np.argsort(-bm.attention, kind="stable")[:5]
        with openslide.OpenSlide(root / "slides" / f"{sid}.svs") as slide:
            for i, (path, idx) in enumerate(zip(top, best, strict=True)):
                x, y = bm.l0_coords[idx]
                assert path.name == f"{i}_{sid}_x_{x}_y_{y}_score_{bm.attention[idx]:.4f}.png"
                level0 = np.asarray(
                    slide.read_region((int(x), int(y)), 0, (PATCH, PATCH)).convert("RGB")
                )
                np.testing.assert_array_equal(np.asarray(Image.open(path)), level0)
    rows = _results(root)
    assert [r["slide_id"] for r in rows] == ["alpha", "beta"]
    assert list(rows[0]) == ["slide_id", "label", "bag_size", "Pred_0", "Pred_1", "p_0", "p_1"]
    for row in rows:
        bm = read_blockmap(
            root / "raw" / "EXP" / row["label"] / row["slide_id"] / f"{row['slide_id']}_blockmap.h5"
        )
        assert int(row["bag_size"]) == 60
        assert [int(row["Pred_0"]), int(row["Pred_1"])] == [int(bm.pred == 0), int(bm.pred == 1)]
        np.testing.assert_allclose([float(row["p_0"]), float(row["p_1"])], bm.probs, atol=1e-6)
    # skipped row: nothing written; broken slide: in errors.csv with the reason, nothing else written
    assert not list(root.glob("raw/EXP/*/gamma"))
    with open(root / "prod" / "EXP" / "errors.csv", newline="") as fh:
        errors = list(csv.DictReader(fh))
    assert [e["slide_id"] for e in errors] == ["broken"]
    assert "broken.svs" in errors[0]["error"] and "OpenSlide cannot open" in errors[0]["error"]
    assert not list(root.glob("raw/EXP/*/broken")) and not list(root.glob("prod/EXP/*/broken_*"))
    assert not list(root.rglob(".*partial*"))


def test_rerun_skips_finished_slides_and_overwrite_redoes_them(cohort):
    root, config = cohort["root"], str(cohort["config"])
    (root / "slides" / "broken.svs").unlink()
    plist = root / "process_list.csv"
    plist.write_text("\n".join(plist.read_text().splitlines()[:-1]) + "\n")
    assert main(["--config", config, "--no-progress"]) == 0
    bm_path = root / "raw" / "EXP" / "tumor" / "alpha" / "alpha_blockmap.h5"
    first = bm_path.stat().st_mtime_ns
    assert main(["--config", config, "--no-progress"]) == 0
    assert bm_path.stat().st_mtime_ns == first
    assert len(_results(root)) == 2  # results.csv still lists the skipped (finished) slides
    assert main(["--config", config, "--no-progress", "--overwrite"]) == 0
    assert bm_path.stat().st_mtime_ns != first
    top = root / "prod" / "EXP" / "sampled_patches"
    assert len(list(top.glob("*/top/*_alpha_x_*"))) == 5  # overwrite replaced, not added


def test_shards_split_the_cohort(cohort):
    root, config = cohort["root"], str(cohort["config"])
    # processed rows: alpha (0), beta (1), broken (2); gamma has process=0
    assert (
        main(["--config", config, "--no-progress", "--shard", "1/2"]) == 1
    )  # alpha ok, broken fails
    assert (root / "raw/EXP/tumor/alpha/alpha_blockmap.h5").exists()
    assert not (root / "raw/EXP/normal/beta").exists()
    assert (root / "prod/EXP/errors_shard_1_of_2.csv").exists()
    assert main(["--config", config, "--no-progress", "--shard", "2/2"]) == 0  # beta
    assert (root / "raw/EXP/normal/beta/beta_blockmap.h5").exists()
    assert not (root / "prod/EXP/errors_shard_2_of_2.csv").exists()
    assert [r["slide_id"] for r in _results(root)] == ["alpha", "beta"]


def _run_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "create_heatmaps.py"), *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def test_config_typo_stops_before_any_output(cohort):
    root = cohort["root"]
    raw = cohort["raw"]
    raw["heatmap_arguments"]["cmpa"] = "jet"
    bad = root / "typo.yaml"
    bad.write_text(yaml.safe_dump(raw))
    proc = _run_cli(root, "--config_file", str(bad))
    assert proc.returncode == 2
    assert re.search(
        r"typo.yaml: heatmap_arguments.cmpa: unknown key \(did you mean 'cmap'\?\)", proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert not (root / "raw").exists() and not (root / "prod").exists()


def test_wrong_checkpoint_stops_before_any_output(cohort):
    root = cohort["root"]
    torch.manual_seed(0)
    torch.save(build_model("abmil", in_dim=D, n_classes=2).state_dict(), root / "s_0_checkpoint.pt")
    proc = _run_cli(root, "--config", str(cohort["config"]))
    assert proc.returncode == 2
    assert "s_0_checkpoint.pt" in proc.stderr and "missing" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (root / "raw").exists() and not (root / "prod").exists()


def test_missing_features_fail_that_slide_only(cohort):
    root = cohort["root"]
    shutil.rmtree(root / "trident")
    assert main(["--config", str(cohort["config"]), "--no-progress"]) == 1
    with open(root / "prod" / "EXP" / "errors.csv", newline="") as fh:
        errors = {e["slide_id"]: e["error"] for e in csv.DictReader(fh)}
    assert set(errors) == {"beta", "broken"}
    assert (
        "features not found for slide beta" in errors["beta"]
        and "trident/beta.h5" in errors["beta"]
    )
    assert (root / "raw/EXP/tumor/alpha/alpha_blockmap.h5").exists()


def test_overwrite_that_fails_leaves_the_slide_unfinished(cohort):
    """--overwrite removes the old blockmap first: a slide that fails on redo is not listed as done
    with stale scores, and the next plain run retries it."""
    root, config = cohort["root"], str(cohort["config"])
    assert main(["--config", config, "--no-progress"]) == 1
    torch.save(torch.zeros(3, D + 1), root / "features" / "pt_files" / "alpha.pt")  # now broken
    assert main(["--config", config, "--no-progress", "--overwrite"]) == 1
    assert not (root / "raw/EXP/tumor/alpha/alpha_blockmap.h5").exists()
    assert not (root / "prod/EXP/tumor/alpha_heatmap.png").exists()
    assert not list((root / "prod/EXP/sampled_patches").glob("*/*/*_alpha_x_*"))
    assert [r["slide_id"] for r in _results(root)] == ["beta"]


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda raw, root: raw["exp_arguments"].update(class_names=["a", "b", "c"]),
            "exp_arguments.class_names has 3 names but the checkpoint",
        ),
        (
            lambda raw, root: raw["data_arguments"].update(data_dir="no_such_folder"),
            "data_arguments.data_dir: folder not found: no_such_folder",
        ),
        (
            lambda raw, root: (
                root.joinpath("afile").write_text("x"),
                raw["exp_arguments"].update(production_save_dir="afile/prod"),
            ),
            "exp_arguments.production_save_dir: cannot create afile/prod/EXP",
        ),
    ],
)
def test_cohort_level_mistakes_stop_before_any_slide(cohort, change, message):
    root, raw = cohort["root"], cohort["raw"]
    change(raw, root)
    bad = root / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    proc = _run_cli(root, "--config", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not list(root.glob("raw/EXP/*/*/*_blockmap.h5"))


def test_vis_level_the_slide_lacks_falls_back_to_its_coarsest(cohort, caplog):
    root, raw = cohort["root"], cohort["raw"]
    raw["heatmap_arguments"]["vis_level"] = 1  # CLAM's template value; the CMU scan has one level
    (root / "c1.yaml").write_text(yaml.safe_dump(raw))
    assert main(["--config", str(root / "c1.yaml"), "--no-progress"]) == 1  # only `broken` fails
    assert Image.open(root / "prod/EXP/tumor/alpha_heatmap.png").size == (2220, 2967)
    assert "vis_level 1 does not exist" in caplog.text


def test_slide_id_keeps_its_own_extension_case(cohort):
    root = cohort["root"]
    os.symlink(root / "slides" / "alpha.svs", root / "slides" / "UPPER.SVS")
    shutil.copy(
        root / "features" / "pt_files" / "alpha.pt", root / "features" / "pt_files" / "UPPER.pt"
    )
    shutil.copy(
        root / "features" / "h5_files" / "alpha.h5", root / "features" / "h5_files" / "UPPER.h5"
    )
    (root / "process_list.csv").write_text("slide_id,label\nUPPER.SVS,tumor\n")
    assert main(["--config", str(cohort["config"]), "--no-progress"]) == 0
    assert (root / "raw/EXP/tumor/UPPER/UPPER_blockmap.h5").exists()


# --------------------------------------------------------------------------- faults


def test_a_binary_process_list_stops_with_exit_2_naming_the_file(cohort, capsys):
    root = cohort["root"]
    (root / "process_list.csv").write_bytes(bytes(range(256)) * 8)
    assert main(["--config", str(cohort["config"]), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "process_list.csv" in err and "not a UTF-8 text CSV" in err and "Traceback" not in err


def test_features_of_the_wrong_width_name_the_features_file(cohort):
    root = cohort["root"]
    torch.save(torch.zeros(60, D + 3), root / "features" / "pt_files" / "alpha.pt")
    assert main(["--config", str(cohort["config"]), "--no-progress"]) == 1
    with open(root / "prod" / "EXP" / "errors.csv", newline="") as fh:
        errors = {row["slide_id"]: row["error"] for row in csv.DictReader(fh)}
    assert "pt_files/alpha.pt" in errors["alpha"] and f"{D + 3} wide" in errors["alpha"]


def test_a_full_disk_names_the_file_being_written(cohort, tmp_path_factory, capsys):
    """A real 'No space left on device': the production folder on a 1 MB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    full = tmp_path_factory.mktemp("full")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        config = yaml.safe_load(cohort["config"].read_text())
        config["exp_arguments"]["production_save_dir"] = str(full)
        cohort["config"].write_text(yaml.safe_dump(config))
        assert main(["--config", str(cohort["config"]), "--no-progress"]) in (1, 2)
        err = capsys.readouterr().err
        assert "No space left on device" in err and "Traceback" not in err
        for line in err.splitlines():
            if "No space left on device" in line:
                assert re.search(r"cannot write [\w.-]+\.(png|csv|h5)", line), line
        # every slide that failed names the file; nothing half-written is left
        assert not list(full.rglob(".*partial*"))
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


def test_killed_while_overwriting_results_csv_lists_exactly_the_finished_slides(cohort):
    """SIGKILL at any moment of an --overwrite run: results.csv lists exactly the slides whose
    blockmaps exist (the row leaves before the blockmap does, enters right after it is written)."""
    root = cohort["root"]
    plist = root / "process_list.csv"
    rows = [f"s{i},tumor,1,,,,,,\n" for i in range(6)]
    plist.write_text(
        "slide_id,label,process,features_path,coords_path,x1,y1,x2,y2\n" + "".join(rows)
    )
    for i in range(6):
        os.symlink(root / "slides" / "alpha.svs", root / "slides" / f"s{i}.svs")
        shutil.copy(
            root / "features" / "pt_files" / "alpha.pt", root / "features" / "pt_files" / f"s{i}.pt"
        )
        shutil.copy(
            root / "features" / "h5_files" / "alpha.h5", root / "features" / "h5_files" / f"s{i}.h5"
        )
    assert main(["--config", str(cohort["config"]), "--no-progress"]) == 0

    def listed() -> set[str]:
        return {r["slide_id"] for r in _results(root)}

    def finished() -> set[str]:
        return {p.parent.name for p in (root / "raw" / "EXP" / "tumor").glob("*/*_blockmap.h5")}

    assert listed() == finished() == {f"s{i}" for i in range(6)}
    for kill_after in (1, 3):  # kill once some blockmaps are gone
        proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO_ROOT / "create_heatmaps.py"),
                "--config",
                str(cohort["config"]),
                "--overwrite",
                "--no-progress",
            ],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while (
            len(finished()) > 6 - kill_after and proc.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.005)
        proc.kill()
        proc.wait()
        assert listed() == finished()
    assert main(["--config", str(cohort["config"]), "--no-progress"]) == 0  # the rerun completes
    assert listed() == finished() == {f"s{i}" for i in range(6)}
