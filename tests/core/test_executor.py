"""The in-process executor trains at the plan's learning-rate scale, as the Flower one does."""

from __future__ import annotations

import numpy as np

from fedsketch.runner.executor import InProcessExecutor, RoundPlan


class _RecordingEngine:
    """A test double of the Engine protocol that records the lr_scale each client trains at."""

    module_names: list[str] = []

    def __init__(self) -> None:
        self.lr_scale = 1.0
        self.seen: list[tuple[int, float]] = []

    def train_client(self, state, client, rnd, indices, scale=None):
        self.seen.append((client, self.lr_scale))
        return f"trained {client}"


def test_in_process_executor_applies_the_plans_lr_scale():
    engine = _RecordingEngine()  # lr_scale 1.0, as a Run built without runner.build.prepare leaves it
    plan = RoundPlan(round=1, sampled=np.array([0, 2]), sketches={0: {}, 2: {}}, lr_scale=0.25)
    out = InProcessExecutor(engine).execute(1, state=None, plan=plan)
    assert out == {0: "trained 0", 2: "trained 2"}
    assert engine.seen == [(0, 0.25), (2, 0.25)]
    InProcessExecutor(engine).execute(2, state=None, plan=RoundPlan(2, np.array([1]), {1: {}}))
    assert engine.seen[-1] == (1, 1.0)  # the default plan trains at train.lr itself
