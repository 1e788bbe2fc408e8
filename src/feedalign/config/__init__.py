"""Run configuration: frozen dataclasses per component, YAML loading, dotted overrides and
pre-training checks. Imports only the standard library and PyYAML."""

from feedalign.config.errors import ConfigError
from feedalign.config.loader import config_from_dict, config_to_dict, dump_config, load_config
from feedalign.config.schema import (
    Config,
    DataSourceConfig,
    LoraConfig,
    MarginsConfig,
    ModelConfig,
    ReferenceConfig,
    TrainConfig,
)

__all__ = [
    "Config",
    "ConfigError",
    "DataSourceConfig",
    "LoraConfig",
    "MarginsConfig",
    "ModelConfig",
    "ReferenceConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
]
