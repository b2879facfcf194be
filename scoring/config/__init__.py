"""The heatmap config: the guide's YAML schema, plus CLAM's own heatmap config mapped onto it.

`load_config(path)` reads and validates a file; each problem is reported with the file, the dotted
key and the form that was expected (ConfigError). Modules: `values` (typed checkers), `schema`
(sections, keys, defaults, CLAM spellings, the checks), `clam` (CLAM's meanings of shared keys),
`model` (the validated `Config`), `load` (the order of it all).
"""

from scoring.config.load import load_config, parse_config
from scoring.config.model import Config, HeatmapConfig, SampleSpec
from scoring.config.schema import SCHEMA

__all__ = ["SCHEMA", "Config", "HeatmapConfig", "SampleSpec", "load_config", "parse_config"]
