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

from fedsketch.sketch import ClientJob, ClientUpdate, LoraState


@dataclass
class RoundPlan:
    """What the server decides before a round: who trains, with which sketch, LoRA scale and learning rate."""

    round: int
    sampled: np.ndarray  # (|K_t|,) client ids, sorted
    sketches: dict[int, dict[str, np.ndarray]]  # client -> module -> kept rank indices
    scales: dict[int, float] = field(default_factory=dict)  # client -> multiplier of s (r/k_n for sketches)
    q: dict[int, float] = field(default_factory=dict)  # client -> participation probability q_n
    # client -> local SGD learning rate (absent: train.lr); planner.stability = "scale_lr": train.lr * s (§8.2)
    lr: dict[int, float] = field(default_factory=dict)

    def job(self, n: int) -> ClientJob:
        """What client ``n`` trains: its sketch, LoRA-scale multiplier and learning rate."""
        return ClientJob(n, self.sketches[n], self.scales.get(n), self.lr.get(n))


class Engine(Protocol):
    """The model side of a run (``fedsketch.engine.runtime.TorchEngine``, or a test double)."""

    module_names: list[str]

    def initial_state(self) -> LoraState: ...

    def num_values_full_rank(self) -> int: ...

    def train_client(
        self,
        state: LoraState,
        client: int,
        rnd: int,
        indices: dict[str, np.ndarray],
        scale: float | None = None,
        lr: float | None = None,
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
        C = self.client_batch
        jobs = [plan.job(n) for n in plan.sketches]  # each with its learning rate, as over Flower
        if C == 1 and self.workers != 1 and jobs and hasattr(self.engine, "train_parallel"):
            return self.engine.train_parallel(state, t, jobs, self.workers)
        if C != 1 and hasattr(self.engine, "train_clients"):
            for j in range(0, len(jobs), C or len(jobs) or 1):
                chunk = jobs[j : j + (C or len(jobs))]
                try:
                    results.update({u.client: u for u in self.engine.train_clients(state, t, chunk)})
                except Exception as e:  # noqa: BLE001 - a failed group fails its clients; the round goes on
                    results.update({job.client: f"{type(e).__name__}: {e}" for job in chunk})
            return results
        for n, issued, scale, lr in jobs:
            try:
                results[n] = self.engine.train_client(state, n, t, issued, scale=scale, lr=lr)
            except Exception as e:  # noqa: BLE001 - any client error is recorded and the round goes on
                results[n] = f"{type(e).__name__}: {e}"
        return results
