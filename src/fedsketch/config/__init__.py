"""Typed experiment configuration: one frozen dataclass per section, loaded from TOML.

A leaf package: it imports no other fedsketch module, so every other module may import it.

- :mod:`.schema`: the sections, their defaults, allowed values and docs, and :class:`ExperimentConfig`;
- :mod:`.load`: TOML and ``--set`` overrides in, every error found out (:class:`ConfigError`);
- :mod:`.identity`: the config hash and when a finished run is the same experiment;
- :mod:`.render`: the resolved TOML of a run folder and the key reference (:func:`describe`);
- :mod:`.readers`: the one checked reader of every input file (config and suite TOML, theta and pilots
  JSON, ``metrics.jsonl``, profile CSV), whose errors name the file and line.
"""

from __future__ import annotations

from fedsketch.config.identity import EXECUTION_KEYS, HASH_DEFAULTS, config_hash, same_experiment
from fedsketch.config.load import (
    ConfigError,
    collect,
    did_you_mean,
    load_config,
    parse_override,
    read_toml,
    validate_file,
)
from fedsketch.config.render import describe, to_toml
from fedsketch.config.schema import (
    DIVERGENCE_FACTOR,
    EMBEDDED_MODEL,
    EMBEDDED_MODELS,
    INF,
    METHOD_NAMES,
    RANDOM_MODELS,
    RANK_POLICY_NAMES,
    SAMPLING_POLICY_NAMES,
    SECTIONS,
    TASKS,
    AdapterConfig,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    FLConfig,
    ModelConfig,
    NetworkConfig,
    OutputConfig,
    PlannerConfig,
    TrainConfig,
    opt,
)

__all__ = [
    "DIVERGENCE_FACTOR",
    "EMBEDDED_MODEL",
    "EMBEDDED_MODELS",
    "EXECUTION_KEYS",
    "HASH_DEFAULTS",
    "INF",
    "METHOD_NAMES",
    "RANDOM_MODELS",
    "RANK_POLICY_NAMES",
    "SAMPLING_POLICY_NAMES",
    "SECTIONS",
    "TASKS",
    "AdapterConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "FLConfig",
    "ModelConfig",
    "NetworkConfig",
    "OutputConfig",
    "PlannerConfig",
    "TrainConfig",
    "collect",
    "config_hash",
    "describe",
    "did_you_mean",
    "load_config",
    "opt",
    "parse_override",
    "read_toml",
    "same_experiment",
    "to_toml",
    "validate_file",
]
