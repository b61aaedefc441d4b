"""The numbers of a suite's tables: time to a level, mean and standard error over seeds, speed-ups
paired by seed, and Theorem 1's step-size factor of every run.

Each function returns rows (one dict per table row, the columns of its CSV); :mod:`.write` writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fedsketch.compare.load import Suite
from fedsketch.compare.run import SuiteRuns, run_info
from fedsketch.records import RoundRecord
from fedsketch.stopping import DIVERGENCE_FACTOR, divergence_onset, worse_than_start

TimeTo = Callable[[Sequence[RoundRecord], float], float | None]
"""Simulated seconds at which a run's records first reach a level (None if never)."""


def time_to_target(records: Sequence[RoundRecord], target: float) -> float | None:
    """Simulated seconds at the first evaluation with accuracy >= target (None if never)."""
    for r in records:
        if r.accuracy is not None and r.accuracy >= target:
            return float(r.sim_seconds)
    return None


def time_to_loss(records: Sequence[RoundRecord], level: float) -> float | None:
    """Simulated seconds at the first evaluation with test loss <= level (None if never)."""
    for r in records:
        if r.test_loss is not None and r.test_loss <= level:
            return float(r.sim_seconds)
    return None


def mean_se(xs: list[float]) -> tuple[float | None, float | None]:
    """Mean and standard error (std with ddof 1 over sqrt(n); None for fewer than 2 values)."""
    if not xs:
        return None, None
    return float(np.mean(xs)), (float(np.std(xs, ddof=1) / np.sqrt(len(xs))) if len(xs) > 1 else None)


def summarise(suite: Suite, runs: dict[str, list[list[RoundRecord]]]) -> list[dict[str, Any]]:
    """One row per strategy: minutes to target (mean and standard error over seeds, when all reached it), speed-up."""
    rows: list[dict[str, Any]] = []
    for name, seed_runs in runs.items():
        times = [time_to_target(r, suite.target) for r in seed_runs]
        hit = [t / 60 for t in times if t is not None]
        final = [r[-1].accuracy for r in seed_runs if r[-1].accuracy is not None]
        complete = bool(times) and len(hit) == len(times)
        mean, se = mean_se(hit) if complete else (None, None)
        row_loss = {}
        if suite.loss_target is not None:
            lt = [time_to_loss(r, suite.loss_target) for r in seed_runs]
            lhit = [t / 60 for t in lt if t is not None]
            lmean, lse = mean_se(lhit) if lhit and len(lhit) == len(lt) else (None, None)
            row_loss = {
                "loss_target": suite.loss_target,
                "loss_reached": len(lhit),
                "loss_minutes_mean": lmean,
                "loss_minutes_se": lse,
            }
        rows.append(
            {
                "strategy": name,
                "target": suite.target,
                "reached": len(hit),
                "seeds": len(times),
                "minutes_mean": mean,
                "minutes_se": se,
                "minutes_mean_reached": float(np.mean(hit)) if hit else None,
                "final_accuracy_mean": float(np.mean(final)) if final else None,
                "total_sim_minutes_mean": float(np.mean([r[-1].sim_seconds / 60 for r in seed_runs]))
                if seed_runs
                else None,
                **row_loss,
            }
        )
    ref = next(r for r in rows if r["strategy"] == suite.reference)
    for r in rows:
        ok = r["minutes_mean"] is not None and ref["minutes_mean"] is not None and r["minutes_mean"] > 0
        r["speedup_vs_" + suite.reference] = ref["minutes_mean"] / r["minutes_mean"] if ok else None
    return rows


def sweep_rows(suite: Suite, runs: dict[str, list[list[RoundRecord]]]) -> list[dict[str, Any]]:
    """Minutes to each accuracy of ``suite.sweep``, per strategy (mean and standard error over the seeds
    that reached it)."""
    rows = []
    for name, seed_runs in runs.items():
        for level in suite.sweep:
            hit = [t / 60 for t in (time_to_target(r, level) for r in seed_runs) if t is not None]
            mean, se = mean_se(hit)
            rows.append(
                {
                    "strategy": name,
                    "accuracy": level,
                    "reached": len(hit),
                    "seeds": len(seed_runs),
                    "minutes_mean": mean,
                    "minutes_se": se,
                }
            )
    return rows


