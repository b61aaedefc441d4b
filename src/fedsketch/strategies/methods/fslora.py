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

from dataclasses import dataclass

import numpy as np

from fedsketch.aggregate import aggregate
from fedsketch.rng import Streams
from fedsketch.sketch import ClientUpdate, LoraState
from fedsketch.strategies.methods.base import MethodContext

COMPOSITION = ("cohort", "random_subset", "mean")  # sampler, sketcher, aggregator


@dataclass(frozen=True)
class CohortSampler:
    """A fixed number m of clients per round, uniformly without replacement."""

    m: int
    num_clients: int
    streams: Streams

    @classmethod
    def build(cls, ctx: MethodContext) -> CohortSampler:
        N = ctx.num_clients
        m = ctx.clients_per_round or int(np.clip(round(float(np.sum(ctx.q))), 1, N))
        if m > N:
            raise ValueError(f"fl.clients_per_round={m} exceeds data.num_clients={N}")
        return cls(m, N, ctx.streams)

    def sample(self, t: int) -> np.ndarray:
        return np.sort(self.streams.generator("sampling", t).choice(self.num_clients, size=self.m, replace=False))

    def inclusion(self) -> np.ndarray:
        return np.full(self.num_clients, self.m / self.num_clients)  # uniform m of N without replacement


@dataclass(frozen=True)
class MeanAggregator:
    """X_{t+1} = X_t + server_lr * sum_n (p_n / sum_{m in K} p_m) scatter(Delta_n): the data-weighted mean."""

    p: np.ndarray  # (N,)
    server_lr: float = 1.0

    @classmethod
    def build(cls, ctx: MethodContext) -> MeanAggregator:
        return cls(ctx.p, ctx.server_lr)

    def initial_state(self, state: LoraState) -> LoraState:
        return state

    def weights(self, clients: np.ndarray) -> np.ndarray:
        p = self.p[clients]
        return p / p.sum()

    def aggregate(self, state: LoraState, updates: list[ClientUpdate], weights: np.ndarray) -> LoraState:
        return aggregate(state, updates, weights, self.server_lr)

    def download_mbit(self, previous: np.ndarray | None) -> np.ndarray:
        return np.zeros(self.p.size)
