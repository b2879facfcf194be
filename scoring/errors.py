"""Error types raised at the edges and turned into one clear message in one place (the CLI)."""


class HeatmapError(Exception):
    """Base of every error a user should see as one line, not a traceback."""


class ConfigError(HeatmapError):
    """The YAML config or the process list is wrong: names the file, the key and the expected form."""


class SlideError(HeatmapError):
    """A slide is missing or OpenSlide cannot read it."""


class FeatureError(HeatmapError):
    """Features or coordinates are missing, malformed or disagree with each other."""


class CheckpointMismatch(HeatmapError):
    """A checkpoint does not fit the model: names missing, unexpected and mis-shaped keys."""
