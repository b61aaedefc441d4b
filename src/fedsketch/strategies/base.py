"""The allocation protocol shared by every strategy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedsketch.checks import check_k, check_q
from fedsketch.config import FLConfig, PlannerConfig
from fedsketch.network.profiles import ClientProfiles
from fedsketch.rng import Streams


@dataclass(frozen=True)
class Federation:
    """Facts a strategy may use: data weights, client profiles, the policies' own settings, random
    streams, r, and the two network values the planner needs.

    Built by :func:`fedsketch.runner.build.prepare_federation`, the one place that reads the whole
    config; the sampling and rank policies read ``fl`` (``fl.sampling/ranks/q/k/...``), the
    optimised ones ``planner`` too.
    """

    p: np.ndarray  # (N,) data weights, sum 1
    profiles: ClientProfiles
    fl: FLConfig  # the [fl] section
    planner: PlannerConfig  # the [planner] section
    streams: Streams
    r: int  # LoRA rank (lora.rank)
    bandwidth_mbps: float  # W (network.bandwidth_mbps)
    compute_model: str = "linear"  # network.compute_model (eq. 12)

    @property
    def num_clients(self) -> int:
        return int(self.p.size)


@dataclass(frozen=True)
class Allocation:
    """Per-client participation probabilities ``q`` in (0, 1] and sketch ranks ``k`` in [1, r]."""

    q: np.ndarray
    k: np.ndarray
    info: dict = field(default_factory=dict)

    def check(self, r: int) -> Allocation:
        q, k = np.asarray(self.q, float), np.asarray(self.k)
        if q.shape != k.shape:
            raise ValueError(f"q and k must have one entry per client, got {q.shape} and {k.shape}")
        q = check_q(q, where="allocation: ")
        k = check_k(k, r, where="allocation: ")
        return Allocation(q=q, k=k.astype(int), info=self.info)
