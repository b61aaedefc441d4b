"""Resumable run state: global LoRA factors (safetensors) + a JSON manifest, written atomically.

Because every random stream is keyed by (round, client) rather than by call order, the state
needed to resume is just the global factors, the round, the simulated and real clocks, and the
metric records so far. A resumed run gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
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
        manifest = {
            "schema": SCHEMA,
            "round": rs.round,
            "sim_seconds": rs.sim_seconds,
            "real_seconds": rs.real_seconds,
            "records": rs.records,
            "config_hash": rs.config_hash,
            "sha256": digest,
        }
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


FRESH_HINT = "start the run over with `fedsketch run --fresh` (the same command plus --fresh)"


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``section.key: old -> new`` for every setting that differs (the output section excluded)."""
    out = []
    for sec in sorted(set(old) | set(new)):
        if sec == "output":
            continue
        a, b = old.get(sec), new.get(sec)
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a if isinstance(a, dict) else {}, b if isinstance(b, dict) else {}
            out += [
                f"{sec}.{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}"
                for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)
            ]
        elif a != b:
            out.append(f"{sec}: {a!r} -> {b!r}")
    return out


def _written_config(path: Path) -> dict[str, Any]:
    """The ``config.toml`` beside the checkpoint folder ``path`` (the config the checkpoint was written
    with) as a dict, {} if missing or unreadable."""
    import tomllib

    try:
        return tomllib.loads((path.parent / "config.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _mismatch(path: Path, manifest: dict[str, Any], config_hash: str, config: dict[str, Any] | None) -> CheckpointError:
    """The message for a checkpoint written by another config: the keys that differ, and what to do."""
    written = _written_config(path) if config is not None else {}  # see runner.build.build_run
    diffs = config_differences(written, config) if written and config is not None else []
    what = (
        (
            "; settings that differ (checkpoint -> now): "
            + "; ".join(diffs[:8])
            + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        )
        if diffs
        else ""
    )
    return CheckpointError(
        f"{path}: this checkpoint was written by a different config (hash {manifest.get('config_hash')}, "
        f"now {config_hash}){what}. To keep it, run with the old settings; otherwise {FRESH_HINT}, or give "
        "this config its own output.name (under `fedsketch compare`: a new output folder)"
    )


def load(
    path: str | Path,
    config_hash: str | None = None,
    config: dict[str, Any] | None = None,
    same: Callable[[str, dict[str, Any]], bool] | None = None,
) -> RunState:
    """Read a checkpoint, verifying its schema, checksum and (if given) config hash.

    ``config`` (the new run's ``ExperimentConfig.to_dict()``) lets a mismatch name the keys that
    differ from the ``config.toml`` beside the checkpoint. ``same(hash, written)`` may accept a
    checkpoint of another hash given the ``config.toml`` it was written with (as a dict), e.g.
    ``config.same_experiment`` for a run continued at another thread or worker count.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        blob = (path / "state.safetensors").read_bytes()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e}); {FRESH_HINT}") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}/manifest.json: not a checkpoint manifest (corrupt file); {FRESH_HINT}")
    if manifest.get("schema") != SCHEMA:
        raise CheckpointError(f"{path}: schema {manifest.get('schema')!r}, expected {SCHEMA}; {FRESH_HINT}")
    if hashlib.sha256(blob).hexdigest() != manifest.get("sha256"):
        raise CheckpointError(f"{path}/state.safetensors: checksum mismatch (corrupt file); {FRESH_HINT}")
    stored_hash = manifest.get("config_hash")
    if (
        config_hash is not None
        and stored_hash != config_hash
        and not (same is not None and isinstance(stored_hash, str) and same(stored_hash, _written_config(path)))
    ):
        raise _mismatch(path, manifest, config_hash, config)
    try:
        return RunState(
            round=manifest["round"],
            state=_unflatten(load_file(str(path / "state.safetensors"))),
            sim_seconds=manifest["sim_seconds"],
            real_seconds=manifest["real_seconds"],
            records=manifest["records"],
            config_hash=manifest["config_hash"],
        )
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise CheckpointError(
            f"{path}/manifest.json: incomplete checkpoint ({type(e).__name__}: {e}); {FRESH_HINT}"
        ) from None
