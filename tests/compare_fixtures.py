"""Three experiments scored by the real pipeline on the same real slides, for the comparison tests.

    slides/alpha.svs, slides/beta.svs     copies of the real CMU scan
    features/                              CLAM layout: 256-px patches every 256 px (demo.features)
    trident/                               TRIDENT layout: 512-px patches every 384 px, offset by 100
    ABMIL_A.yaml   abmil on the CLAM patches            (experiment ABMIL_A)
    CLAM_B.yaml    clam_sb on the TRIDENT patches       (experiment CLAM_B: another grid)
    ABMIL_C.yaml   abmil, other weights, CLAM patches   (experiment ABMIL_C: the same grid as A; it
                   predicts tumour everywhere, so it disagrees with A where A says normal)

Each config is run through `create_heatmaps.py`'s entry point (scoring.cli.main); the models have
seeded random weights, saved as checkpoints the loader reads like any other.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

EXPERIMENTS = ("ABMIL_A", "CLAM_B", "ABMIL_C")
SLIDES = ("alpha", "beta")


@dataclass(frozen=True)
class ComparedCohort:
    root: Path
    configs: dict[str, Path]  # experiment -> config


def _grid(width: int, height: int, patch: int, step: int, offset: int) -> np.ndarray:
    xs = np.arange(offset, width - patch + 1, step)
    ys = np.arange(offset, height - patch + 1, step)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], 1).astype(np.int64)


def build_compared(root: Path, cmu_slide: Path) -> ComparedCohort:
    import torch

    from demo.features import FEATURE_DIM, patch_features
    from demo.patches import write_clam, write_trident
    from scoring.cli import main
    from scoring.models import build_model

    slides = root / "slides"
    slides.mkdir(parents=True)
    clam_coords = _grid(2220, 2967, 256, 256, 0)
    trident_coords = _grid(2220, 2967, 512, 384, 100)
    lines = ["slide_id,label,process,features_path,coords_path"]
    trident_lines = ["slide_id,label,process,features_path,coords_path"]
    for sid in SLIDES:
        path = slides / f"{sid}.svs"
        shutil.copyfile(cmu_slide, path)
        write_clam(
            root / "features",
            sid,
            patch_features(path, clam_coords, 256),
            clam_coords,
            slide_path=path,
            patch_size=256,
        )
        h5 = root / "trident" / f"{sid}.h5"
        write_trident(
            h5,
            patch_features(path, trident_coords, 512),
            trident_coords,
            slide_path=path,
            patch_size_level0=512,
            target_magnification=20,
        )
        lines.append(f"{sid},tumor,1,,")
        trident_lines.append(f"{sid},tumor,1,{h5},{h5}")
    (root / "process_list.csv").write_text("\n".join(lines) + "\n")
    (root / "process_list_trident.csv").write_text("\n".join(trident_lines) + "\n")
    configs = {}
    for seed, (name, model_type, plist) in enumerate(
        (
            ("ABMIL_A", "abmil", "process_list.csv"),
            ("CLAM_B", "clam_sb", "process_list_trident.csv"),
            ("ABMIL_C", "abmil", "process_list.csv"),
        )
    ):
        torch.manual_seed(seed)
        checkpoint = root / f"{name}.pt"
        weights = build_model(model_type, in_dim=FEATURE_DIM, n_classes=2).state_dict()
        if name == "ABMIL_C":  # a model that calls every slide tumour: the experiments disagree
            weights["classifier.bias"] = torch.tensor([-50.0, 50.0])
        torch.save(weights, checkpoint)
        config = {
            "exp_arguments": {
                "n_classes": 2,
                "save_exp_code": name,
                "raw_save_dir": str(root / "raw"),
                "production_save_dir": str(root / "prod"),
            },
            "data_arguments": {
                "data_dir": str(slides),
                "slide_ext": ".svs",
                "features_dir": str(root / "features"),
                "process_list": str(root / plist),
                "label_dict": {"normal": 0, "tumor": 1},
            },
            "model_arguments": {
                "ckpt_path": str(checkpoint),
                "model_type": model_type,
                "n_classes": 2,
                "in_dim": FEATURE_DIM,
            },
            "heatmap_arguments": {"vis_level": -1, "save_orig": False, "save_ext": "png"},
            "sample_arguments": {"samples": []},
        }
        configs[name] = root / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(config))
        if main(["--config", str(configs[name]), "--no-progress"]) != 0:
            raise RuntimeError(f"scoring {name} failed")
    return ComparedCohort(root, configs)
