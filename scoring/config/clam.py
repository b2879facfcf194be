"""CLAM's meaning of keys that other configs use differently, mapped onto ours.

(Its other spellings, and its extraction-only keys, are entries of the schema.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scoring.config.schema import MODEL_OPTIONS
from scoring.errors import ConfigError


def model_widths(source: Path, model: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """The input width and the model options of a validated `model_arguments` section.

    CLAM's configs call the input feature width `embed_dim`; MIL-Lab's call the hidden width so.
    For clam_* models `embed_dim` is therefore read as the input width (an `in_dim` beside it
    must agree); for the others it is the hidden width, passed on as an option.
    """
    in_dim, embed_dim = model["in_dim"], model["embed_dim"]
    if model["model_type"].startswith("clam") and embed_dim is not None:
        if in_dim is not None and in_dim != embed_dim:
            raise ConfigError(
                f"{source}: model_arguments.embed_dim ({embed_dim}) is CLAM's input feature width "
                f"and disagrees with in_dim ({in_dim})"
            )
        in_dim, embed_dim = embed_dim, None
    options = {
        k: model[k]
        for k, spec in MODEL_OPTIONS.items()
        if spec.target is None and k != "embed_dim" and model.get(k) is not None
    }
    if embed_dim is not None:
        options["embed_dim"] = embed_dim
    return in_dim, options
