"""``fedsketch estimate CONFIG --refine`` end to end on the tiny model (configs/tiny.toml): the real CLI,
the real pilot runner (``runner/pilot.py``: probe loss, interpolated crossing, seeds, verification
pilots at the plan's per-client q_n, k_n), the planner, and the JSON it writes.

The random tiny model's rounds carry no q/k signal (measured while writing this test: at ``F_s`` 0.3 %
below the initial probe loss, q = 0.15 crossed in 0.68 rounds and q = 1 in 1.74, so eq. 22 flagged the
fit), so the runner below adds a known eq. 21 term ``theta4 / (theta1 - theta2 X - theta3 Y)`` to every
rounds value the engine measured. That makes theta identifiable and sign-valid; everything else is
the engine's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_pilot_design import _in_hull_lp
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
TRUE = np.array([1.0, 0.5, 0.5, 20.0])


def _model(X, Y):
    return TRUE[3] / (TRUE[0] - TRUE[1] * X - TRUE[2] * Y)


@pytest.mark.slow
def test_estimate_refine_end_to_end_on_the_tiny_model(tmp_path, monkeypatch):
    import fedsketch.cli.planner as commands
    import fedsketch.runner.pilot as pilot
    from fedsketch.cli import app
    from fedsketch.runner.build import default_weights
    from fedsketch.runner.run import Run

    monkeypatch.setattr(pilot, "DEFAULT_FRACTION", 0.997)  # F_s just below the initial probe loss: 1-4 rounds
    allocs: list[tuple[np.ndarray, np.ndarray]] = []
    real_round = Run.round

    def spy(self, t):
        allocs.append((np.array(self.alloc.q, float), np.array(self.alloc.k)))
        return real_round(self, t)

    monkeypatch.setattr(Run, "round", spy)
    measured: list[tuple] = []  # (q, k, the engine's per-seed rounds)

    def factory(cfg):
        real = pilot.make_pilot_runner(cfg)
        pw = default_weights(cfg) / default_weights(cfg).sum()
        P, r = float(np.sum(pw**2)), cfg.lora.rank

        def run(q, k):
            mean = real(q, k)
            measured.append((q, k, real.last_replicates))
            add = _model(P / q, P * r / (q * k))
            run.last_replicates = tuple(x + add for x in real.last_replicates)
            return None if mean is None else mean + add

        def run_plan(q, k):
            n0 = len(allocs)
            mean = real.run_plan(q, k)
            assert all(np.array_equal(a, q) and np.array_equal(b, k) for a, b in allocs[n0:])  # the plan itself
            measured.append((q, k, real.last_replicates))
            return None if mean is None else mean + _model(np.sum(pw**2 / q), np.sum(pw**2 * r / (k * q)))

        run.run_plan = run_plan
        return run

    monkeypatch.setattr(commands, "_default_pilot_factory", factory)
    out = tmp_path / "theta.json"
    sets = [f"output.dir='{tmp_path}'", "output.plot=false", "fl.local_steps=1", "fl.batch_size=1",
            "data.max_seq_len=32", "train.lr=2.0", "planner.pilot_seeds=2", "planner.pilot_max_rounds=8",
            "planner.max_step_factor=1.3"]  # the corners this test's synthetic model was built for (default 1.3 until 2026-12-03)
    res = CliRunner().invoke(app, ["estimate", str(REPO / "configs" / "tiny.toml"), "--refine", "--out", str(out),
                                   *sum((["--set", s] for s in sets), [])])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())

    # the pilots: the cover design's 4 corners, 2 seeds each, real-valued crossings from the engine
    homo = [pt for pt in d["pilots"] if "X" not in pt]
    assert len(homo) == 4 and all(len(pt["replicates"]) == 2 for pt in homo)
    assert all(np.isclose(pt["rounds"], np.mean(pt["replicates"])) for pt in homo)
    engine_rounds = np.concatenate([m[2] for m in measured])
    assert np.all(engine_rounds > 0) and np.any(np.abs(engine_rounds - np.round(engine_rounds)) > 1e-6)

    # refinement: one row per verification pilot, each recorded, each at the plan's own (q, k)
    steps = d["refinement"]
    assert 1 <= len(steps) <= 3 and len(d["pilots"]) == 4 + len(steps)
    for st, row in zip(steps, d["pilots"][4:]):
        assert np.isclose(row["X"], st["X"]) and np.isclose(row["Y"], st["Y"]) and row["rounds"] == st["observed_rounds"]
        assert len(st["q"]) == 4 and st["relative_error"] >= 0
    assert steps[-1]["relative_error"] <= 0.2 or len(steps) == 3

    # the bands
    b = d["bootstrap"]
    assert b["draws"] > 0 and all(b[n][0] <= b[n][1] for n in ("theta2/theta1", "theta3/theta1", "theta4/theta1"))
    assert d["plan_time_band"]["lo"] <= d["plan_time_band"]["hi"]

    # the final plan (and every refinement plan) inside the pilots' (X, Y) hull: extrapolate is false
    pw = np.full(4, 0.25)  # 4 iid clients of equal size
    r = 8
    pts = np.array([[np.sum(pw**2) / pt["q"], np.sum(pw**2) * r / (pt["q"] * pt["k"])] for pt in homo])
    plans = [(np.array(s["q"]), np.array(s["k"], float)) for s in steps] + [
        (np.array(d["plan"]["q"]), np.array(d["plan"]["k"], float))]
    for q, k in plans:
        assert _in_hull_lp(np.array([np.sum(pw**2 / q), np.sum(pw**2 * r / (k * q))]), pts)
    assert d["plan"]["inside_pilot_hull"] and not d["plan"]["extrapolate"]
    assert "refinement 1" in res.stdout and "bootstrap" in res.stdout and "inside the pilots" in res.stdout


def test_estimate_resumes_its_pilots_and_fresh_runs_them_again(tmp_path, monkeypatch):
    """The real CLI and pilot runner on the tiny model: a second `estimate` reuses every finished
    replicate (same pilots, same JSON), `--fresh` runs them all again."""
    import fedsketch.runner.pilot as pilot
    from fedsketch.cli import app
    from fedsketch.runner.run import Run

    monkeypatch.setattr(pilot, "DEFAULT_FRACTION", 0.997)
    runs = []
    real = Run.run
    monkeypatch.setattr(Run, "run", lambda self: (runs.append(1), real(self))[1])
    out = tmp_path / "theta.json"
    sets = [f"output.dir='{tmp_path}'", "fl.local_steps=1", "fl.batch_size=1", "data.max_seq_len=32",
            "train.lr=2.0", "planner.pilot_seeds=1", "planner.pilot_max_rounds=8"]
    args = ["estimate", str(REPO / "configs" / "tiny.toml"), "--out", str(out), *sum((["--set", s] for s in sets), [])]

    first = CliRunner().invoke(app, args)
    pilots = json.loads(out.read_text())["pilots"]
    assert len(runs) == 4 and "reused" not in first.output, first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == first.exit_code and len(runs) == 4  # nothing trained again
    assert "reused 4 finished pilot replicate(s)" in second.output
    assert first.output.count("pilot q=") == 4 and "seed 0: " in first.output and "rounds to probe loss" in first.output
    assert second.output.count("(from ") == 4
    assert json.loads(out.read_text())["pilots"] == pilots
    third = CliRunner().invoke(app, [*args, "--fresh"])
    assert len(runs) == 8 and "reused" not in third.output
    assert json.loads(out.read_text())["pilots"] == pilots  # the same seeds give the same rounds
