"""The run's allocation (q, k) from the configured sampling and rank policies."""

from __future__ import annotations

import numpy as np

from fedsketch.strategies.base import Allocation, Federation
from fedsketch.strategies.optimized import planned_allocation
from fedsketch.strategies.ranks import RANK_POLICIES
from fedsketch.strategies.sampling import SAMPLING_POLICIES


def resolve_allocation(fed: Federation) -> Allocation:
    """Build the run's allocation from ``fl.sampling`` and ``fl.ranks``.

    ``optimized`` asks the planner (Algorithm 2): for both keys the joint (q, k); for one key that
    part, optimised with the other part fixed by its own policy (``strategies.optimized``).
    """
    fl = fed.fl
    planned = None
    if fl.sampling == "optimized" and fl.ranks == "optimized":
        planned = planned_allocation(fed)
        q, k = planned.q, planned.k
    elif fl.sampling == "optimized":
        k = RANK_POLICIES[fl.ranks](fed)
        planned = planned_allocation(fed, k_fixed=k)
        q = planned.q
    elif fl.ranks == "optimized":
        q = SAMPLING_POLICIES[fl.sampling](fed, np.full(fed.num_clients, fed.r))
        planned = planned_allocation(fed, q_fixed=q)
        k = planned.k
    else:
        k = RANK_POLICIES[fl.ranks](fed)
        q = SAMPLING_POLICIES[fl.sampling](fed, k)
    info = dict(planned.info) if planned is not None else {}
    info.update(sampling=fl.sampling, ranks=fl.ranks)
    return Allocation(q=q, k=k, info=info).check(fed.r)
