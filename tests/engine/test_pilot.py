"""Pilot runs of eq. 22 on the tiny model."""

from __future__ import annotations

import pytest

from fedsketch.runner.pilot import make_pilot_runner


def test_default_target_is_ninety_percent_of_initial_probe_loss(tiny_cfg):
    run = make_pilot_runner(tiny_cfg())
    assert run.target_loss == pytest.approx(0.9 * run.initial_loss)


def test_pilot_counts_rounds_to_target(tiny_cfg):
    # the random tiny model learns slowly: aim just below its initial probe loss
    probe = make_pilot_runner(tiny_cfg()).initial_loss
    run = make_pilot_runner(tiny_cfg("planner.pilot_max_rounds=4", "fl.local_steps=3", "train.lr=2.0",
                                     f"planner.pilot_loss={probe - 0.02}"))
    rounds = run(1.0, 8)
    assert rounds is not None and 1 <= rounds <= 4
    impossible = make_pilot_runner(tiny_cfg("planner.pilot_max_rounds=2", "planner.pilot_loss=0.001"))
    assert impossible(1.0, 8) is None


def test_pilot_seeds_average_rounds(tiny_cfg, monkeypatch):
    from fedsketch.runner.run import Run

    probe = make_pilot_runner(tiny_cfg()).initial_loss
    seen = []
    real = Run.round

    def spy(self, t):
        seen.append((self.streams.seed, self.engine.streams.seed))
        return real(self, t)

    monkeypatch.setattr(Run, "round", spy)
    cfg = tiny_cfg("planner.pilot_max_rounds=4", "fl.local_steps=3", "train.lr=2.0",
                   f"planner.pilot_loss={probe - 0.02}", "planner.pilot_seeds=3")
    run = make_pilot_runner(cfg)
    mean = run(1.0, 8)
    assert mean is not None and 1 <= mean <= 4
    seeds = {a for a, _ in seen}
    assert len(seeds) == 3 and all(a == b for a, b in seen)  # coins, sketches and batches all redrawn
    assert cfg.seed in seeds  # repetition 0 is the single-seed pilot
