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


def test_interrupted_pilots_resume_from_the_cache_with_the_same_rounds(tiny_cfg, monkeypatch):
    """Each finished replicate is written at once; a second runner reuses it and runs only the rest.
    Oracle: the same pilots run whole without a cache."""
    import numpy as np

    from fedsketch.runner.pilot import pilot_cache_path
    from fedsketch.runner.run import Run

    probe = make_pilot_runner(tiny_cfg()).initial_loss
    cfg = tiny_cfg("planner.pilot_max_rounds=4", "fl.local_steps=3", "train.lr=2.0",
                   f"planner.pilot_loss={probe - 0.02}", "planner.pilot_seeds=2")
    whole = make_pilot_runner(cfg)  # no cache
    expected = (whole(1.0, 8), whole.last_replicates, whole.run_plan(np.full(4, 0.5), np.array([8, 4, 8, 4])))

    cache = pilot_cache_path(cfg)
    calls = []
    real = Run.run

    def crash_on_second(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the session ends during the second replicate
        return real(self)

    monkeypatch.setattr(Run, "run", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        make_pilot_runner(cfg, cache=cache)(1.0, 8)
    assert cache.is_file()

    monkeypatch.setattr(Run, "run", lambda self: (calls.append(1), real(self))[1])
    calls.clear()
    again = make_pilot_runner(cfg, cache=cache)
    got = (again(1.0, 8), again.last_replicates)
    assert len(calls) == 1 and again.reused == 1  # only seed 1 ran
    got += (again.run_plan(np.full(4, 0.5), np.array([8, 4, 8, 4])),)
    assert got == expected
    calls.clear()
    third = make_pilot_runner(cfg, cache=cache)  # everything is cached now, per-client plans included
    assert (third(1.0, 8), third.run_plan(np.full(4, 0.5), np.array([8, 4, 8, 4]))) == (expected[0], expected[2])
    assert calls == [] and third.reused == 4


def test_pilot_cache_is_per_experiment_and_ignores_a_stale_file(tiny_cfg):
    import json

    from fedsketch.runner.pilot import pilot_cache_path

    base = tiny_cfg("planner.pilot_max_rounds=2")
    assert pilot_cache_path(base) == pilot_cache_path(tiny_cfg("planner.pilot_max_rounds=2", "train.threads=1"))
    assert pilot_cache_path(base) != pilot_cache_path(tiny_cfg("planner.pilot_max_rounds=2", "train.lr=0.123"))
    for other in ("planner.pilot_max_rounds=3", "planner.pilot_loss=1.5"):  # what a replicate depends on
        assert pilot_cache_path(base) != pilot_cache_path(tiny_cfg(other))
    for same in ("planner.estimate_signs='constrain'", "planner.pilot_seeds=5", "planner.pilot_design='list'",
                 "planner.max_step_factor=2.0"):  # what is done with the pilots, or which run
        assert pilot_cache_path(base) == pilot_cache_path(tiny_cfg("planner.pilot_max_rounds=2", same))
    cache = pilot_cache_path(base)
    cache.parent.mkdir(parents=True, exist_ok=True)
    key = json.dumps({"q": [1.0], "k": [8], "seed": 0})
    cache.write_text(json.dumps({"initial_loss": 123.0, "replicates": {key: 1.5}}))  # another model's pilots
    run = make_pilot_runner(base, cache=cache)
    run(1.0, 8)
    assert run.reused == 0 and json.loads(cache.read_text())["initial_loss"] == pytest.approx(run.initial_loss)
    cache.write_text("{not json")
    assert make_pilot_runner(base, cache=cache).reused == 0  # unreadable: logged, the pilots run again
