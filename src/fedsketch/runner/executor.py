"""What a run needs from the model (``Engine``) and from the clients (``ClientExecutor``).

The run (:class:`fedsketch.runner.run.Run`) sees the engine only through :class:`Engine`: the
global LoRA state at round 0, evaluation and the adapter file. Who trains a round's sketches is
a :class:`ClientExecutor`: :class:`InProcessExecutor` here (the engine in this process), or
:class:`fedsketch.flower.executor.FlowerExecutor` (one Flower node per client).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedsketch.sketch import ClientUpdate, LoraState


@dataclass
class RoundPlan:
    """What the server decides before a round: who trains, with which sketch and LoRA scale."""

    round: int
    sampled: np.ndarray  # (|K_t|,) client ids, sorted
    sketches: dict[int, dict[str, np.ndarray]]  # client -> module -> kept rank indices
    scales: dict[int, float] = field(default_factory=dict)  # client -> multiplier of s (r/k_n for sketches)
    q: dict[int, float] = field(default_factory=dict)  # client -> participation probability q_n
    lr_scale: float = 1.0  # planner.stability = "scale_lr": clients train at train.lr * lr_scale


class Engine(Protocol):
    """The model side of a run (``fedsketch.engine.runtime.TorchEngine``, or a test double)."""

    module_names: list[str]
    lr_scale: float

    def initial_state(self) -> LoraState: ...

    def num_values_full_rank(self) -> int: ...

    def train_client(
        self, state: LoraState, client: int, rnd: int, indices: dict[str, np.ndarray], scale: float | None = None
    ) -> ClientUpdate: ...

    def evaluate(self, state: LoraState) -> Any: ...  # .as_dict() -> accuracy, test_loss, ...

    def save_adapter(self, state: LoraState, path: str | Path) -> None: ...


class ClientExecutor(Protocol):
    """Trains one round's sketches: every sampled client maps to its upload or a failure reason."""

    def execute(self, t: int, state: LoraState, plan: RoundPlan) -> dict[int, ClientUpdate | str]: ...


@dataclass
class InProcessExecutor:
    """The clients on the engine of this process: one after another; in fused groups of
    ``client_batch`` (0 = all) when the engine offers ``train_clients``; or whole clients side by
    side in ``workers`` forked processes (0 = auto) when it offers ``train_parallel`` and
    ``client_batch`` is 1."""

    engine: Engine
    client_batch: int = 1
    workers: int = 1

    def execute(self, t: int, state: LoraState, plan: RoundPlan) -> dict[int, ClientUpdate | str]:
        results: dict[int, ClientUpdate | str] = {}
        self.engine.lr_scale = plan.lr_scale  # s of §8.2 travels with the plan, as it does over Flower
        C = self.client_batch
        jobs = [(n, issued, plan.scales.get(n)) for n, issued in plan.sketches.items()]
        if C == 1 and self.workers != 1 and jobs and hasattr(self.engine, "train_parallel"):
            return self.engine.train_parallel(state, t, jobs, self.workers)  # set before the fork: lr_scale above
        if C != 1 and hasattr(self.engine, "train_clients"):
            for j in range(0, len(jobs), C or len(jobs) or 1):
                chunk = jobs[j : j + (C or len(jobs))]
                try:
                    results.update({u.client: u for u in self.engine.train_clients(state, t, chunk)})
                except Exception as e:  # noqa: BLE001 - a failed group fails its clients; the round goes on
                    results.update({n: f"{type(e).__name__}: {e}" for n, _, _ in chunk})
            return results
        for n, issued in plan.sketches.items():
            try:
                results[n] = self.engine.train_client(state, n, t, issued, scale=plan.scales.get(n))
            except Exception as e:  # noqa: BLE001 - any client error is recorded and the round goes on
                results[n] = f"{type(e).__name__}: {e}"
        return results
