"""The in-process executor hands every client the learning rate of the round's plan, as the Flower one does."""

from __future__ import annotations

import numpy as np

from fedsketch.runner.executor import InProcessExecutor, RoundPlan


class _RecordingEngine:
    """A test double of the Engine protocol that records the learning rate each client is given."""

    module_names: list[str] = []

    def __init__(self) -> None:
        self.seen: list[tuple[int, float | None]] = []

    def train_client(self, state, client, rnd, indices, scale=None, lr=None):
        self.seen.append((client, lr))
        return f"trained {client}"


def test_in_process_executor_passes_each_clients_lr():
    engine = _RecordingEngine()
    plan = RoundPlan(round=1, sampled=np.array([0, 2]), sketches={0: {}, 2: {}}, lr={0: 0.125, 2: 0.25})
    out = InProcessExecutor(engine).execute(1, state=None, plan=plan)
    assert out == {0: "trained 0", 2: "trained 2"}
    assert engine.seen == [(0, 0.125), (2, 0.25)]
    assert not hasattr(engine, "lr_scale")  # nothing is set on the engine
    InProcessExecutor(engine).execute(2, state=None, plan=RoundPlan(2, np.array([1]), {1: {}}))
    assert engine.seen[-1] == (1, None)  # a plan without rates: the engine's train.lr
