"""Writing a config out: the resolved TOML of a run folder, and the table of every key with its doc."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fedsketch.config.schema import INF, SECTIONS, ExperimentConfig, allowed_range


def to_toml(cfg: ExperimentConfig) -> str:
    """Render a resolved config as TOML (for the run folder)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, float):
            return "inf" if v == INF else repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return str(v)

    lines = [f"seed = {cfg.seed}", ""]
    for name in SECTIONS:
        lines.append(f"[{name}]")
        for k, v in dataclasses.asdict(getattr(cfg, name)).items():
            lines.append(f"{k} = {fmt(v)}")
        lines.append("")
    return "\n".join(lines)


def describe() -> list[tuple[str, str, str, str]]:
    """(key, default, allowed, doc) for every field: the README's config reference."""
    rows = []
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            factory: Any = f.default_factory
            default = f.default if f.default is not dataclasses.MISSING else factory()
            m = f.metadata
            allowed = ""
            if m.get("choices"):
                allowed = " / ".join(map(str, m["choices"]))
            elif m.get("range"):
                allowed = allowed_range(m["range"])
            rows.append((f"{name}.{f.name}", repr(default), allowed, m.get("doc", "")))
    return rows
