"""Run configuration: frozen dataclasses, a TOML file, and command-line overrides.

A config file has top-level ``rounds``/``seed``/... and one table per section::

    rounds = 50
    seed = 7

    [data]
    dataset = "fashion-mnist"
    partition = "shards"
    shards_per_client = 2

    [strategy]
    clients_per_round = 10

Every key is also a command-line flag (``--clients-per-round 10``); a key whose name
appears in two sections is spelled with its section (``--model-name``). Unknown keys
and bad values are :class:`ConfigError`\\s that name the key and what is allowed.
"""

from shoal.config.codec import Flag, apply_overrides, coerce, flags, from_dict, load, to_dict, to_toml
from shoal.config.names import DatasetName, PrivacyMode, SecAggMode, StrategyName, TransformName
from shoal.config.schema import (
    DataConfig,
    EvalConfig,
    HEConfig,
    ModelConfig,
    PrivacyConfig,
    RunConfig,
    SecAggConfig,
    StrategyConfig,
)

__all__ = [
    "DataConfig",
    "DatasetName",
    "EvalConfig",
    "Flag",
    "HEConfig",
    "ModelConfig",
    "PrivacyConfig",
    "PrivacyMode",
    "RunConfig",
    "SecAggConfig",
    "SecAggMode",
    "StrategyConfig",
    "StrategyName",
    "TransformName",
    "apply_overrides",
    "coerce",
    "flags",
    "from_dict",
    "load",
    "to_dict",
    "to_toml",
]
