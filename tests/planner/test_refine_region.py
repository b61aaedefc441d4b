"""PAPER.md §8.4: refinement plans and the final (band) plan of ``fedsketch estimate --refine`` stay
inside the region of the pilots run so far unless ``planner.extrapolate = true``. Synthetic engine with
known constants; the checks read the verification pilots' own (q, k) and the written JSON, and the hull
membership is an LP here (``test_pilot_design._in_hull_lp``), not the code under test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from test_pilot_design import _in_hull_lp
from typer.testing import CliRunner

from fedsketch.cli.planner import register

TRUE = np.array([1.0, 0.15, 0.15, 100.0])  # theta1 / ((theta2 + theta3) P) ~ 30: plans want small q
N, R = 12, 8
W = np.random.default_rng(0).lognormal(0, 0.5, N)
PW = W / W.sum()
P = float(np.sum(PW**2))


def _rounds(X, Y):
    return TRUE[3] / (TRUE[0] - TRUE[1] * X - TRUE[2] * Y)


class Runner:
    """The engine's pilot runner with known constants: 3 noisy seeds per pilot; records every pilot."""

    def __init__(self):
        self.rng = np.random.default_rng(11)
        self.pilots: list[tuple[float, int]] = []
        self.plans: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, q, k):
        self.pilots.append((q, k))
        reps = _rounds(P / q, P * R / (q * k)) * np.exp(0.002 * self.rng.standard_normal(3))
        self.last_replicates = tuple(reps)
        return float(np.mean(reps))

    def run_plan(self, q, k):
        self.plans.append((np.asarray(q, float).copy(), np.asarray(k).copy()))
        return _rounds(np.sum(PW**2 / q), np.sum(PW**2 * R / (k * q)))


def _estimate(tmp_path, *sets):
    runner = Runner()
    app = typer.Typer()
    register(app, weights_fn=lambda cfg: W, pilot_factory=lambda cfg: runner)
    cfg = tmp_path / "c.toml"
    # Phi_max = 1.3 (the default until 2026-12-03): the cover design's corner q_lo = P / x_hi falls as Phi_max
    # grows, and these synthetic constants keep R > 0 only down to the corner that 1.3 gives
    cfg.write_text(f"seed = 3\n[data]\nnum_clients = {N}\n[lora]\nrank = {R}\n[network]\npayload_mbit = 50.0\n"
                   f"[output]\ndir = \"{tmp_path / 'runs'}\"\n[planner]\nmax_step_factor = 1.3\n")
    out = tmp_path / "theta.json"
    args = ["estimate", str(cfg), "--out", str(out), "--refine"]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return runner, json.loads(out.read_text())


LIST = ("planner.pilot_design='list'", "planner.pilot_q=[1.0, 0.5, 1.0, 0.5, 0.75]",
        "planner.pilot_k_frac=[1.0, 1.0, 0.5, 0.5, 0.75]")


@pytest.mark.parametrize("stability", ["none", "constrain"])
def test_refinement_and_final_plan_stay_in_the_pilots_box(tmp_path, stability):
    runner, d = _estimate(tmp_path, *LIST, f"planner.stability='{stability}'")
    q_lo, k_lo = min(q for q, _ in runner.pilots), min(k for _, k in runner.pilots)
    assert (q_lo, k_lo) == (0.5, 4) and 1 <= len(runner.plans) <= 3 and len(d["refinement"]) == len(runner.plans)
    for q, k in runner.plans + [(np.array(d["plan"]["q"]), np.array(d["plan"]["k"]))]:
        assert q.min() >= q_lo - 1e-9 and k.min() >= k_lo
    assert not d["plan"]["extrapolate"]


def test_without_the_guard_the_plans_leave_the_box(tmp_path):
    # the same pilots with planner.extrapolate = true: the plans go below the smallest pilot q, so the
    # test above is not vacuous
    runner, d = _estimate(tmp_path, *LIST, "planner.stability='none'", "planner.extrapolate=true")
    assert min(q.min() for q, _ in runner.plans) < 0.5 and min(d["plan"]["q"]) < 0.5
    assert d["plan"]["extrapolate"]


def test_cover_design_final_and_refinement_plans_in_the_pilots_hull(tmp_path):
    runner, d = _estimate(tmp_path)  # defaults: pilot_design = 'cover', stability = 'constrain'
    pts = np.array([[P / q, P * R / (q * k)] for q, k in runner.pilots])
    assert len(pts) == 4
    for q, k in runner.plans + [(np.array(d["plan"]["q"]), np.array(d["plan"]["k"], float))]:
        xy = np.array([np.sum(PW**2 / q), np.sum(PW**2 * R / (k * q))])
        assert _in_hull_lp(xy, pts)
    assert d["plan"]["inside_pilot_hull"]


def test_plan_from_the_theta_file_stays_in_the_region(tmp_path):
    # `fedsketch plan` with the estimate's theta_file: the same guard (api.pilot_region)
    for design, stability in ((LIST, "none"), ((), "constrain")):
        runner, _ = _estimate(tmp_path, *design, f"planner.stability='{stability}'")
        app = typer.Typer()
        register(app, weights_fn=lambda cfg: W)
        res = CliRunner().invoke(app, ["plan", str(tmp_path / "c.toml"), "--json", "--set",
                                       f"planner.theta_file='{tmp_path / 'theta.json'}'", "--set",
                                       f"planner.stability='{stability}'", *sum((["--set", s] for s in design), [])])
        assert res.exit_code == 0, res.output
        plan = json.loads(res.stdout.strip().splitlines()[-1])
        q, k = np.array(plan["q"]), np.array(plan["k"], float)
        if design:  # list design, not covering: the box
            assert q.min() >= 0.5 - 1e-9 and k.min() >= 4
        else:  # cover design under constrain: no box needed, the plan is in the pilots' hull
            pts = np.array([[P / q0, P * R / (q0 * k0)] for q0, k0 in runner.pilots])
            assert _in_hull_lp(np.array([np.sum(PW**2 / q), np.sum(PW**2 * R / (k * q))]), pts)
