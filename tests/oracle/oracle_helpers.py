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
    from fedsketch.server import prepare, run_experiment

    engine = RecordingEngine(prepare(cfg)[0])
    res = run_experiment(cfg, engine=engine, **kw)
    return res, engine, json.loads((Path(res.run_dir) / "run.json").read_text())
