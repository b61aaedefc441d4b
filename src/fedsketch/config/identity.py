"""Which experiment a config is: its short hash, and when a finished run counts as the same experiment.

The bottom of the config package: it imports no other module of it (``schema`` imports this one for
``ExperimentConfig.hash``), so :func:`same_experiment` takes the config by what it needs of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Protocol

#: defaults that changed after run hashes were first written, with their OLD value: the hash
#: compares against these, so finished runs and checkpoints that pinned the old value stay theirs
#: (e.g. results/n50's suites pin eval.scoring = "shared_prompt").
#: Not every changed default is listed: ``planner.max_step_factor`` is not, because listing it would
#: give a new hash to every run that never plans (FSLoRA, HeteroLoRA, the fixed-k suites); a planned
#: run at another step factor pins it in its config and carries that config's hash.
HASH_DEFAULTS: dict[tuple[str, str], Any] = {
    ("eval", "scoring"): "shared_prompt",  # the default is "packed"
}

#: ``train`` keys that change how a run executes, not what it computes (fp32 reduction order only):
#: a finished run is the same experiment whatever its values were (``compare`` reuses it), e.g. a
#: suite continued with ``-s train.threads=1 -s train.workers=2`` still reports its earlier runs.
EXECUTION_KEYS: tuple[str, ...] = ("threads", "workers")


def config_hash(values: dict[str, Any], defaults: dict[str, Any]) -> str:
    """Short hash of the settings in ``values`` (a config as a dict of sections) that differ from
    ``defaults`` (the default config as a dict); the ``output`` section is excluded.

    Only non-default values enter, so adding a new option with a default that keeps the old
    behaviour does not orphan earlier runs and their checkpoints. A changed default is
    compared against its old value (:data:`HASH_DEFAULTS`), so a run that pins the old value
    keeps its hash, and a run on the new default gets a new one (its numbers may differ).
    """
    d, base = dict(values), {sec: dict(val) if isinstance(val, dict) else val for sec, val in defaults.items()}
    for (sec, key), old in HASH_DEFAULTS.items():  # compare against the default of its time
        base[sec][key] = old
    d.pop("output", None)
    diff = {
        sec: ({k: v for k, v in val.items() if v != base[sec].get(k, object())} if isinstance(val, dict) else val)
        for sec, val in d.items()
        if val != base.get(sec)
    }
    return hashlib.sha256(json.dumps(diff, sort_keys=True, default=str).encode()).hexdigest()[:8]


class _Config(Protocol):
    """What :func:`same_experiment` uses of an ``ExperimentConfig``."""

    @property
    def train(self) -> Any: ...

    def hash(self) -> str: ...

    def replace(self, **sections: Any) -> Any: ...


def same_experiment(cfg: _Config, stored_hash: str, stored_train: dict[str, Any]) -> bool:
    """Whether a run written with ``stored_hash`` (and ``[train]`` table ``stored_train`` of its
    config.toml) ran ``cfg`` up to :data:`EXECUTION_KEYS`; keys missing there take their defaults."""
    if stored_hash == cfg.hash():
        return True
    default = type(cfg.train)()
    ran = {k: stored_train.get(k, getattr(default, k)) for k in EXECUTION_KEYS}
    return stored_hash == cfg.replace(train=dataclasses.replace(cfg.train, **ran)).hash()
