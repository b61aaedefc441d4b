"""The paper's Algorithm 1: independent sampling + random sketches + unbiased weights.

With ``fl.sampling = "optimized"`` and ``fl.ranks = "optimized"`` this is the *Proposed* method
(planner q*, k*); with other policies it is the Fig. 2 / Fig. 3 baselines. Its three parts are
defined here and reused by the other methods' compositions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsketch.aggregate import aggregate
from fedsketch.rng import Streams
from fedsketch.sampling import sample_participants, unbiased_weights
from fedsketch.sketch import ClientUpdate, LoraState, draw_indices
from fedsketch.strategies.methods.base import MethodContext

COMPOSITION = ("bernoulli", "random_subset", "unbiased")  # sampler, sketcher, aggregator


@dataclass(frozen=True)
class BernoulliSampler:
    """Independent Bernoulli(q_n) coins (Algorithm 1 line 5); the cohort size varies."""

    q: np.ndarray  # (N,)
    streams: Streams

    @classmethod
    def build(cls, ctx: MethodContext) -> BernoulliSampler:
        return cls(ctx.q, ctx.streams)

    def sample(self, t: int) -> np.ndarray:
        return sample_participants(self.q, self.streams.generator("sampling", t))

    def inclusion(self) -> np.ndarray:
        return np.asarray(self.q, dtype=float)


@dataclass(frozen=True)
class RandomSubsetSketcher:
    """A uniform k-subset of the r components per module (eq. 3), trained at scale r/k so that
    E[B S A] = B A (eq. 4)."""

    r: int
    streams: Streams

    @classmethod
    def build(cls, ctx: MethodContext) -> RandomSubsetSketcher:
        return cls(ctx.r, ctx.streams)

    def sketch(self, t: int, n: int, k: int, modules: list[str]) -> dict[str, np.ndarray]:
        return draw_indices(self.streams.generator("sketch", t, n), modules, self.r, k)

    def scale(self, k: int) -> float:
        return self.r / k


@dataclass(frozen=True)
class UnbiasedAggregator:
    """X_{t+1} = X_t + server_lr * sum_n (p_n / q_n) scatter(Delta_n), no renormalisation (eq. 6)."""

    p: np.ndarray  # (N,)
    q: np.ndarray  # (N,)
    server_lr: float = 1.0

    @classmethod
    def build(cls, ctx: MethodContext) -> UnbiasedAggregator:
        return cls(ctx.p, ctx.q, ctx.server_lr)

    def initial_state(self, state: LoraState) -> LoraState:
        """X_0 = the engine's (B_0 = 0, A_0 random) factors."""
        return state

    def weights(self, clients: np.ndarray) -> np.ndarray:
        return unbiased_weights(self.p, self.q, clients)

    def aggregate(self, state: LoraState, updates: list[ClientUpdate], weights: np.ndarray) -> LoraState:
        return aggregate(state, updates, weights, self.server_lr)

    def download_mbit(self, previous: np.ndarray | None) -> np.ndarray:
        """Nothing beyond the model broadcast, which the paper's time model leaves out (eq. 10)."""
        return np.zeros(self.p.size)
