"""Helpers of the oracle tests: a pass-through engine that records every upload it returns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsketch.sketch import ClientUpdate


class RecordingEngine:
    """Wraps a real engine; every ``ClientUpdate`` any of its methods returns is kept in ``uploads``
    keyed by ``(round, client)``, whatever the method's name (one client or a batch of them).
    ``state0`` is the engine's LoRA state before the run (the round-0 factors)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.uploads: dict[tuple[int, int], ClientUpdate] = {}
        self.state0 = engine.initial_state()

    def _collect(self, out: Any) -> None:
        if isinstance(out, ClientUpdate):
            self.uploads[(out.round, out.client)] = out
        elif isinstance(out, dict):
            for v in out.values():
                self._collect(v)
        elif isinstance(out, (list, tuple)):
            for v in out:
                self._collect(v)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            out = attr(*args, **kwargs)
            self._collect(out)
            return out

        return call


def recording_run(cfg, **kw):
    """Run ``cfg`` on a real engine wrapped in a :class:`RecordingEngine`.

    Returns ``(RunResult, RecordingEngine, run.json as a dict)``.
    """
    from fedsketch.runner import prepare, run_experiment

    engine = RecordingEngine(prepare(cfg)[0])
    res = run_experiment(cfg, engine=engine, **kw)
    return res, engine, json.loads((Path(res.run_dir) / "run.json").read_text())


class Crash(BaseException):
    """A process death in the middle of a round (not an ``Exception``: no client handler catches it)."""


class ScriptedEngine(RecordingEngine):
    """A :class:`RecordingEngine` whose evaluations and uploads a test scripts.

    ``evaluate_fn(i, result) -> result`` gets the index of the evaluation call (0 = round 0) and
    the real :class:`~fedsketch.engine.runtime.EvalResult`, and returns the one the run sees (or
    raises). ``tamper(update)`` may change every upload before the server receives it.
    """

    def __init__(self, engine: Any, evaluate_fn=None, tamper=None) -> None:
        super().__init__(engine)
        self.evaluate_fn, self.tamper, self.eval_calls = evaluate_fn, tamper, 0

    def _collect(self, out: Any) -> None:
        if isinstance(out, ClientUpdate) and self.tamper is not None:
            self.tamper(out)
        super()._collect(out)

    def evaluate(self, state):
        res = self._engine.evaluate(state)
        i, self.eval_calls = self.eval_calls, self.eval_calls + 1
        return res if self.evaluate_fn is None else self.evaluate_fn(i, res)


def scripted_run(cfg, evaluate_fn=None, tamper=None, **kw):
    """Like :func:`recording_run` with a :class:`ScriptedEngine`; returns ``(RunResult, engine)``."""
    from fedsketch.runner import prepare, run_experiment

    engine = ScriptedEngine(prepare(cfg)[0], evaluate_fn, tamper)
    return run_experiment(cfg, engine=engine, **kw), engine


def strip_real_time(records):
    """Records (as their JSON objects) without the fields that measure real (wall-clock) time."""
    from fedsketch.records import WALL_CLOCK_FIELDS

    return [{k: v for k, v in r.to_dict().items() if k not in WALL_CLOCK_FIELDS} for r in records]
