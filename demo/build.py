"""Build the demo cohort: real and tiled slides, patch features, a trained CLAM-SB, and its config.

`python -m demo.build [--out data/demo]` (what `make demo` runs) produces, from the one real scan
that every machine can fetch (CMU-1-Small-Region, see demo.cmu):

    data/demo/slides/CMU-1-Small-Region.svs   the real scan itself (copied, not linked: the viewer
                                              refuses symlinks that leave the slide root)
    data/demo/slides/CMU-tiled-large.svs      Aperio-style pyramid quilted from its tissue:
                                              nuclei-dense regions many patches wide in stroma
    data/demo/slides/CMU-tiled-stroma.tif     generic tiled TIFF quilted from its stroma only
    data/demo/features/...                    CLAM (h5_files + pt_files) and TRIDENT layouts
    data/demo/process_list.csv                slide_id,label,process,features_path,coords_path
    data/demo/annotations/                    ground truth: outlines of the nuclei-dense tissue, measured
                                              from pixels (demo.annotations), as QuPath GeoJSON / ASAP XML
    data/demo/checkpoints/s_0_checkpoint.pt   CLAM-SB state dict, saved as CLAM saves it
    data/demo/demo_config.yaml                the heatmap config, paths relative to the repo root
    data/demo/checkpoints/abmil_s_1_checkpoint.pt, data/demo/demo_config_abmil.yaml
                                              a second experiment (DEMO_ABMIL): an ABMIL on the same
                                              patches, which the viewer compares with DEMO

The model learns a task whose answer is visible: a bag is `nuclei_dense` when it holds patches
whose nuclei fraction (haematoxylin-dense pixels, demo.features) exceeds DENSE_THRESHOLD. It is
trained on pseudo-bags drawn from the cohort's patches, so its attention ends up on nuclei-dense
tissue (epidermis), which anyone can check by eye against the slide.

The build is idempotent: every output that exists is kept; a slide that is rebuilt invalidates
its features and the model. Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from demo.cmu import cmu_small_region
from demo.features import FEATURE_DIM, NUCLEI_INDEX, patch_features
from demo.patches import patch_grid, tissue_mask, write_clam, write_trident
from demo.pyramid import write_pyramid
from demo.tissue import tissue_source
from scoremap.atomic import atomic_output
from scoremap.checkout import DEMO_DIR, REPO_ROOT

if TYPE_CHECKING:
    from scoring.models.base import MILModel

log = logging.getLogger("demo.build")

CLASS_NAMES = ("nuclei_sparse", "nuclei_dense")
#: The demo's second experiment: another model type on the same patches, so the viewer can compare.
SECOND_MODEL = "abmil"
SECOND_EXP = "DEMO_ABMIL"
#: A patch is nuclei-dense when this fraction of its pixels is haematoxylin-dense (demo.features).
DENSE_THRESHOLD = 0.25
#: A slide is labelled nuclei_dense when it has at least this many nuclei-dense patches.
DENSE_PATCHES_FOR_LABEL = 5
ENCODER_NAME = "demo-stain-texture-v1"


@dataclass
class SlideSpec:
    """One demo slide: how to make it and how its coordinates are laid out on disk."""

    slide_id: str
    filename: str
    layout: str  # "clam" or "trident"
    patch_size_level0: int
    size: tuple[int, int] | None = None  # None: the real CMU scan itself
    seed: int = 0
    prefer: str = "tissue"
    crop: int = 2048
    block: int = 256  # quilt cell of the tiled slides (demo.pyramid.write_pyramid)
    dense_area: float = 0.35  # share of the tissue in nuclei-dense regions (write_pyramid)
    patch_level: int = 0  # CLAM: level at which patch_size is given
    target_magnification: float = 10.0  # TRIDENT
    annotation: str = (
        "geojson"  # format of its ground-truth file (demo.annotations): geojson or xml
    )


def default_specs(
    large: tuple[int, int] = (32768, 24576), stroma: tuple[int, int] = (16384, 12288)
) -> list[SlideSpec]:
    """The demo cohort; tests pass smaller sizes to build a miniature of the same cohort."""
    return [
        SlideSpec(
            "CMU-1-Small-Region", "CMU-1-Small-Region.svs", "clam", 256, annotation="geojson"
        ),
        SlideSpec(
            "CMU-tiled-large",
            "CMU-tiled-large.svs",
            "trident",
            512,
            size=large,
            seed=1,
            annotation="xml",
        ),
        SlideSpec(
            "CMU-tiled-stroma",
            "CMU-tiled-stroma.tif",
            "clam",
            256,
            size=stroma,
            seed=2,
            prefer="stroma",
            crop=768,
            dense_area=0.0,
            patch_level=1,
        ),
    ]


@dataclass
class BuiltSlide:
    spec: SlideSpec
    slide_path: Path
    features_path: Path
    coords_path: Path
    features: np.ndarray
    coords: np.ndarray
    label: str
    rebuilt: bool = False  # slide or features made in this run (so the model must be retrained)


@dataclass
class BuiltCohort:
    """The demo's files as `build_cohort` left them (the viewer's `Cohort` is what it serves)."""

    out: Path
    slides: list[BuiltSlide] = field(default_factory=list)
    process_list: Path | None = None
    checkpoint: Path | None = None
    config: Path | None = None
    summary: dict = field(default_factory=dict)
    second_config: Path | None = None  # the second experiment (SECOND_MODEL), to compare with
    second_summary: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# slides, coords, features


def _copy_atomic(src: Path, dst: Path) -> None:
    """A copy that appears complete or not at all."""
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)


def _make_slide(spec: SlideSpec, slides_dir: Path, cmu: Path, sources: dict) -> tuple[Path, bool]:
    """The slide file, built unless it exists; True when it was (re)built now."""
    path = slides_dir / spec.filename
    if path.exists():
        return path, False
    t0 = time.perf_counter()
    if spec.size is None:
        _copy_atomic(cmu, path)
    else:
        key = (spec.crop, spec.prefer)
        if key not in sources:
            sources[key] = tissue_source(cmu, spec.crop, prefer=spec.prefer)
        w, h = spec.size
        write_pyramid(
            path,
            w,
            h,
            sources[key],
            seed=spec.seed,
            block=spec.block,
            dense_area=spec.dense_area,
            mpp=0.499,
        )
    log.info("slide %s: %s in %.1fs", spec.slide_id, path, time.perf_counter() - t0)
    return path, True


def _feature_paths(spec: SlideSpec, features_dir: Path) -> tuple[Path, Path]:
    """(features file, coords file): CLAM keeps them apart (pt + h5), TRIDENT in one h5."""
    if spec.layout == "clam":
        return (
            features_dir / "pt_files" / f"{spec.slide_id}.pt",
            features_dir / "h5_files" / f"{spec.slide_id}.h5",
        )
    h5 = features_dir / "trident" / f"{spec.slide_id}.h5"
    return h5, h5


def _read_bag(coords_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and coords back from an h5 we wrote (both layouts keep both datasets there)."""
    import h5py

    with h5py.File(coords_path, "r") as f:
        return np.asarray(f["features"][()], dtype=np.float32), np.asarray(
            f["coords"][()], dtype=np.int64
        )


