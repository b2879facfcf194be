"""The cohort run: one model, many slides, one slide at a time so memory is bounded by the largest.

Order of writes per slide: static heatmap and original, sampled patches, and the blockmap LAST. An
existing blockmap therefore means a finished slide, which is what reruns skip and the viewer lists.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openslide
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from scoremap.atomic import remove_stale_partials
from scoremap.blockmap import (
    Blockmap,
    BlockmapError,
    blockmap_path,
    read_blockmap_header,
    write_blockmap,
)
from scoremap.defaults import MODEL_ARGUMENTS
from scoremap.errors import SlideOpenError
from scoremap.slides import open_slide
from scoring.config import Config
from scoring.errors import ConfigError, FeatureError, HeatmapError, SlideError
from scoring.features import load_bag
from scoring.inventory import SlideJob, list_slides, shard_jobs
from scoring.results import ResultsTable, write_csv
from scoring.sampling import save_samples
from scoring.static import HeatmapParams, render_static

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    scored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (slide_id, message)
    results_csv: Path | None = None
    errors_csv: Path | None = None


def heatmap_paths(config: Config, job: SlideJob) -> tuple[Path, Path]:
    """`{production_save_dir}/{save_exp_code}/{label}/{slide_id}_heatmap.{ext}` and `_original`."""
    folder = config.exp_production_dir / job.label
    ext = config.heatmap.save_ext
    return folder / f"{job.slide_id}_heatmap.{ext}", folder / f"{job.slide_id}_original.{ext}"


def samples_root(config: Config) -> Path:
    return config.exp_production_dir / "sampled_patches"


def remove_old_outputs(config: Config, job: SlideJob, table: ResultsTable) -> None:
    """On --overwrite: the slide's row of results.csv goes first, then its blockmap (the
    "finished" marker), so that a run killed while redoing a slide leaves it unfinished and
    unlisted; then the images, then the samples (their names carry scores, so new ones would not
    replace old ones)."""
    final = blockmap_path(config.exp_raw_dir, job.label, job.slide_id)
    if final.exists():
        table.drop(job.slide_id)
    final.unlink(missing_ok=True)
    for path in heatmap_paths(config, job):
        path.unlink(missing_ok=True)
    root = samples_root(config)
    if not root.is_dir():
        return
    slide_id = job.slide_id
    pattern = re.compile(rf"^\d+_{re.escape(slide_id)}_x_-?\d+_y_-?\d+_score_.*\.png$")
    for path in root.glob("*/*/*.png"):
        if pattern.match(path.name):
            path.unlink(missing_ok=True)


def heatmap_params(config: Config, job: SlideJob, level_count: int) -> HeatmapParams:
    """The static-image parameters for one slide. A vis_level this slide lacks (CLAM's template
    says 1; a single-level scan has only 0) falls back to its coarsest level with a warning
    rather than throwing away the slide's scores."""
    h = config.heatmap
    roi = job.roi if h.use_roi is not False else None
    vis_level = h.vis_level
    if vis_level >= level_count:
        log.warning(
            "%s: heatmap_arguments.vis_level %d does not exist (the slide has %d level%s); "
            "drawing at level %d",
            job.slide_id,
            vis_level,
            level_count,
            "s" if level_count > 1 else "",
            level_count - 1,
        )
        vis_level = level_count - 1
    return HeatmapParams(**{**h._asdict(), "vis_level": vis_level, "roi": roi})


def score_slide(job: SlideJob, config: Config, model) -> Blockmap:
    """Score one slide and write all its outputs; returns what went into its blockmap."""
    from scoring.attention import score_bag

    try:
        slide = open_slide(job.slide_path)
    except SlideOpenError as exc:
        raise SlideError(str(exc)) from None
    try:
        bag = load_bag(job, config, slide.level_downsamples, slide.dimensions)
        try:
            result = score_bag(model, bag.features)
        except FeatureError as exc:  # e.g. 768-wide features for a 1024-wide model: name the file
            raise FeatureError(f"{bag.features_path}: {exc}") from None
        names = config.resolved_class_names(len(result.probs))
        bm = Blockmap(
            slide_id=job.slide_id,
            slide_path=os.path.abspath(job.slide_path),
            label=job.label,
            model_type=config.model_type,
            class_names=names,
            pred=int(result.pred),
            probs=np.asarray(result.probs),
            logits=np.asarray(result.logits),
            l0_patch=bag.l0_patch,
            attention=np.asarray(result.attention, np.float32),
            l0_coords=bag.l0_coords.astype(np.int32),
            attention_per_class=result.attention_per_class,
            extra={
                "ckpt_path": os.path.abspath(config.ckpt_path),
                "features_path": os.path.abspath(bag.features_path),
                "coords_path": os.path.abspath(bag.coords_path),
            },
        )
        del bag
        heatmap_path, original_path = heatmap_paths(config, job)
        render_static(
            slide,
            bm.l0_coords,
            bm.attention,
            bm.l0_patch,
            heatmap_params(config, job, slide.level_count),
            heatmap_path,
            original_path if config.heatmap.save_orig else None,
        )
        for spec in config.samples:
            out_dir = samples_root(config) / f"label_{job.label}_pred_{bm.pred}" / spec.name
            save_samples(
                slide, job.slide_id, bm.attention, bm.l0_coords, bm.l0_patch, spec, out_dir
            )
        write_blockmap(blockmap_path(config.exp_raw_dir, job.label, job.slide_id), bm)
        return bm
    except openslide.OpenSlideError as exc:
        raise SlideError(
            f"{job.slide_path}: OpenSlide cannot read pixels of this slide: {exc}"
        ) from None
    finally:
        slide.close()


