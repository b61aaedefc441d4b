"""FSLoRA (Fang et al., arXiv 2501.19389) on the shared harness.

Decisions (PAPER.md §6 "Baseline mechanics"; FSLoRA ``src/LoRA_Sketching.py``):
- Sampling: a fixed number m of clients per round, uniformly without replacement. m is
  ``fl.clients_per_round``, or ``round(sum q)`` of this run's allocation (``fl.sampling``)
  when 0.
- Sketch: random k_n-subsets with the r/k_n scale, as in the paper (FSLoRA's per-client sketching
  ratios come from client capability; set them with ``fl.ranks`` — ``capability`` gives
  k_n proportional to the client's speed).
- Aggregation: the data-weighted mean of the sampled uploads, ``p_n / sum_{m in K} p_m``. FSLoRA
  follows it with a server AdamW step (lr 3e-4); we keep the plain mean (server_lr 1.0) so the
  comparison isolates sampling and rank allocation. That choice is ours, not FSLoRA's.
"""

from __future__ import annotations

import numpy as np

from fedsketch.strategies.base import Allocation, Federation
from fedsketch.strategies.methods.independent import IndependentSketch


class FSLoRA(IndependentSketch):
    name = "fslora"

    def sample(self, t: int, fed: Federation, alloc: Allocation) -> np.ndarray:
        N = fed.num_clients
        m = fed.cfg.fl.clients_per_round or int(np.clip(round(float(np.sum(alloc.q))), 1, N))
        if m > N:
            raise ValueError(f"fl.clients_per_round={m} exceeds data.num_clients={N}")
        return np.sort(fed.streams.generator("sampling", t).choice(N, size=m, replace=False))

    def weights(self, fed: Federation, alloc: Allocation, clients: np.ndarray) -> np.ndarray:
        p = fed.p[clients]
        return p / p.sum()
