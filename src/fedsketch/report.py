"""Metrics file and the accuracy-versus-simulated-time plot of one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsketch.io import atomic_write_text, atomic_write_with


def write_metrics(path: str | Path, records: list[dict[str, Any]]) -> None:
    """``metrics.jsonl``: one JSON record per round, rewritten atomically."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_accuracy(path: str | Path, records: list[dict[str, Any]], title: str) -> None:
    """PNG of test accuracy against simulated wall-clock minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["sim_seconds"] / 60, r["accuracy"]) for r in records if r.get("accuracy") is not None]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    if pts:
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, [100 * y for y in ys], marker="o")
    ax.set_xlabel("simulated wall-clock time (min)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
