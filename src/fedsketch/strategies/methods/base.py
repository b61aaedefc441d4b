"""The method protocol."""

from __future__ import annotations

from typing import Protocol

import numpy as np

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