def paired_rows(suite: Suite, runs: SuiteRuns) -> list[dict[str, Any]]:
    """Speed-up over the reference, paired by seed: for every seed where both the strategy and the
    reference finished and reached the level, ratio_s = t_reference,s / t_strategy,s; mean ± SE
    over those seeds (and how many seeds were paired). Levels: the accuracy target and sweep, and
    the test-loss target and sweep."""
    by_seed = {name: {seed: recs for seed, recs in seed_runs} for name, seed_runs in runs.items()}
    levels: list[tuple[str, float, TimeTo]] = [
        ("accuracy", a, time_to_target) for a in sorted({suite.target, *suite.sweep})
    ]
    losses = {*([suite.loss_target] if suite.loss_target else []), *suite.loss_sweep}
    levels += [("test_loss", x, time_to_loss) for x in sorted(losses, reverse=True)]
    ref = by_seed[suite.reference]
    rows = []
    for name, _ in suite.strategies:
        for metric, level, when in levels:
            ratios, n_both = [], 0
            for seed, recs in by_seed[name].items():
                if seed not in ref:
                    continue
                n_both += 1
                t_ref, t = when(ref[seed], level), when(recs, level)
                if t_ref is not None and t is not None and t > 0:
                    ratios.append(t_ref / t)
            mean, se = mean_se(ratios)
            rows.append(
                {
                    "strategy": name,
                    "metric": metric,
                    "level": level,
                    "paired_seeds": len(ratios),
                    "seeds_both_finished": n_both,
                    "speedup_mean": mean,
                    "speedup_se": se,
                    "speedup_min": min(ratios) if ratios else None,
                    "speedup_max": max(ratios) if ratios else None,
                }
            )
    return rows


def stability_rows(suite: Suite, runs: SuiteRuns) -> list[dict[str, Any]]:
    """Per finished run: Theorem 1's step-size factor ``kappa_max * Omega`` of its plan and whether it diverged.

    ``q``, ``k`` and ``p`` come from the run's ``run.json``, with q replaced by what the method's sampler
    draws (``strategies.methods.inclusion``: m/N for a fixed cohort of m, whatever ``fl.q`` says);
    ``kappa_n`` is the LoRA scale the method trains client n at (``strategies.methods.client_scale``:
    r/k_n for the sketched methods, 1 for HeteroLoRA and FLoRA). Sorted by the factor, so a threshold
    between stable and diverged runs shows at a glance.
    """
    from fedsketch.planner.bound import step_size_factor
    from fedsketch.strategies.methods import client_scale, inclusion

    rows = []
    for name, _ in suite.strategies:
        for seed, recs in runs[name]:
            cfg = suite.config(name, seed)
            info = run_info(cfg)
            kappa = [client_scale(cfg.fl.method, int(k), cfg.lora.rank) for k in info["k"]]
            q = inclusion(cfg.fl.method, info["q"], cfg.fl.clients_per_round)
            factor, omega, kmax = step_size_factor(info["p"], q, kappa)
            onset = divergence_onset(recs, cfg.fl.stop_divergence or DIVERGENCE_FACTOR)  # the run's own rule
            worse = worse_than_start(recs)
            rows.append(
                {
                    "strategy": name,
                    "seed": seed,
                    "step_factor": factor,
                    "omega": omega,
                    "kappa_max": kmax,
                    "sum_q": float(np.sum(q)),
                    "diverged_at_minutes": None if onset is None else onset / 60,
                    "worse_than_start_at_minutes": None if worse is None else worse / 60,
                }
            )
    return sorted(rows, key=lambda x: (x["step_factor"], x["strategy"], x["seed"]))
