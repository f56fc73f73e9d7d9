r"""Run configuration: frozen dataclasses, a TOML file, and command-line overrides.

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
and bad values are :class:`ConfigError`\s that name the key and what is allowed.
"""

from typing import TYPE_CHECKING

from shoal._lazy import exports

_WHERE = {
    "Flag": "shoal.config.codec",
    "apply_overrides": "shoal.config.codec",
    "coerce": "shoal.config.codec",
    "flags": "shoal.config.codec",
    "from_dict": "shoal.config.codec",
    "load": "shoal.config.codec",
    "to_dict": "shoal.config.codec",
    "to_toml": "shoal.config.codec",
    "DatasetName": "shoal.config.names",
    "PrivacyMode": "shoal.config.names",
    "SecAggMode": "shoal.config.names",
    "StrategyName": "shoal.config.names",
    "CompressorName": "shoal.config.names",
    "CompressionConfig": "shoal.config.schema",
    "DataConfig": "shoal.config.schema",
    "EvalConfig": "shoal.config.schema",
    "HEConfig": "shoal.config.schema",
    "ModelConfig": "shoal.config.schema",
    "PrivacyConfig": "shoal.config.schema",
    "RunConfig": "shoal.config.schema",
    "SecAggConfig": "shoal.config.schema",
    "StrategyConfig": "shoal.config.schema",
}
__getattr__, __dir__ = exports(globals(), _WHERE)

if TYPE_CHECKING:  # what _WHERE loads, for type checkers
    from shoal.config.codec import Flag, apply_overrides, coerce, flags, from_dict, load, to_dict, to_toml
    from shoal.config.names import CompressorName, DatasetName, PrivacyMode, SecAggMode, StrategyName
    from shoal.config.schema import (
        CompressionConfig,
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
    "CompressionConfig",
    "CompressorName",
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
    "apply_overrides",
    "coerce",
    "flags",
    "from_dict",
    "load",
    "to_dict",
    "to_toml",
]
