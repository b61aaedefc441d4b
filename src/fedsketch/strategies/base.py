"""The allocation protocol shared by every strategy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedsketch.checks import check_k, check_q
from fedsketch.config import ExperimentConfig
from fedsketch.network.profiles import ClientProfiles
from fedsketch.rng import Streams


@dataclass(frozen=True)
class Federation:
    """Facts a strategy may use: data weights, client profiles, config, random streams."""

    p: np.ndarray  # (N,) data weights, sum 1
    profiles: ClientProfiles
    cfg: ExperimentConfig
    streams: Streams

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


def resolve_allocation(fed: Federation) -> Allocation:
    """Build the run's allocation from ``fl.sampling`` and ``fl.ranks``.

    ``optimized`` asks the planner (Algorithm 2): for both keys the joint (q, k); for one key that
    part, optimised with the other part fixed by its own policy (``strategies.optimized``).
    """
    from fedsketch.strategies.ranks import RANK_POLICIES
    from fedsketch.strategies.sampling import SAMPLING_POLICIES

    from fedsketch.strategies.optimized import planned_allocation

    fl = fed.cfg.fl
    planned = None
    if fl.sampling == "optimized" and fl.ranks == "optimized":
        planned = planned_allocation(fed)
        q, k = planned.q, planned.k
    elif fl.sampling == "optimized":
        k = RANK_POLICIES[fl.ranks](fed)
        planned = planned_allocation(fed, k_fixed=k)
        q = planned.q
    elif fl.ranks == "optimized":
        q = SAMPLING_POLICIES[fl.sampling](fed, np.full(fed.num_clients, fed.cfg.lora.rank))
        planned = planned_allocation(fed, q_fixed=q)
        k = planned.k
    else:
        k = RANK_POLICIES[fl.ranks](fed)
        q = SAMPLING_POLICIES[fl.sampling](fed, k)
    info = dict(planned.info) if planned is not None else {}
    info.update(sampling=fl.sampling, ranks=fl.ranks)
    return Allocation(q=q, k=k, info=info).check(fed.cfg.lora.rank)
