"""Conversions between fedsketch objects and Flower records (no algorithm here).

* The global adapter ``X_t = {module: (B, A)}`` travels as one ``ArrayRecord`` with keys
  ``"<module>::B"`` and ``"<module>::A"`` (exact float bytes, so no precision is lost).
* A client's upload (eq. 8) travels as an ``ArrayRecord`` of its compact blocks
  ``"<module>::dB"`` (d, k) and ``"<module>::dA"`` (k, m), a ``ConfigRecord`` echoing its
  sketch indices (``"idx::<module>"`` -> list[int]) and a ``MetricRecord`` with its loss,
  compute seconds and number of examples.
* The per-node train instruction is a ``ConfigRecord``: round, client, q_n, k_n, the
  resolved experiment config as TOML text, the sketch index set of every module, and the
  client's LoRA-scale multiplier and local learning rate when the round plan gives them.
"""

from __future__ import annotations

import tomllib
from typing import Any, TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedsketch.config import ExperimentConfig, collect, to_toml
from fedsketch.sketch import ClientUpdate, LoraState

SEP = "::"
IDX = "idx" + SEP
GLOBAL = "global"  # RecordDict key of the global adapter
TRAIN = "train"  # RecordDict key of the per-node train instruction
UPDATE = "update"  # RecordDict keys of a reply: blocks, indices, metrics
INDICES = "indices"
METRICS = "metrics"
NODE = "node"  # RecordDict key of a QUERY reply

_Record = TypeVar("_Record", ArrayRecord, ConfigRecord, MetricRecord)


def record(content: RecordDict, key: str, kind: type[_Record]) -> _Record:
    """``content[key]``, checked to be the kind of record this protocol puts under ``key``."""
    rec = content[key]
    if not isinstance(rec, kind):
        raise TypeError(f"record {key!r} is a {type(rec).__name__}, expected a {kind.__name__}")
    return rec


def number(value: object, name: str) -> int | float:
    """A record value this protocol writes as a number (int or float); ``TypeError`` for anything else."""
    if isinstance(value, int | float):
        return value
    raise TypeError(f"{name!r} is a {type(value).__name__}, expected a number")


def state_to_arrays(state: LoraState) -> ArrayRecord:
    """Global LoRA factors -> ``ArrayRecord`` (module order preserved)."""
    rec = ArrayRecord()
    for m, (B, A) in state.items():
        rec[f"{m}{SEP}B"] = Array(np.ascontiguousarray(B))
        rec[f"{m}{SEP}A"] = Array(np.ascontiguousarray(A))
    return rec


def arrays_to_state(rec: ArrayRecord) -> LoraState:
    """Inverse of :func:`state_to_arrays`."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in rec.items():
        m, which = key.rsplit(SEP, 1)
        parts.setdefault(m, {})[which] = arr.numpy()
    return {m: (p["B"], p["A"]) for m, p in parts.items()}


def indices_to_config(indices: dict[str, np.ndarray]) -> dict[str, list[int]]:
    return {f"{IDX}{m}": [int(i) for i in idx] for m, idx in indices.items()}


def config_to_indices(rec: ConfigRecord) -> dict[str, np.ndarray]:
    return {k[len(IDX) :]: np.asarray(v, dtype=np.int64) for k, v in rec.items() if k.startswith(IDX)}


def train_instruction(
    cfg_text: str,
    rnd: int,
    client: int,
    q: float,
    indices: dict[str, np.ndarray],
    fault: str = "",
    scale: float | None = None,
    lr: float | None = None,
) -> ConfigRecord:
    """The ConfigRecord sent to the node of ``client`` in round ``rnd``.

    ``scale`` is the plan's LoRA-scale multiplier for this client when the round plan carries
    one (default on the client: ``r / k_n``, eq. 3); ``lr`` its local SGD learning rate (default
    on the client: ``train.lr``; ``train.lr * s`` under ``planner.stability = "scale_lr"``, §8.2).
    """
    k = len(next(iter(indices.values()))) if indices else 0
    body: dict[str, Any] = {
        "round": int(rnd),
        "client": int(client),
        "q": float(q),
        "k": int(k),
        "config": cfg_text,
        **indices_to_config(indices),
    }
    if fault:
        body["fault"] = fault
    if scale is not None:
        body["scale"] = float(scale)
    if lr is not None:
        body["lr"] = float(lr)
    return ConfigRecord(body)


def update_to_records(u: ClientUpdate) -> tuple[ArrayRecord, ConfigRecord, MetricRecord]:
    """A client's upload -> (blocks, echoed indices, metrics)."""
    blocks = ArrayRecord()
    for m, (dB, dA) in u.delta.items():
        blocks[f"{m}{SEP}dB"] = Array(np.ascontiguousarray(dB))
        blocks[f"{m}{SEP}dA"] = Array(np.ascontiguousarray(dA))
    idx = ConfigRecord({"client": int(u.client), "round": int(u.round), **indices_to_config(u.indices)})
    metrics = MetricRecord(
        {
            "train_loss": float(u.train_loss),
            "compute_seconds": float(u.compute_seconds),
            "num-examples": int(u.num_examples),
        }
    )
    return blocks, idx, metrics


def records_to_update(blocks: ArrayRecord, idx: ConfigRecord, metrics: MetricRecord) -> ClientUpdate:
    """Inverse of :func:`update_to_records` (validation is left to ``aggregate.validate_update``)."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in blocks.items():
        m, which = key.rsplit(SEP, 1)
        parts.setdefault(m, {})[which] = arr.numpy()
    delta = {m: (p["dB"], p["dA"]) for m, p in parts.items()}
    return ClientUpdate(
        client=int(number(idx["client"], "client")),
        round=int(number(idx["round"], "round")),
        indices=config_to_indices(idx),
        delta=delta,
        num_examples=int(number(metrics.get("num-examples", 0), "num-examples")),
        train_loss=float(number(metrics.get("train_loss", float("nan")), "train_loss")),
        compute_seconds=float(number(metrics.get("compute_seconds", 0.0), "compute_seconds")),
    )


def config_text(cfg: ExperimentConfig) -> str:
    return to_toml(cfg)


def config_from_text(text: str) -> ExperimentConfig:
    """Parse a resolved config sent as TOML (raises ``ConfigError`` if invalid)."""
    from fedsketch.config import ConfigError

    cfg, errors = collect(tomllib.loads(text))
    if errors:
        raise ConfigError(errors)
    return cfg
