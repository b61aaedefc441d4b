"""The accuracy-versus-simulated-time plot of one run."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fedsketch.io import atomic_write_with
from fedsketch.records import RoundRecord


def plot_accuracy(path: str | Path, records: Iterable[RoundRecord], title: str) -> None:
    """PNG of test accuracy against simulated wall-clock minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r.sim_seconds / 60, r.accuracy) for r in records if r.accuracy is not None]
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