def _make_features(
    spec: SlideSpec, slide_path: Path, features_dir: Path, force: bool
) -> tuple[Path, Path, np.ndarray, np.ndarray, bool]:
    """Patch the slide, describe every patch and write the coords layout of `spec`.

    Kept when both files exist (unless `force`, for a slide rebuilt now); the last value says
    whether they were computed now, which makes the model stale.
    """
    feat_path, coords_path = _feature_paths(spec, features_dir)
    if not force and feat_path.exists() and coords_path.exists():
        features, coords = _read_bag(coords_path)
        return feat_path, coords_path, features, coords, False
    t0 = time.perf_counter()
    mask = tissue_mask(slide_path)
    coords = patch_grid(slide_path, spec.patch_size_level0, mask=mask)
    features = patch_features(slide_path, coords, spec.patch_size_level0)
    if spec.layout == "clam":
        import openslide

        with openslide.OpenSlide(str(slide_path)) as s:
            ds = s.level_downsamples[spec.patch_level]
        patch_size = round(spec.patch_size_level0 / ds)
        write_clam(
            features_dir,
            spec.slide_id,
            features,
            coords,
            slide_path=slide_path,
            patch_size=patch_size,
            patch_level=spec.patch_level,
            patches_dir=_rel(features_dir.parent / "patches"),
        )
    else:
        write_trident(
            coords_path,
            features,
            coords,
            slide_path=slide_path,
            patch_size_level0=spec.patch_size_level0,
            target_magnification=spec.target_magnification,
            name=spec.slide_id,
            encoder=ENCODER_NAME,
            savetodir=_rel(coords_path.parent),
        )
    log.info(
        "features %s: %d patches x %d in %.1fs",
        spec.slide_id,
        len(coords),
        features.shape[1],
        time.perf_counter() - t0,
    )
    return feat_path, coords_path, features, coords, True


