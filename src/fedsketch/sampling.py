"""Independent client sampling and its unbiased weights (PAPER.md §2.2, eqs. 6 and 27).

Each client n joins round t with its own probability q_n, independently of the others
(``I_t^n ~ Bernoulli(q_n)``), so the cohort size varies and may be zero. Weighting a
participant's update by ``p_n / q_n`` makes the aggregate unbiased for full participation.
"""

from __future__ import annotations

import numpy as np

from fedsketch.checks import check_q


def sample_participants(q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of the clients whose independent Bernoulli(q_n) coin came up 1 (sorted)."""
    q = check_q(q)
    return np.flatnonzero(rng.random(q.size) < q)


def unbiased_weights(p: np.ndarray, q: np.ndarray, clients: np.ndarray) -> np.ndarray:
    """Aggregation weights ``p_n / q_n`` of the participating ``clients`` (eq. 6).

    No renormalisation by the sampled weights: PAPER.md §5 shows the self-normalised variant
    is biased.
    """
    p = np.asarray(p, dtype=float)
    q = check_q(q)
    clients = np.asarray(clients, dtype=int)
    return p[clients] / q[clients]
