"""Resumable run state: global LoRA factors (safetensors) + a JSON manifest, written atomically.

Because every random stream is keyed by (round, client) rather than by call order, the state
needed to resume is just the global factors, the round, the simulated and real clocks, and the
metric records so far. A resumed run gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsketch.io import atomic_write_dir
from fedsketch.sketch import LoraState

SCHEMA = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another configuration."""


@dataclass
class RunState:
    round: int  # rounds completed
    state: LoraState
    sim_seconds: float
    real_seconds: float
    records: list[dict[str, Any]]
    config_hash: str


def _flatten(state: LoraState) -> dict[str, np.ndarray]:
    out = {}
    for m, (B, A) in state.items():
        out[f"{m}::B"], out[f"{m}::A"] = np.ascontiguousarray(B), np.ascontiguousarray(A)
    return out


def _unflatten(flat: dict[str, np.ndarray]) -> LoraState:
    names = sorted({k.rsplit("::", 1)[0] for k in flat})
    return {m: (flat[f"{m}::B"], flat[f"{m}::A"]) for m in names}


def save(path: str | Path, rs: RunState) -> None:
    """Write ``path/state.safetensors`` and ``path/manifest.json`` as one atomic directory swap."""
    from safetensors.numpy import save_file

    def write(tmp: Path) -> None:
        save_file(_flatten(rs.state), str(tmp / "state.safetensors"))
        digest = hashlib.sha256((tmp / "state.safetensors").read_bytes()).hexdigest()
        manifest = {"schema": SCHEMA, "round": rs.round, "sim_seconds": rs.sim_seconds,
                    "real_seconds": rs.real_seconds, "records": rs.records,
                    "config_hash": rs.config_hash, "sha256": digest}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))

    atomic_write_dir(path, write)


def find(path: str | Path) -> Path | None:
    """The checkpoint folder to resume from: ``path``, or the previous one that a crash in the
    middle of :func:`save`'s directory swap left at ``.<name>.old``; None if there is none."""
    path = Path(path)
    for cand in (path, path.with_name(f".{path.name}.old")):
        if (cand / "manifest.json").is_file():
            return cand
    return None


def load(path: str | Path, config_hash: str | None = None) -> RunState:
    """Read a checkpoint, verifying its schema, checksum and (if given) config hash."""
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        blob = (path / "state.safetensors").read_bytes()
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from None
    if manifest.get("schema") != SCHEMA:
        raise CheckpointError(f"{path}: schema {manifest.get('schema')!r}, expected {SCHEMA}")
    if hashlib.sha256(blob).hexdigest() != manifest.get("sha256"):
        raise CheckpointError(f"{path}/state.safetensors: checksum mismatch (corrupt file)")
    if config_hash is not None and manifest["config_hash"] != config_hash:
        raise CheckpointError(
            f"{path}: written by config {manifest['config_hash']}, this run's config is {config_hash}; "
            "start it over with `fedsketch run --fresh`, or give this config its own output.name "
            "(under `fedsketch compare`: a new output folder)")
    return RunState(round=manifest["round"], state=_unflatten(load_file(str(path / "state.safetensors"))),
                    sim_seconds=manifest["sim_seconds"], real_seconds=manifest["real_seconds"],
                    records=manifest["records"], config_hash=manifest["config_hash"])
