"""PAPER.md §8.4: bootstrap band of theta and of a plan's time, and the refinement loop (synthetic)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from planner_helpers import synthetic_problem

from fedsketch.planner.bound import Theta
from fedsketch.planner.estimate import EstimationError, PilotObservation, estimate_theta
from fedsketch.planner.refine import bootstrap_theta, predicted_time_band, refine
from fedsketch.planner.solve import solve

TRUE = np.array([1.0, 0.5, 0.5, 100.0])  # theta1..theta4 (spec §5's synthetic truth)
N, R = 50, 16
DESIGN = [(1.0, 16), (0.5, 16), (1.0, 4), (0.25, 8), (0.25, 2), (0.5, 2)]  # 6 spread pilots (spec §7.5)


def _p():
    return np.random.default_rng(7).lognormal(0, 0.5, N)


def _rounds(theta, X, Y):
    return theta[3] / (theta[0] - theta[1] * X - theta[2] * Y)  # R = theta4 / D (eq. 21)


def _pilots(rng, noise, seeds, design=DESIGN):
    p = _p() / _p().sum()
    P = float(np.sum(p**2))
    out = []
    for q, k in design:
        R_true = _rounds(TRUE, P / q, P * R / (q * k))
        reps = tuple(R_true * np.exp(noise * rng.standard_normal(seeds)))  # multiplicative seed noise
        out.append(PilotObservation(q, k, float(np.mean(reps)), reps))
    return out


def test_bootstrap_band_covers_the_true_theta():
    truth = TRUE[1:] / TRUE[0]
    covered, trials = np.zeros(3), 40
    for t in range(trials):
        rng = np.random.default_rng(100 + t)
        band = bootstrap_theta(_pilots(rng, 0.05, 5), _p(), R, rng, draws=200)
        covered += (band.lo <= truth) & (truth <= band.hi)
    # nominal 90 % band from 5 seeds per pilot: each ratio covered in at least 3 trials of 4
    assert np.all(covered / trials >= 0.75), covered / trials
    # and the band is informative: it shrinks with the seed noise
    rng = np.random.default_rng(1)
    wide = bootstrap_theta(_pilots(rng, 0.10, 5), _p(), R, rng, draws=200)
    narrow = bootstrap_theta(_pilots(rng, 0.01, 5), _p(), R, rng, draws=200)
    assert np.all(narrow.hi - narrow.lo < wide.hi - wide.lo)


def test_predicted_time_band_contains_the_true_time():
    rng = np.random.default_rng(3)
    obs = _pilots(rng, 0.03, 5)
    band = bootstrap_theta(obs, _p(), R, rng, draws=300)
    prob_true = synthetic_problem(N, 7, theta=Theta(*TRUE))
    prob = replace(prob_true, p=_p(), theta=Theta(*estimate_theta(obs, _p(), R).theta))
    plan = solve(prob)
    lo, hi, J = predicted_time_band(band, prob, plan.q, plan.k)
    assert lo <= replace(prob, theta=Theta(*TRUE)).objective(plan.q, plan.k) <= hi
    assert lo <= plan.objective <= hi and np.isfinite(J).mean() > 0.9


def test_bootstrap_needs_replicates():
    with pytest.raises(EstimationError, match="pilot_seeds"):
        bootstrap_theta([PilotObservation(1.0, 16, 10.0)] * 4, _p(), R, np.random.default_rng(0))


CLUSTERED = [(1.0, 16), (0.8, 16), (1.0, 8), (0.8, 8)]  # spec §5: a poor design (29-54 % regret)


def test_refinement_converges_on_a_synthetic_pilot_function():
    p = _p()
    obs = _pilots(np.random.default_rng(3), 0.05, 3, CLUSTERED)  # clustered pilots: theta poorly identified
    prob0 = replace(synthetic_problem(N, 7), p=p)
    pw = prob0.p

    def plan_fn(theta, rows):
        plan = solve(replace(prob0, theta=theta), k_starts=())
        return plan.q, plan.k, plan.rounds

    def verify_fn(q, k):  # the "pilot": the true constants at the plan's per-client q_n, k_n
        return _rounds(TRUE, np.sum(pw**2 / q), np.sum(pw**2 * R / (k * q)))

    est, steps = refine(obs, p, R, plan_fn, verify_fn, max_iter=3, tol=0.2)
    errs = [s.relative_error for s in steps]
    assert errs[0] > 0.2  # the first plan's prediction was off by more than the tolerance ...
    assert 2 <= len(steps) <= 3 and errs[-1] <= 0.2  # ... and the verification rows fixed it
    assert all(b < a for a, b in zip(errs, errs[1:]))
    assert len(est.observations) == len(obs) + len(steps)
    # with tighter tolerance it keeps going, never past 3 verification pilots
    _, steps = refine(obs, p, R, plan_fn, verify_fn, max_iter=3, tol=0.0)
    assert len(steps) == 3


def test_crossing_is_interpolated_between_the_two_rounds():
    from fedsketch.runner.pilot import crossing  # noqa: PLC0415 - torch behind this import

    assert crossing(3, 2.0, 1.0, 1.5) == pytest.approx(2.5)  # halfway between rounds 2 and 3
    assert crossing(1, 4.0, 1.0, 3.0) == pytest.approx(1 / 3)  # from round 0 (the initial loss)
    assert crossing(5, 1.0, 1.0, 1.0) == 5.0  # flat: the crossing is at the round itself


def test_estimate_command_writes_band_plan_time_and_refinement(tmp_path):
    import json

    import typer
    from typer.testing import CliRunner

    from fedsketch.cli.planner import register

    n, r = 12, 8
    w = np.random.default_rng(0).lognormal(0, 0.5, n)
    pw = w / w.sum()
    P = np.sum(pw**2)

    class Runner:  # the engine's pilot runner, with known constants and 3 noisy seeds
        def __init__(self):
            self.rng = np.random.default_rng(11)

        def _R(self, X, Y):
            return _rounds(TRUE, X, Y)

        def __call__(self, q, k):
            reps = self._R(P / q, P * r / (q * k)) * np.exp(0.03 * self.rng.standard_normal(3))
            self.last_replicates = tuple(reps)
            return float(np.mean(reps))

        def run_plan(self, q, k):
            return self._R(np.sum(pw**2 / q), np.sum(pw**2 * r / (k * q)))

    app = typer.Typer()
    register(app, weights_fn=lambda cfg: w, pilot_factory=lambda cfg: Runner())
    cfg = tmp_path / "c.toml"
    # Phi_max = 1.3 (the default until 2026-12-03): the cover design's corner q_lo = P / x_hi falls as Phi_max
    # grows, and these synthetic constants keep R > 0 only down to the corner that 1.3 gives
    cfg.write_text(f"seed = 3\n[data]\nnum_clients = {n}\n[lora]\nrank = {r}\n[network]\npayload_mbit = 50.0\n"
                   f"[output]\ndir = \"{tmp_path / 'runs'}\"\n[planner]\nmax_step_factor = 1.3\npilot_q = [1.0, 0.5, 1.0, 0.5, 0.25, 1.0]\n"
                   "pilot_k_frac = [1.0, 1.0, 0.25, 0.5, 1.0, 0.5]\n")
    out = tmp_path / "theta.json"
    res = CliRunner().invoke(app, ["estimate", str(cfg), "--out", str(out), "--refine"])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["ok"] and "bootstrap" in d and "plan_time_band" in d and 1 <= len(d["refinement"]) <= 3
    lo, hi = d["bootstrap"]["theta2/theta1"]
    assert lo <= hi and all(len(pt.get("replicates", [0, 0, 0])) == 3 for pt in d["pilots"] if "X" not in pt)
    assert d["plan_time_band"]["lo"] <= d["plan_time_band"]["total_time"] <= d["plan_time_band"]["hi"]
    assert "bootstrap" in res.stdout and "refinement 1" in res.stdout


@pytest.mark.parametrize("theta3, band", [(-0.5, False), (-0.02, True)])
def test_a_flagged_estimate_still_reports_its_bootstrap(tmp_path, theta3, band):
    """Pilots whose rounds fall with Y (theta3 < 0) flag the estimate; the band (or why there is none)
    is written and printed anyway: it is where the non-identification shows. A small negative theta3
    under seed noise gives a band with sign-invalid draws left out; a large one, no valid draw at all."""
    import json

    import typer
    from typer.testing import CliRunner

    from fedsketch.cli.planner import register

    n, r = 12, 8
    w = np.ones(n)
    P = 1.0 / n
    truth = np.array([1.0, 0.5, theta3, 10.0])

    class Runner:
        rng = np.random.default_rng(5)

        def __call__(self, q, k):
            reps = _rounds(truth, P / q, P * r / (q * k)) * np.exp(0.05 * self.rng.standard_normal(3))
            self.last_replicates = tuple(reps)
            return float(np.mean(reps))

    app = typer.Typer()
    register(app, weights_fn=lambda cfg: w, pilot_factory=lambda cfg: Runner())
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[data]\nnum_clients = {n}\n[lora]\nrank = {r}\n[output]\ndir = \"{tmp_path}\"\n[planner]\n"
                   "pilot_design = 'list'\npilot_q = [1.0, 0.5, 1.0, 0.5, 0.25]\npilot_k_frac = [1.0, 1.0, 0.25, 0.5, 0.25]\n")
    out = tmp_path / "theta.json"
    res = CliRunner().invoke(app, ["estimate", str(cfg), "--out", str(out)])
    d = json.loads(out.read_text())
    assert res.exit_code == 1 and not d["ok"] and d["theta"][2] < 0, res.output  # flagged: theta3 < 0
    if band:
        assert d["bootstrap"]["invalid_draws"] > 0 and d["bootstrap"]["draws"] > 0
        assert "sign-invalid draws left out" in res.output
    else:
        assert "bootstrap" not in d and "none of 500 draws" in d["bootstrap_error"]
        assert "none of 500 draws" in res.output
