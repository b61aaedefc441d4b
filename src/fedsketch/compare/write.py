"""A suite's tables and plots in its output folder: ``table``, ``sweep``, ``paired`` and ``stability``
(``.md`` and ``.csv`` each), ``accuracy_vs_time.png`` and ``loss_vs_time.png``.

The rows come from :mod:`.statistics`; every cell's format is fixed here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsketch.compare.load import Suite
from fedsketch.compare.run import FailedRun
from fedsketch.io import atomic_write_text, atomic_write_with
from fedsketch.records import RoundRecord


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def _pm(mean: float | None, se: float | None) -> str:
    """``mean ± se``; the mean alone where there is no standard error (one seed)."""
    return _fmt(mean) if se is None else f"{_fmt(mean)} ± {se:.2f}"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_tables(suite: Suite, rows: list[dict[str, Any]], failures: Sequence[FailedRun] = ()) -> None:
    """``table.md`` and ``table.csv``: minutes to the target accuracy (and test loss) per strategy.

    Runs that failed (``failures``) are left out of every number; where there are any, the ``reached``
    cell of their strategy says how many failed, a list under the table gives each one's reason, and
    ``table.csv`` gets a ``failed_runs`` column (``seed <k>: <reason>``, joined by ``; ``)."""
    key = "speedup_vs_" + suite.reference
    failed: dict[str, list[FailedRun]] = {}
    for f in failures:
        failed.setdefault(f.strategy, []).append(f)
    md = [
        f"# {suite.name}: simulated minutes to {100 * suite.target:.0f}% test accuracy",
        "",
        f"Seeds {', '.join(map(str, suite.seeds))}. A run that stops at its simulated-time budget ends with the "
        "first round that reaches it, so its last round may run past the budget by less than one round.",
        "",
        "| strategy | target | minutes to target (mean ± SE) | reached | final accuracy | "
        f"speed-up vs {suite.reference} |",
        "|---|---|---|---|---|---|",
    ]
    if suite.loss_target is not None:
        md[-2] += f" minutes to test loss {suite.loss_target:g} (mean ± SE, reached) |"
        md[-1] += "---|"
    for r in rows:
        if r["minutes_mean"] is not None:
            t = _pm(r["minutes_mean"], r["minutes_se"])
        elif r["seeds"] == 0:
            t = "no finished run"
        else:
            t = f"not reached in {r['seeds'] - r['reached']} of {r['seeds']} seeds" + (
                f" (the others: {_fmt(r['minutes_mean_reached'])})" if r["reached"] else ""
            )
        acc = _fmt(100 * r["final_accuracy_mean"] if r["final_accuracy_mean"] is not None else None, ".1f")
        speed = f"{r[key]:.2f}×" if r[key] is not None else "—"
        n_failed = len(failed.get(r["strategy"], []))
        note = f", {n_failed} failed" if n_failed else ""
        md.append(
            f"| {r['strategy']} | {100 * suite.target:.0f}% | {t} | {r['reached']}/{r['seeds']}{note} | {acc}% "
            f"| {speed} |"
            + (
                f" {_pm(r['loss_minutes_mean'], r['loss_minutes_se'])} ({r['loss_reached']}/{r['seeds']}) |"
                if suite.loss_target is not None
                else ""
            )
        )
    if failures:
        md += ["", "Failed runs, left out of every number above (`fedsketch compare` runs them again):", ""]
        md += [f"- {f.strategy} seed {f.seed}: {f.reason}" for f in failures]
        rows = [
            {**r, "failed_runs": "; ".join(f"seed {f.seed}: {f.reason}" for f in failed.get(r["strategy"], []))}
            for r in rows
        ]
    atomic_write_text(suite.output / "table.md", "\n".join(md) + "\n")
    _write_csv(suite.output / "table.csv", rows)


def write_sweep(suite: Suite, rows: list[dict[str, Any]]) -> None:
    """``sweep.md`` (strategies x accuracy levels) and ``sweep.csv`` (one row per pair)."""
    levels = list(suite.sweep)
    md = [
        f"# {suite.name}: simulated minutes to each test accuracy",
        "",
        "Mean ± standard error (std with ddof 1 over sqrt(n); the mean alone for one seed) over the seeds that "
        "reached the level, and how many of the strategy's finished runs did; — where none did.",
        "",
        "| strategy | " + " | ".join(f"{100 * a:g}%" for a in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for name, _ in suite.strategies:
        cells = []
        for r in (r for r in rows if r["strategy"] == name):
            t = _pm(r["minutes_mean"], r["minutes_se"])
            cells.append(f"{t} ({r['reached']}/{r['seeds']})")
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    atomic_write_text(suite.output / "sweep.md", "\n".join(md) + "\n")
    _write_csv(suite.output / "sweep.csv", rows)


def write_paired(suite: Suite, rows: list[dict[str, Any]]) -> None:
    """``paired.md`` and ``paired.csv``: per-seed paired speed-ups over the reference."""
    md = [
        f"# {suite.name}: speed-up over {suite.reference}, paired by seed",
        "",
        f"For each seed where both runs finished and reached the level: (minutes of {suite.reference}) / "
        "(minutes of the strategy); mean ± standard error over those seeds, [min, max], and n = paired seeds "
        "/ seeds where both finished. Accuracy levels and test-loss levels (the first evaluation at or below "
        "it).",
        "",
        "| strategy | level | speed-up (mean ± SE) | [min, max] | n |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lvl = f"acc {100 * r['level']:.0f}%" if r["metric"] == "accuracy" else f"loss {r['level']:g}"
        sp = (
            "—"
            if r["speedup_mean"] is None
            else f"{r['speedup_mean']:.2f}×" + (f" ± {r['speedup_se']:.2f}" if r["speedup_se"] is not None else "")
        )
        rng = "—" if r["speedup_min"] is None else f"[{r['speedup_min']:.2f}, {r['speedup_max']:.2f}]"
        md.append(f"| {r['strategy']} | {lvl} | {sp} | {rng} | {r['paired_seeds']}/{r['seeds_both_finished']} |")
    atomic_write_text(suite.output / "paired.md", "\n".join(md) + "\n")
    if rows:
        _write_csv(suite.output / "paired.csv", rows)


def write_stability(suite: Suite, rows: list[dict[str, Any]]) -> None:
    """``stability.md`` and ``stability.csv``: one row per finished run, by step-size factor."""
    md = [
        f"# {suite.name}: Theorem 1 step-size factor and divergence, per run",
        "",
        "`kappa_max * Omega` with `Omega = sum_n p_n (1 - p_n) + p_n^2 / q_n` and `kappa_n` the LoRA scale "
        "client n trains at; Theorem 1 needs `eta <= 1 / (32 L H beta kappa_max Omega)`. A run counts "
        "as diverged at its first evaluation whose test loss exceeds `fl.stop_divergence` (default 2) times its "
        'best so far, or is NaN: the run\'s own stop rule (`fedsketch.stopping`). "Worse than round 0" dates the '
        "first evaluation whose test loss is above the untrained model's: a collapse the rule misses when it "
        "starts at once (report only; the stop rule is unchanged).",
        "",
        "| strategy | seed | kappa_max * Omega | Omega | kappa_max | sum q | diverged at (min) "
        "| worse than round 0 at (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['strategy']} | {r['seed']} | {r['step_factor']:.2f} | {r['omega']:.2f} | "
            f"{r['kappa_max']:.0f} | {r['sum_q']:.2f} | {_fmt(r['diverged_at_minutes'])} | "
            f"{_fmt(r['worse_than_start_at_minutes'])} |"
        )
    atomic_write_text(suite.output / "stability.md", "\n".join(md) + "\n")
    if rows:
        _write_csv(suite.output / "stability.csv", rows)


def plot_suite(suite: Suite, runs: dict[str, list[list[RoundRecord]]], metric: str = "accuracy") -> None:
    """``metric`` (accuracy or test_loss) vs simulated minutes, one curve per strategy: mean over
    seeds and a ±std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, seed_runs in runs.items():
        if not seed_runs:
            continue
        scale = 100 if metric == "accuracy" else 1
        curves = [
            [(r.sim_seconds / 60, scale * getattr(r, metric)) for r in recs if getattr(r, metric) is not None]
            for recs in seed_runs
        ]
        end = max(c[-1][0] for c in curves)  # a finished run holds its last value to the end
        grid = np.linspace(0, end, 200)
        # the accuracy a run shows at time x is that of its last evaluation at or before x
        ys = np.array([[c[max(i for i, (t, _) in enumerate(c) if t <= x)][1] for x in grid] for c in curves])
        mean, std = ys.mean(0), ys.std(0)
        (line,) = ax.plot(grid, mean, label=name, drawstyle="steps-post")
        for c in curves:  # where each seed's run ended
            ax.plot([c[-1][0]], [c[-1][1]], marker="|", color=line.get_color(), ms=8)
        ax.fill_between(grid, mean - std, mean + std, alpha=0.2, step="post")
    if metric == "accuracy":
        ax.axhline(100 * suite.target, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("simulated wall-clock time (min)")
    ax.set_ylabel("test accuracy (%)" if metric == "accuracy" else "test loss (answer NLL per token)")
    ax.set_title(f"{suite.name} (mean ± std over {len(suite.seeds)} seeds)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    name = "accuracy_vs_time.png" if metric == "accuracy" else "loss_vs_time.png"
    atomic_write_with(suite.output / name, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
