"""Every default of the heatmaps and the viewer, in one place.

The scoring config's `heatmap_arguments` take their defaults from `HEATMAP_ARGUMENTS` (CLAM's
template values, so a CLAM config means the same here); the viewer's settings from
`VIEWER_SETTINGS`; the overlay's colouring (colormap, normalisation, threshold, blur, opacity) from
`OVERLAY`; the view a user downloads (`view.png`) from `EXPORT_VIEW`; the scoring config's other
sections from `SCORING_ARGUMENTS`, `SAMPLE_ARGUMENTS` and
`EXPLAIN_ARGUMENTS`; a model the checkpoint does not describe
from `MODEL_ARGUMENTS`. The viewer page reads the overlay defaults and the choices it offers from the API
(`/api/slides/<id>`: `defaults`, `choices`), never from copies in JavaScript.
"""

from __future__ import annotations

from types import MappingProxyType

#: Colormaps the menus offer first; any matplotlib name works.
SUGGESTED_CMAPS: tuple[str, ...] = ("jet", "coolwarm", "viridis", "plasma", "hot")

#: `heatmap_arguments` of the scoring config (static heatmaps), with CLAM's defaults.
HEATMAP_ARGUMENTS = MappingProxyType(
    {
        "vis_level": -1,  # -1: the level whose downsample is closest to 32x
        "alpha": 0.4,  # 0: slide only, 1: heatmap only
        "cmap": "jet",
        "convert_to_percentiles": True,
        "blur": False,
        "save_orig": True,
        "save_ext": "png",
        "custom_downsample": 1.0,
        "blank_canvas": False,
        "binarize": False,
        "binary_thresh": -1.0,  # < 0: 1/N when binarize
        "use_roi": None,  # None: use the process list's ROI columns when it has them
    }
)

#: How overlay tiles are coloured when a request does not say, and the ranges a client may ask.
OVERLAY = MappingProxyType(
    {
        "cmap": HEATMAP_ARGUMENTS["cmap"],
        "norm": "percentile",
        "threshold": 0.0,  # on the normalised 0..1 scale: lower scores are transparent
        "threshold_min": 0.0,
        "threshold_max": 1.0,
        "threshold_step": 0.01,
        "blur": False,
        "alpha": 0.5,  # applied in the browser: changing it fetches no tile
        # the difference of two experiments, percentile(A) - percentile(B) on -1..1: diverging, white at 0
        "difference_cmap": "RdBu_r",
    }
)

#: Reading the attention (`/api/slides/<id>/histogram`, `/localization`, `/topk`): the histogram's
#: bins when not asked and the most a client may ask, the score at or above which the region whose
#: Dice is measured starts when the request gives no range, and how many patches a top list shows.
ANALYSIS = MappingProxyType({"bins": 50, "bins_max": 1000, "dice_threshold": 0.5, "topk": 10})

#: `/api/slides/<id>/export/view.png`: the picture's width in pixels when not asked, the widths
#: (and heights) it may have, and its overlay opacity (the page's own).
EXPORT_VIEW = MappingProxyType(
    {
        "width": 1600,
        "width_min": 16,
        "side_max": 4096,  # neither width nor height beyond it
        "alpha": OVERLAY["alpha"],
    }
)

#: The scoring config's keys outside `heatmap_arguments` that have a default.
SCORING_ARGUMENTS = MappingProxyType(
    {
        "slide_ext": ".svs",  # data_arguments: slides named {slide_id}{slide_ext}
        "patch_level": 0,  # patching_arguments: the level CLAM's patch_size is at
    }
)

#: Each `sample_arguments.samples` entry: whether it is drawn, how many patches, the seed of
#: range_sample's draw (CLAM's template values).
SAMPLE_ARGUMENTS = MappingProxyType({"sample": True, "k": 15, "seed": 1})

#: The explanation maps a scoring config's `explain_arguments` may ask for (scoring.explain).
EXPLAIN_METHODS: tuple[str, ...] = ("contribution", "occlusion", "integrated_gradients")

#: `explain_arguments` of the scoring config, used where the section is given but a key is not;
#: a config without the section computes no explanation (the blockmap is as without this feature).
#: `target`: "predicted" or a class name or index; `occlusion_block`: "auto" (one patch at a time).
EXPLAIN_ARGUMENTS = MappingProxyType(
    {
        "methods": EXPLAIN_METHODS,
        "ig_steps": 32,
        "faithfulness": True,
        "target": "predicted",
        "occlusion_block": "auto",
    }
)

#: What a model is built with where neither the config nor the checkpoint's tensors say: then only
#: its strict load's report of the missing keys is wanted from it (1024: CLAM's ResNet-50 features).
MODEL_ARGUMENTS = MappingProxyType({"in_dim": 1024, "n_classes": 2})

#: The viewer's server settings (`create_app` mapping keys, also `MIL_VIEWER_<KEY>` variables).
VIEWER_SETTINGS = MappingProxyType(
    {
        "TILE_SIZE": 254,  # openslide's deepzoom defaults: 254 + 1 overlap = 256-px tiles
        "TILE_OVERLAP": 1,
        "LIMIT_BOUNDS": True,
        "JPEG_QUALITY": 75,
        "TILE_MAX_AGE": 3600,  # Cache-Control max-age of tiles and images, seconds
        "DEFAULT_CMAP": OVERLAY["cmap"],
        "DEFAULT_NORM": OVERLAY["norm"],
        "THUMBNAIL_SIZE": 256,
        "TOPK_MAX": 1000,
        "CACHE_BYTES": 384
        * 1024
        * 1024,  # scores, score pyramids, open slides, images: per process
        "OPENSLIDE_CACHE_BYTES": 128 * 1024 * 1024,  # decoded slide tiles, shared by all slides
        "COHORT_BUDGET_S": 10.0,  # seconds a cohort-wide answer computes before listing the rest as pending
    }
)
