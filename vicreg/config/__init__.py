"""One typed config tree for a run, loaded from YAML with unknown keys rejected.

  tree      - the dataclasses and the allowed names of every choice (declared once)
  load      - YAML in, keys and types checked, section.key=value overrides, flatten/save
  validate  - the value checks types cannot express
  reference - docs/configuration.md, generated from tree.py

``from vicreg.config import load_config, Config`` is the public way in.
"""

from ..errors import ConfigError
from .load import (
    RENAMED,
    config_from_dict,
    flatten,
    load_config,
    load_dataclass,
    parse_overrides,
    read_yaml,
    save_config,
    set_key,
    to_dict,
    unflatten,
)
from .tree import (
    FIXED_CHANNELS,
    Arch,
    AugmentConfig,
    Config,
    DataConfig,
    Dataset,
    EvalConfig,
    Init,
    LossConfig,
    ModelConfig,
    Normalise,
    OnDevice,
    OptimConfig,
    Optimizer,
    Precision,
    Protocol,
    Resample,
    ScheduleEvery,
    TrainConfig,
    Views,
    get_key,
    is_ordinal,
    names,
    primary_metric,
)
from .validate import validate

__all__ = ["FIXED_CHANNELS", "RENAMED", "Arch", "AugmentConfig", "Config", "ConfigError", "DataConfig", "Dataset",
           "EvalConfig", "Init", "LossConfig", "ModelConfig", "Normalise", "OnDevice", "OptimConfig", "Optimizer",
           "Precision", "Protocol", "Resample", "ScheduleEvery", "TrainConfig", "Views", "config_from_dict",
           "flatten", "get_key", "is_ordinal", "load_config", "load_dataclass", "names", "parse_overrides",
           "primary_metric", "read_yaml", "save_config", "set_key", "to_dict", "unflatten", "validate"]
