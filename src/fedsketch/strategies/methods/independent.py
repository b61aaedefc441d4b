"""The paper's Algorithm 1: independent sampling + random sketches + unbiased weights.

With ``fl.sampling = "optimized"`` and ``fl.ranks = "optimized"`` this is the *Proposed* method
(planner q*, k*); with other policies it is the Fig. 2 / Fig. 3 baselines.
"""

from __future__ import annotations

import numpy as np

from fedsketch.aggregate import aggregate
from fedsketch.sampling import sample_participants, unbiased_weights
from fedsketch.sketch import ClientUpdate, LoraState, draw_indices
from fedsketch.strategies.base import Allocation, Federation


class IndependentSketch:
    name = "independent"

    def sample(self, t: int, fed: Federation, alloc: Allocation) -> np.ndarray:
        """Independent Bernoulli(q_n) coins (Algorithm 1 line 5)."""
        return sample_participants(alloc.q, fed.streams.generator("sampling", t))

    def sketch(self, t: int, n: int, k: int, fed: Federation, modules: list[str]) -> dict[str, np.ndarray]:
        """Uniform k-subset per module (eq. 3)."""
        return draw_indices(fed.streams.generator("sketch", t, n), modules, fed.cfg.lora.rank, k)

    def client_scale(self, k: int, r: int) -> float:
        """r/k (eq. 3), so that E[B S A] = B A (eq. 4)."""
        return r / k

    def weights(self, fed: Federation, alloc: Allocation, clients: np.ndarray) -> np.ndarray:
        """p_n / q_n, no renormalisation (eq. 6)."""
        return unbiased_weights(fed.p, alloc.q, clients)

    def initial_state(self, state: LoraState) -> LoraState:
        """X_0 = the engine's (B_0 = 0, A_0 random) factors."""
        return state

    def aggregate(self, state: LoraState, updates: list[ClientUpdate], weights: np.ndarray,
                  fed: Federation) -> LoraState:
        """X_{t+1} = X_t + server_lr * sum_n w_n scatter(Delta_n) (eq. 6)."""
        return aggregate(state, updates, weights, fed.cfg.fl.server_lr)

    def download_mbit(self, t: int, fed: Federation, alloc: Allocation) -> np.ndarray:
        """Nothing beyond the model broadcast, which the paper's time model leaves out (eq. 10)."""
        return np.zeros(fed.num_clients)