def _make_annotation(spec: SlideSpec, slide_path: Path, folder: Path, force: bool) -> Path | None:
    """The slide's outline of nuclei-dense tissue (kept when it exists, unless the slide is new);
    None for a slide without such tissue, which gets no file."""
    from demo.annotations import dense_outline, write_asap, write_qupath

    path = folder / f"{spec.slide_id}.{spec.annotation}"
    for other in ("geojson", "json", "xml"):  # a file of another format would be found first
        if other != spec.annotation:
            (folder / f"{spec.slide_id}.{other}").unlink(missing_ok=True)
    if path.exists() and not force:
        return path
    geometry = dense_outline(slide_path, spec.patch_size_level0, DENSE_THRESHOLD)
    if geometry.is_empty:
        path.unlink(missing_ok=True)
        return None
    (write_asap if spec.annotation == "xml" else write_qupath)(path, geometry)
    log.info(
        "annotation %s: %s, %.0f um2 nuclei-dense",
        spec.slide_id,
        path.name,
        geometry.area * 0.499**2,
    )
    return path


def slide_label(features: np.ndarray) -> str:
    """The demo's ground truth: nuclei_dense when enough patches are nuclei-dense."""
    dense = int((features[:, NUCLEI_INDEX] > DENSE_THRESHOLD).sum())
    return CLASS_NAMES[int(dense >= DENSE_PATCHES_FOR_LABEL)]


# ----------------------------------------------------------------------------------------------
# training


def _pseudo_bags(
    density: np.ndarray,
    n_bags: int,
    rng: np.random.Generator,
    size_range: tuple[int, int] = (16, 96),
) -> list[tuple[np.ndarray, float]]:
    """Bags of patch indices with a soft target P(nuclei_dense) = min(1, max density / (2 T)).

    Each bag is drawn from the patches below a random density quantile, so bags' densest patches
    span the whole range. A target that grows linearly with the densest patch's density (0.5 at
    T = DENSE_THRESHOLD) makes the model find the densest patch of every bag, sparse bags
    included, so its attention ranks patches by nuclei density across the whole range; a hard
    0/1 label (or a steep sigmoid) only separates patches near T and leaves the rest unordered.
    """
    order = np.sort(density)
    bags = []
    for _ in range(n_bags):
        n = int(rng.integers(*size_range))
        cap = order[min(len(order) - 1, int(rng.uniform(0.05, 1.0) * len(order)))]
        pool = np.flatnonzero(density <= cap)
        idx = rng.choice(pool, n)
        p = min(1.0, float(density[idx].max()) / (2.0 * DENSE_THRESHOLD))
        bags.append((idx, p))
    return bags


