"""Sampling policies (PAPER.md §6, Fig. 2 baselines). Each returns q of shape (N,)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedsketch.planner.baselines import capped_proportional
from fedsketch.strategies.base import Federation


def full(fed: Federation, k: np.ndarray) -> np.ndarray:
    """Every client every round: q_n = 1."""
    return np.ones(fed.num_clients)


def fixed(fed: Federation, k: np.ndarray) -> np.ndarray:
    """One predefined probability for everyone: q_n = fl.q (spec decision: 0.5)."""
    return np.full(fed.num_clients, fed.fl.q)


def _fraction(fed: Federation, k: np.ndarray) -> float:
    """Expected participation fraction: ``fl.q``, or with ``fl.match_planned_cohort`` the
    ``sum(q*)/N`` of the planner's q for these ranks (PAPER.md §6 decision for Fig. 2)."""
    if not fed.fl.match_planned_cohort:
        return fed.fl.q
    from fedsketch.strategies.optimized import planned_allocation

    return float(np.mean(planned_allocation(fed, k_fixed=k).q))


def uniform(fed: Federation, k: np.ndarray) -> np.ndarray:
    """Identical q_n for everyone, equal to the expected participation fraction (``_fraction``)."""
    return np.full(fed.num_clients, _fraction(fed, k))


def weighted(fed: Federation, k: np.ndarray) -> np.ndarray:
    """q_n proportional to p_n, scaled to ``sum q = fraction * N`` and capped at 1 (PAPER.md §6).

    The mass cut by the cap is given to the uncapped clients until it is spent (water filling).
    """
    return capped_proportional(fed.p, _fraction(fed, k) * fed.num_clients)


def explicit(fed: Federation, k: np.ndarray) -> np.ndarray:
    """q from ``fl.q_list``."""
    return np.asarray(fed.fl.q_list, dtype=float)


SAMPLING_POLICIES: dict[str, Callable[[Federation, np.ndarray], np.ndarray]] = {
    "full": full,
    "fixed": fixed,
    "uniform": uniform,
    "weighted": weighted,
    "explicit": explicit,
}