def results_table(config: Config, cohort: list[SlideJob]) -> ResultsTable:
    return ResultsTable(
        config.exp_production_dir / "results.csv",
        config.exp_raw_dir,
        cohort,
        config.n_classes or MODEL_ARGUMENTS["n_classes"],
    )


def errors_csv_path(config: Config, shard: tuple[int, int] | None) -> Path:
    name = "errors.csv" if shard is None else f"errors_shard_{shard[0]}_of_{shard[1]}.csv"
    return config.exp_production_dir / name


def load_cohort_model(config: Config):
    """Load the checkpoint once, before any slide, so a wrong checkpoint costs no output."""
    from scoring.models import load_model

    if not config.ckpt_path.is_file():
        raise ConfigError(
            f"{config.source}: model_arguments.ckpt_path: checkpoint not found: {config.ckpt_path}"
        )
    model = load_model(
        config.model_type,
        config.ckpt_path,
        n_classes=config.n_classes,
        in_dim=config.in_dim,
        **config.model_options,
    )
    n_classes = int(model.n_classes)
    if config.class_names is not None and len(config.class_names) != n_classes:
        raise ConfigError(
            f"{config.source}: exp_arguments.class_names has {len(config.class_names)} names but the "
            f"checkpoint {config.ckpt_path} has {n_classes} classes"
        )
    for label, index in (config.label_dict or {}).items():
        if not 0 <= index < n_classes:
            log.warning(
                "%s: data_arguments.label_dict maps %r to class %d, but the model has classes 0..%d",
                config.source,
                label,
                index,
                n_classes - 1,
            )
    return model


def preflight(config: Config) -> None:
    """Folder mistakes are config mistakes: one message before any work, not one per slide."""
    roots = (
        config.data_dir.items() if isinstance(config.data_dir, dict) else [(None, config.data_dir)]
    )
    for key, folder in roots:
        if not folder.is_dir():
            where = "data_arguments.data_dir" + (f".{key}" if key is not None else "")
            raise ConfigError(f"{config.source}: {where}: folder not found: {folder}")
    if config.features_dir is not None and not config.features_dir.is_dir():
        raise ConfigError(
            f"{config.source}: data_arguments.features_dir: folder not found: {config.features_dir}"
        )
    for name, folder in (
        ("exp_arguments.raw_save_dir", config.exp_raw_dir),
        ("exp_arguments.production_save_dir", config.exp_production_dir),
    ):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{config.source}: {name}: cannot create {folder}: {exc.strerror or exc}"
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"{config.source}: {name}: {folder} is not writable")


def run(
    config: Config,
    *,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> RunSummary:
    """Score the cohort; one failing slide is logged and listed in the errors CSV, the rest go on."""
    if config.explain is not None:  # scoring.explain computes the maps; the outputs are next
        raise ConfigError(
            f"{config.source}: explain_arguments: explanation maps are not written to blockmaps "
            "by this version yet (scoring.explain computes them); remove the section to score"
        )
    cohort = list_slides(config)
    if config.features_dir is None:
        unlisted = [job.slide_id for job in cohort if job.features_path is None]
        if unlisted:
            raise ConfigError(
                f"{config.source}: data_arguments.features_dir: missing, and the process list gives "
                f"no features_path for {', '.join(unlisted[:3])}{' ...' if len(unlisted) > 3 else ''}"
            )
    model = load_cohort_model(config)
    preflight(config)
    jobs = shard_jobs(cohort, shard)
    table = results_table(config, cohort)
    summary = RunSummary()
    for folder in (config.exp_raw_dir, config.exp_production_dir):
        if remove_stale_partials(folder):
            log.info("removed partial files left by an interrupted run under %s", folder)
    if not jobs:
        log.warning("no slides to process (process list empty, all process=0, or shard empty)")
    with logging_redirect_tqdm():
        for job in tqdm(jobs, desc="slides", unit="slide", disable=not progress):
            final = blockmap_path(config.exp_raw_dir, job.label, job.slide_id)
            if final.exists() and not overwrite:
                summary.skipped.append(job.slide_id)
                log.info("%s: already done (%s); --overwrite to redo", job.slide_id, final)
                continue
            if overwrite:
                remove_old_outputs(config, job, table)
            start = time.perf_counter()
            try:
                bm = score_slide(job, config, model)
            except Exception as exc:
                known = isinstance(
                    exc, (HeatmapError, BlockmapError, openslide.OpenSlideError, OSError)
                )
                message = str(exc) if known else f"{type(exc).__name__}: {exc}"
                summary.failed.append((job.slide_id, message))
                log.error("%s failed: %s", job.slide_id, message, exc_info=not known)
                continue
            summary.scored.append(job.slide_id)
            table.put(read_blockmap_header(final))
            log.info(
                "%s: %d patches, predicted %s (p=%.4f) in %.1f s",
                job.slide_id,
                bm.bag_size,
                bm.class_names[bm.pred],
                bm.probs[bm.pred],
                time.perf_counter() - start,
            )
    summary.results_csv = table.rebuild()
    errors_path = errors_csv_path(config, shard)
    if summary.failed:
        by_id = {job.slide_id: job for job in jobs}
        write_csv(
            errors_path,
            ["slide_id", "slide_path", "error"],
            [[sid, by_id[sid].slide_path, msg] for sid, msg in summary.failed],
        )
        summary.errors_csv = errors_path
    else:
        errors_path.unlink(missing_ok=True)
    return summary
