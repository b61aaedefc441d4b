"""The method protocol."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fedsketch.sketch import ClientUpdate, LoraState
from fedsketch.strategies.base import Allocation, Federation


class Method(Protocol):
    """One federated LoRA algorithm, as the four decisions the round loop asks of it."""

    name: str

    def sample(self, t: int, fed: Federation, alloc: Allocation) -> np.ndarray:
        """Sorted ids of the clients that train in round ``t``."""

    def sketch(self, t: int, n: int, k: int, fed: Federation, modules: list[str]) -> dict[str, np.ndarray]:
        """Kept rank indices per module for client ``n`` with rank budget ``k``."""

    def client_scale(self, k: int, r: int) -> float:
        """Multiplier of the global LoRA scale s inside client training."""

    def weights(self, fed: Federation, alloc: Allocation, clients: np.ndarray) -> np.ndarray:
        """Aggregation weight of each participating client's upload."""

    def initial_state(self, state: LoraState) -> LoraState:
        """The global state at round 0, from the engine's initial LoRA factors."""

    def aggregate(self, state: LoraState, updates: list[ClientUpdate], weights: np.ndarray,
                  fed: Federation) -> LoraState:
        """The next global state from this round's validated uploads."""

    def download_mbit(self, t: int, fed: Federation, alloc: Allocation) -> np.ndarray:
        """Extra Mbit (at channel quality 1) each client must download before round ``t``, shape (N,)."""
