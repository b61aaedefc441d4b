"""A method is composed, not inherited: a sampler x a sketcher x an aggregator.

Each part is built once per run from plain values (:class:`MethodContext`) and answers one of
the round's questions: who trains (:class:`Sampler`), which rank components each client trains
and at which LoRA scale (:class:`Sketcher`), and how the uploads become the next global state
(:class:`Aggregator`). :class:`Method` puts the three together for the run's round
(:class:`fedsketch.runner.run.Run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedsketch.rng import Streams
from fedsketch.sketch import ClientUpdate, LoraState


@dataclass(frozen=True)
class MethodContext:
    """The plain values a method's parts are built from (resolved by the run's builder)."""

    p: np.ndarray  # (N,) data weights, sum 1
    q: np.ndarray  # (N,) participation probabilities of the allocation
    k: np.ndarray  # (N,) sketch ranks of the allocation
    r: int  # LoRA rank
    streams: Streams
    server_lr: float = 1.0  # fl.server_lr
    lora_scale: float = 1.0  # PEFT's s = alpha / r (alpha / sqrt(r) with rsLoRA)
    clients_per_round: int = 0  # fl.clients_per_round (0 = round(sum q))
    tau_cm: np.ndarray | None = None  # (N,) full-rank upload seconds at channel quality 1

    @property
    def num_clients(self) -> int:
        return int(self.p.size)


class Sampler(Protocol):
    def sample(self, t: int) -> np.ndarray:
        """Sorted ids of the clients that train in round ``t``."""

    def inclusion(self) -> np.ndarray:
        """(N,) probability that each client trains in a round (q_n; m/N for a fixed cohort of m)."""


class Sketcher(Protocol):
    def sketch(self, t: int, n: int, k: int, modules: list[str]) -> dict[str, np.ndarray]:
        """Kept rank indices per module for client ``n`` with rank budget ``k``."""

    def scale(self, k: int) -> float:
        """Multiplier of the global LoRA scale s inside client training."""


class Aggregator(Protocol):
    def initial_state(self, state: LoraState) -> LoraState:
        """The global state at round 0, from the engine's initial LoRA factors."""

    def weights(self, clients: np.ndarray) -> np.ndarray:
        """Aggregation weight of each participating client's upload."""

    def aggregate(self, state: LoraState, updates: list[ClientUpdate], weights: np.ndarray) -> LoraState:
        """The next global state from this round's validated uploads."""

    def download_mbit(self, previous: np.ndarray | None) -> np.ndarray:
        """Extra Mbit (at channel quality 1) each client downloads, given the previous round's cohort."""


@dataclass(frozen=True)
class Method:
    """One federated LoRA algorithm: the round loop asks its three parts."""

    name: str
    sampler: Sampler
    sketcher: Sketcher
    aggregator: Aggregator

    def sample(self, t: int) -> np.ndarray:
        return self.sampler.sample(t)

    def sketch(self, t: int, n: int, k: int, modules: list[str]) -> dict[str, np.ndarray]:
        return self.sketcher.sketch(t, n, k, modules)

    def client_scale(self, k: int) -> float:
        return self.sketcher.scale(k)

    def initial_state(self, state: LoraState) -> LoraState:
        return self.aggregator.initial_state(state)

    def weights(self, clients: np.ndarray) -> np.ndarray:
        return self.aggregator.weights(clients)

    def aggregate(self, state: LoraState, updates: list[ClientUpdate], weights: np.ndarray) -> LoraState:
        return self.aggregator.aggregate(state, updates, weights)

    def download_mbit(self, t: int) -> np.ndarray:
        """Extra Mbit each client downloads before round ``t`` (the previous cohort redrawn from its
        seeded stream; nothing before round 1)."""
        return self.aggregator.download_mbit(self.sampler.sample(t - 1) if t > 1 else None)
