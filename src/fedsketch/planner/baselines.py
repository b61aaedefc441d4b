"""Baselines of the paper's Figs. 2–3 (PAPER.md §6), scored with the planner's own model.

Sampling baselines keep every ``k_n = r`` (Fig. 2); rank baselines fix every ``q_n`` to
``fixed_q`` (Fig. 3; ``DECISION`` 0.5). Each is scored with the same predicted rounds
(``theta4 / D``, eq. 21), round time (``T_hat``, eq. 20) and total ``J`` as the plan, and is
flagged infeasible when it violates the planner's Appendix C constraint.

- ``full``: ``q_n = 1``; ``fixed``: ``q_n = fixed_q``;
- ``uniform``: ``q_n = sum_m q_m* / N`` (same expected participation as the plan);
- ``weighted``: ``q_n`` proportional to ``p_n``, scaled to the same ``sum q*`` and capped at 1
  (the excess is redistributed over the uncapped clients);
- ``full_rank``: ``k_n = r``; ``normal_rank``: ``k_n ~ Normal((1+r)/2, (r-1)/6)``, clipped to
  ``[1, r]`` and rounded (FSLoRA ``src/main.py``); ``uniform_rank``: ``k_n ~ U{1..r}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsketch.planner.bound import PlanProblem

SAMPLING_BASELINES = ("full", "fixed", "uniform", "weighted")
RANK_BASELINES = ("full_rank", "normal_rank", "uniform_rank")
#: spec §6 DECISION: the lost "fixed q" value of Figs. 2–3
DEFAULT_FIXED_Q = 0.5
#: FSLoRA's truncated normal: mean (1 + r) / 2 and std (r - 1) / NORMAL_RANK_STD_DIVISOR
NORMAL_RANK_STD_DIVISOR = 6.0


@dataclass
class Baseline:
    """One baseline's (q, k) and its predicted rounds, round time and total time (eq. 21)."""

    name: str
    family: str
    q: np.ndarray
    k: np.ndarray
    rounds: float
    round_time: float
    total_time: float
    feasible: bool
    violations: list[str]

    def to_dict(self, include_vectors: bool = True) -> dict:
        fin = np.isfinite(self.rounds)
        d: dict[str, object] = {
            "family": self.family,
            "rounds": float(self.rounds) if fin else None,
            "round_time": float(self.round_time),
            "total_time": float(self.total_time) if fin else None,
            "feasible": bool(self.feasible),
            "reachable": bool(fin),
            "violations": self.violations[:3],
        }
        if include_vectors:
            d["q"] = [float(x) for x in self.q]
            d["k"] = [int(x) for x in self.k]
        return d


def capped_proportional(weights: np.ndarray, total: float) -> np.ndarray:
    """``q`` proportional to ``weights`` with ``sum q = total`` and ``q <= 1`` (water-filling).

    Parameters
    ----------
    weights : array (N,), > 0
    total : float in (0, N]
    """
    w = np.asarray(weights, dtype=float)
    n = w.size
    total = float(min(max(total, 0.0), n))
    q = np.zeros(n)
    capped = np.zeros(n, dtype=bool)
    for _ in range(n + 1):
        free = ~capped
        rest = total - capped.sum()
        if not free.any() or rest <= 0:
            break
        q[free] = w[free] * rest / w[free].sum()
        q[capped] = 1.0
        over = free & (q > 1.0)
        if not over.any():
            break
        capped |= over
    q[capped] = 1.0
    return q


def normal_ranks(r: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """FSLoRA's truncated-normal ranks: ``round(clip(Normal((1+r)/2, (r-1)/6), 1, r))``, shape (n,)."""
    k = rng.normal((1 + r) / 2, (r - 1) / NORMAL_RANK_STD_DIVISOR, n)
    return np.rint(np.clip(k, 1, r)).astype(np.int64)


def uniform_ranks(r: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``k_n ~ U{1, ..., r}``, shape (n,)."""
    return rng.integers(1, r + 1, n).astype(np.int64)


def score(prob: PlanProblem, name: str, family: str, q: np.ndarray, k: np.ndarray) -> Baseline:
    """Predicted rounds, round time and total time of ``(q, k)`` under the planner's model."""
    q = np.asarray(q, dtype=float)
    k = np.asarray(k, dtype=np.int64)
    rounds = prob.rounds(q, k)
    rt = prob.round_time(q, k)
    return Baseline(
        name,
        family,
        q,
        k,
        rounds,
        rt,
        rounds * rt if np.isfinite(rounds) else np.inf,
        not prob.violations(q, k),
        prob.violations(q, k),
    )


def baseline_points(
    prob: PlanProblem, plan_q: np.ndarray, rng: np.random.Generator, fixed_q: float = DEFAULT_FIXED_Q
) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(name, family, q, k)`` of every baseline; ``plan_q`` fixes the expected participation."""
    n, r = prob.N, prob.r
    full_k = np.full(n, r, dtype=np.int64)
    s = float(np.sum(plan_q))
    half = np.full(n, fixed_q)
    return [
        ("full", "sampling", np.ones(n), full_k),
        ("fixed", "sampling", half, full_k),
        ("uniform", "sampling", np.full(n, s / n), full_k),
        ("weighted", "sampling", capped_proportional(prob.p, s), full_k),
        ("full_rank", "rank", half, full_k),
        ("normal_rank", "rank", half, normal_ranks(r, n, rng)),
        ("uniform_rank", "rank", half, uniform_ranks(r, n, rng)),
    ]


def baselines(
    prob: PlanProblem, plan_q: np.ndarray, rng: np.random.Generator, fixed_q: float = DEFAULT_FIXED_Q
) -> list[Baseline]:
    """Score every baseline (see module docstring) with the plan's model."""
    return [score(prob, name, fam, q, k) for name, fam, q, k in baseline_points(prob, plan_q, rng, fixed_q)]