def train_model(
    features: np.ndarray,
    *,
    steps: int = 800,
    seed: int = 0,
    lr: float = 5e-4,
    model_type: str = "clam_sb",
) -> tuple[MILModel, dict]:
    """A CLAM-SB (or another model type) trained on pseudo-bags of `features` (all cohort patches)
    for the density task.

    Bag-level cross-entropy with soft targets only (CLAM's instance clustering loss adds nothing
    to this task). Deterministic for a seed. Returns the model (eval mode) and a summary with the
    held-out accuracy (prediction vs. whether the bag's densest patch exceeds the threshold).
    """
    import torch

    from scoring.models import build_model

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    density = features[:, NUCLEI_INDEX]
    if not (density > DENSE_THRESHOLD).any() or not (density <= DENSE_THRESHOLD).any():
        raise ValueError(
            "the cohort needs both nuclei-dense and sparse patches to train the demo model"
        )
    x_all = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    model = build_model(model_type, in_dim=features.shape[1], n_classes=len(CLASS_NAMES))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and immune to busy cores
    t0 = time.perf_counter()
    try:
        model.train()
        for idx, p in _pseudo_bags(density, steps, rng):
            logits = model(x_all[torch.from_numpy(idx)])
            target = torch.tensor([[1.0 - p, p]], dtype=torch.float32)
            loss = torch.nn.functional.cross_entropy(logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        held_out = _pseudo_bags(density, 200, np.random.default_rng(seed + 1))
        with torch.inference_mode():
            for idx, p in held_out:
                pred = int(model(x_all[torch.from_numpy(idx)]).argmax().item())
                correct += int(pred == int(p > 0.5))
    finally:
        torch.set_num_threads(threads)
    summary = {
        "model_type": model_type,
        "steps": steps,
        "seed": seed,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "held_out_bag_accuracy": correct / len(held_out),
    }
    return model, summary


def attention_density_spearman(model: MILModel, features: np.ndarray) -> float:
    """Spearman correlation of the model's raw attention with nuclei fraction over one bag."""
    import torch
    from scipy.stats import spearmanr

    with torch.inference_mode():
        _, attention = model.forward_with_attention(
            torch.from_numpy(np.ascontiguousarray(features))
        )
    rho = spearmanr(attention.numpy(), features[:, NUCLEI_INDEX]).statistic
    return float(rho)


def _save_checkpoint(model: MILModel, path: Path) -> None:
    """CLAM's checkpoint format: torch.save of the bare state dict (no wrapper, no optimiser)."""
    import torch

    with atomic_output(path) as tmp:
        torch.save(model.state_dict(), tmp)


# ----------------------------------------------------------------------------------------------
# process list and config


def _rel(path: Path) -> str:
    """Paths as the config and process list hold them: relative to the repo root when inside it."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def _write_text(path: Path, text: str) -> None:
    """Atomic write, skipped when the file already holds `text` (keeps mtimes for idempotency)."""
    if path.exists() and path.read_text() == text:
        return
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def _process_list_text(slides: Sequence[BuiltSlide]) -> str:
    """The guide's process-list CSV, with explicit per-slide feature and coords paths."""
    lines = ["slide_id,label,process,features_path,coords_path"]
    for s in slides:
        # ids without the extension when it is the cohort's slide_ext (.svs), with it otherwise
        sid = s.spec.slide_id if s.spec.filename.endswith(".svs") else s.spec.filename
        lines.append(f"{sid},{s.label},1,{_rel(s.features_path)},{_rel(s.coords_path)}")
    return "\n".join(lines) + "\n"


def demo_config(
    out: Path,
    *,
    process_list: Path,
    checkpoint: Path,
    in_dim: int = FEATURE_DIM,
    model_type: str = "clam_sb",
    exp_code: str = "DEMO",
) -> dict:
    """The heatmap config of the demo, in the guide's schema (plus CLAM's label_dict and the
    viewer's annotations_dir)."""
    return {
        "exp_arguments": {
            "n_classes": len(CLASS_NAMES),
            "save_exp_code": exp_code,
            "raw_save_dir": "heatmaps/heatmap_raw_results",
            "production_save_dir": "heatmaps/heatmap_production_results",
            "batch_size": 256,
        },
        "data_arguments": {
            "data_dir": _rel(out / "slides"),
            "slide_ext": ".svs",
            "features_dir": _rel(out / "features"),
            "process_list": _rel(process_list),
            "label_dict": {name: i for i, name in enumerate(CLASS_NAMES)},
            "annotations_dir": _rel(out / "annotations"),
        },
        "model_arguments": {
            "ckpt_path": _rel(checkpoint),
            "model_type": model_type,
            "n_classes": len(CLASS_NAMES),
            "in_dim": in_dim,
        },
        "heatmap_arguments": {
            "vis_level": -1,
            "alpha": 0.4,
            "cmap": "jet",
            "convert_to_percentiles": True,
            "blur": False,
            "save_orig": True,
            "save_ext": "png",
        },
        "sample_arguments": {
            "samples": [
                {"name": "topk_high_attention", "sample": True, "seed": 1, "k": 15, "mode": "topk"},
                {
                    "name": "bottomk_low_attention",
                    "sample": True,
                    "seed": 1,
                    "k": 10,
                    "mode": "bottomk",
                },
            ],
        },
    }


# ----------------------------------------------------------------------------------------------


def build_cohort(
    out: str | os.PathLike = DEMO_DIR,
    *,
    specs: Sequence[SlideSpec] | None = None,
    steps: int = 800,
    seed: int = 0,
) -> BuiltCohort:
    """Build (or complete) the demo cohort under `out`; see the module docstring for the files."""
    out = Path(out)
    specs = list(specs) if specs is not None else default_specs()
    cohort = BuiltCohort(out)
    cmu = cmu_small_region()
    sources: dict = {}
    for spec in specs:
        slide_path, rebuilt = _make_slide(spec, out / "slides", cmu, sources)
        feat_path, coords_path, features, coords, fresh = _make_features(
            spec, slide_path, out / "features", rebuilt
        )
        cohort.slides.append(
            BuiltSlide(
                spec,
                slide_path,
                feat_path,
                coords_path,
                features,
                coords,
                slide_label(features),
                rebuilt or fresh,
            )
        )
        _make_annotation(spec, slide_path, out / "annotations", rebuilt)

    cohort.process_list = out / "process_list.csv"
    _write_text(cohort.process_list, _process_list_text(cohort.slides))

    cohort.checkpoint = out / "checkpoints" / "s_0_checkpoint.pt"
    summary_path = out / "checkpoints" / "training_summary.json"
    stale = any(s.rebuilt for s in cohort.slides) or not summary_path.exists()
    if stale or not cohort.checkpoint.exists():
        pooled = np.concatenate([s.features for s in cohort.slides])
        model, summary = train_model(pooled, steps=steps, seed=seed)
        summary["spearman_attention_vs_nuclei"] = {
            s.spec.slide_id: round(attention_density_spearman(model, s.features), 4)
            for s in cohort.slides
        }
        summary.update(
            {
                "task": f"nuclei_dense bag: its densest patch has nuclei_fraction > {DENSE_THRESHOLD}",
                "classes": list(CLASS_NAMES),
                "in_dim": FEATURE_DIM,
                "encoder": ENCODER_NAME,
            }
        )
        _save_checkpoint(model, cohort.checkpoint)
        _write_text(summary_path, json.dumps(summary, indent=2) + "\n")
        log.info("model: %s", summary)
    cohort.summary = json.loads(summary_path.read_text())

    # the second experiment: an ABMIL trained on the same patches (another seed), for comparison
    second = out / "checkpoints" / f"{SECOND_MODEL}_s_1_checkpoint.pt"
    second_summary = out / "checkpoints" / f"training_summary_{SECOND_MODEL}.json"
    if stale or not second.exists() or not second_summary.exists():
        pooled = np.concatenate([s.features for s in cohort.slides])
        model, summary = train_model(pooled, steps=steps, seed=seed + 1, model_type=SECOND_MODEL)
        summary["spearman_attention_vs_nuclei"] = {
            s.spec.slide_id: round(attention_density_spearman(model, s.features), 4)
            for s in cohort.slides
        }
        _save_checkpoint(model, second)
        _write_text(second_summary, json.dumps(summary, indent=2) + "\n")
        log.info("second model: %s", summary)
    cohort.second_summary = json.loads(second_summary.read_text())

    cohort.config = out / "demo_config.yaml"
    cohort.second_config = out / f"demo_config_{SECOND_MODEL}.yaml"
    for path, checkpoint, model_type, code in (
        (cohort.config, cohort.checkpoint, "clam_sb", "DEMO"),
        (cohort.second_config, second, SECOND_MODEL, SECOND_EXP),
    ):
        config = demo_config(
            out,
            process_list=cohort.process_list,
            checkpoint=checkpoint,
            model_type=model_type,
            exp_code=code,
        )
        header = (
            "# Demo heatmap config written by `python -m demo.build`; run from the repo root:\n"
            "#   python create_heatmaps.py --config " + _rel(path) + "\n"
        )
        _write_text(path, header + yaml.safe_dump(config, sort_keys=False))
    return cohort


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: `python -m demo.build [--out DIR] [--steps N]`; prints what the cohort holds."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.build", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out",
        default=str(DEMO_DIR),
        help="output folder (default: data/demo in the repo)",
    )
    parser.add_argument(
        "--steps", type=int, default=800, help="training steps (pseudo-bags) of the model"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only print the summary")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    cohort = build_cohort(args.out, steps=args.steps)
    import openslide

    for s in cohort.slides:
        with openslide.OpenSlide(str(s.slide_path)) as sl:
            w, h = sl.dimensions
        print(
            f"{s.spec.slide_id:22s} {w}x{h:<6d} {len(s.coords):5d} patches ({s.spec.layout}, "
            f"{s.spec.patch_size_level0}px) label={s.label}"
        )
    print(
        f"model: {_rel(cohort.checkpoint)} held-out bag accuracy "
        f"{cohort.summary.get('held_out_bag_accuracy')}, attention~nuclei Spearman "
        f"{cohort.summary.get('spearman_attention_vs_nuclei')}"
    )
    print(
        f"second model ({SECOND_EXP}): held-out bag accuracy "
        f"{cohort.second_summary.get('held_out_bag_accuracy')}, "
        f"attention~nuclei Spearman {cohort.second_summary.get('spearman_attention_vs_nuclei')}"
    )
    print(
        f"configs: {_rel(cohort.config)}, {_rel(cohort.second_config)}  ({time.perf_counter() - t0:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
