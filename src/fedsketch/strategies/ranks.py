"""Sketch-rank policies (PAPER.md §6, Fig. 3 baselines). Each returns integer k of shape (N,)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedsketch.planner.baselines import normal_ranks, uniform_ranks
from fedsketch.strategies.base import Federation


def full(fed: Federation) -> np.ndarray:
    """k_n = r: no sketching (plain federated LoRA)."""
    return np.full(fed.num_clients, fed.r, dtype=int)


def fixed(fed: Federation) -> np.ndarray:
    """k_n = fl.k for everyone."""
    return np.full(fed.num_clients, fed.fl.k, dtype=int)


def normal(fed: Federation) -> np.ndarray:
    """Truncated normal ranks as in FSLoRA ``src/main.py``: mean (1+r)/2, std (r-1)/6, clipped to
    [1, r] and rounded (PAPER.md §6 decision), drawn from the ``ranks`` stream."""
    return normal_ranks(fed.r, fed.num_clients, fed.streams.generator("ranks"))


def uniform(fed: Federation) -> np.ndarray:
    """k_n ~ U{1, ..., r}, drawn from the ``ranks`` stream."""
    return uniform_ranks(fed.r, fed.num_clients, fed.streams.generator("ranks"))


def capability(fed: Federation) -> np.ndarray:
    """k_n proportional to the client's compute speed 1/tau_cp (FSLoRA's capability-based sketching
    ratios): the fastest client gets r, the others round(r * speed_n / max speed), at least 1."""
    speed = 1.0 / fed.profiles.tau_cp
    r = fed.r
    return np.clip(np.round(r * speed / speed.max()), 1, r).astype(int)


def explicit(fed: Federation) -> np.ndarray:
    """k from ``fl.k_list``."""
    return np.asarray(fed.fl.k_list, dtype=int)


RANK_POLICIES: dict[str, Callable[[Federation], np.ndarray]] = {
    "full": full,
    "fixed": fixed,
    "normal": normal,
    "uniform": uniform,
    "capability": capability,
    "explicit": explicit,
}
