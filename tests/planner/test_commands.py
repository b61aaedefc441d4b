"""`fedsketch plan` / `fedsketch estimate` through a typer app built here (no torch, injected engine)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from fedsketch.cli.planner import register

N = 12


def _app(weights=None, pilot=None):
    app = typer.Typer()
    register(app, weights_fn=weights or (lambda cfg: np.random.default_rng(0).lognormal(0, 0.5, cfg.data.num_clients)),
             pilot_factory=pilot)
    return app


def _config(tmp_path, extra=""):
    path = tmp_path / "c.toml"
    path.write_text(
        f"seed = 3\n[data]\nnum_clients = {N}\n[lora]\nrank = 8\n[network]\npayload_mbit = 50.0\n"
        f"[output]\ndir = \"{tmp_path / 'runs'}\"\n{extra}"
    )
    return path


def test_plan_json_keys(tmp_path):
    cfg = _config(tmp_path, "[planner]\ntheta = [1.0, 0.5, 0.5, 100.0]\n")
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(_app(), ["plan", str(cfg), "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("q", "k", "rounds", "round_time", "total_time", "baselines"):
        assert key in data
    assert len(data["q"]) == N and len(data["k"]) == N
    assert set(data["baselines"]) == {"full", "fixed", "uniform", "weighted", "full_rank", "normal_rank", "uniform_rank"}
    assert json.loads(out.read_text())["total_time"] == data["total_time"]
    # table mode and --set overrides
    res = CliRunner().invoke(_app(), ["plan", str(cfg), "--set", "planner.feasibility=p_weighted"])
    assert res.exit_code == 0, res.output
    assert "full_rank" in res.stdout and "feasibility=p_weighted" in res.stdout


def test_plan_errors(tmp_path):
    cfg = _config(tmp_path)
    res = CliRunner().invoke(_app(), ["plan", str(cfg)])
    assert res.exit_code == 2 and "fedsketch estimate" in res.output  # no theta: bad input
    res = CliRunner().invoke(_app(), ["plan", str(cfg), "--set", "planner.feasibility=nope"])
    assert res.exit_code == 2 and "planner.feasibility" in res.output
    skew = lambda cfg: np.array([1.0] * (N - 1) + [40.0])  # noqa: E731 - client 11 holds most data
    res = CliRunner().invoke(_app(weights=skew), ["plan", str(cfg), "--set", "planner.theta=[1.0, 0.5, 0.5, 100.0]",
                                                  "--set", "planner.feasibility=per_client"])
    assert res.exit_code == 1 and "client 11" in res.output and "per_client" in res.output


def test_estimate_then_plan(tmp_path):
    theta = np.array([1.0, 0.5, 0.5, 100.0])
    w = np.random.default_rng(0).lognormal(0, 0.5, N)
    P = np.sum((w / w.sum()) ** 2)

    def factory(cfg):
        r = cfg.lora.rank
        return lambda q, k: theta[3] / (theta[0] - theta[1] * P / q - theta[2] * P * r / (q * k))

    # the cover design's corner q_lo = P / x_hi falls with Phi_max; these synthetic constants keep R > 0
    # down to the corner that Phi_max = 1.3 gives (at 2.85 the pilot at q = 0.048 never converges)
    cfg = _config(tmp_path, "[planner]\nmax_step_factor = 1.3\n")
    out = tmp_path / "theta.json"
    app = _app(weights=lambda cfg: w, pilot=factory)
    res = CliRunner().invoke(app, ["estimate", str(cfg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    est = json.loads(out.read_text())
    assert est["ok"] and np.allclose(np.array(est["theta"]) / est["theta"][0], theta)
    res = CliRunner().invoke(app, ["plan", str(cfg), "--json", "--set", f"planner.theta_file='{out}'"])
    assert res.exit_code == 0, res.output
    # a flagged estimate is written but refused
    bad = lambda cfg: (lambda q, k: 10.0 * q * k)  # noqa: E731 - fewer rounds at smaller q, k: wrong signs
    res = CliRunner().invoke(_app(weights=lambda cfg: w, pilot=bad), ["estimate", str(cfg), "--out", str(out)])
    assert res.exit_code == 1 and "problem" in res.output
    res = CliRunner().invoke(app, ["plan", str(cfg), "--set", f"planner.theta_file='{out}'"])
    assert res.exit_code == 2 and "flagged" in res.output  # a flagged theta file: bad input


def test_estimate_refits_recorded_pilots_with_sign_constraint(tmp_path):
    w = np.array([283, 27, 44, 571, 139, 154, 566, 26, 190, 251], dtype=float)
    rec = tmp_path / "flagged.json"
    rec.write_text(json.dumps({"theta": [0, 0, 0, 1], "ok": False, "pilots": [
        {"q": q, "k": k, "rounds": n} for q, k, n in
        [(1.0, 8, 5), (0.5, 8, 6), (1.0, 2, 7), (0.25, 4, 6), (0.5, 2, 7), (1.0, 4, 5)]]}))
    cfg = _config(tmp_path)
    never = lambda cfg: (lambda q, k: pytest.fail("--pilots must not run pilots"))  # noqa: E731
    app = _app(weights=lambda cfg: w, pilot=never)
    out = tmp_path / "theta.json"
    res = CliRunner().invoke(app, ["estimate", str(cfg), "--pilots", str(rec), "--out", str(out),
                                   "--set", "lora.rank=8"])
    assert res.exit_code == 1 and "theta2" in res.output  # the paper's check flags it
    res = CliRunner().invoke(app, ["estimate", str(cfg), "--pilots", str(rec), "--out", str(out),
                                   "--set", "lora.rank=8", "--set", "planner.estimate_signs='constrain'"])
    assert res.exit_code == 0, res.output
    assert "theta2 pinned to 0" in res.output
    est = json.loads(out.read_text())
    assert est["ok"] and est["theta"][1] == 0.0 and est["pinned_to_zero"] == ["theta2"]


def test_plan_turns_any_error_into_one_line_with_the_projects_exit_codes(tmp_path):
    """An error the planner does not expect (a model that cannot be loaded, an unreadable file)
    gives one plain line and errors.classify's code, not a traceback; --debug shows it."""
    from fedsketch.errors import ModelError

    cfg = _config(tmp_path, "[planner]\ntheta = [1.0, 0.5, 0.5, 100.0]\n")

    def weights_raising(exc):
        def fn(cfg):
            raise exc
        return fn

    res = CliRunner().invoke(_app(weights=weights_raising(ModelError("model 'x': not found"))), ["plan", str(cfg)])
    assert res.exit_code == 2 and "model 'x': not found" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(_app(weights=weights_raising(KeyError("surprise"))), ["plan", str(cfg)])
    assert res.exit_code == 1 and "KeyError" in res.output and "--debug" in res.output
    assert isinstance(res.exception, SystemExit)  # exited with a code; the KeyError did not escape


def test_plan_debug_lets_the_traceback_through(tmp_path):
    cfg = _config(tmp_path, "[planner]\ntheta = [1.0, 0.5, 0.5, 100.0]\n")
    app = typer.Typer()

    def boom(cfg):
        raise KeyError("surprise")

    register(app, weights_fn=boom, debug=lambda: True)
    res = CliRunner().invoke(app, ["plan", str(cfg)])
    assert isinstance(res.exception, KeyError)


def _exact_round_time(q, t_cp, t_cm, W):
    """E[T] over all 2^N participation masks with their probabilities (eq. 10 per mask)."""
    from itertools import product

    from fedsketch.network.bandwidth import round_times

    masks = np.array(list(product([False, True], repeat=len(q))))
    prob = np.prod(np.where(masks, q, 1 - q), axis=1)
    return float(prob @ round_times(masks, t_cp, t_cm, W))


@pytest.mark.parametrize("n", [N, 14])
def test_plan_reports_the_sampled_round_time(tmp_path, n):
    """`fedsketch plan` reports E[T] at the plan (eq. 10 itself: exact for N <= 12, sampled above) beside the
    bound it plans with; checked against an enumeration of every mask written here."""
    cfg = _config(tmp_path, "[planner]\ntheta = [1.0, 0.5, 0.5, 100.0]\n").read_text()
    path = tmp_path / "n.toml"
    path.write_text(cfg.replace(f"num_clients = {N}", f"num_clients = {n}"))
    res = CliRunner().invoke(_app(), ["plan", str(path), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout.strip().splitlines()[-1])
    s = d["round_time_sampled"]
    q, k, r = np.array(d["q"]), np.array(d["k"]), d["r"]
    exact = _exact_round_time(q, np.array(d["tau_cp"]) * k / r, np.array(d["tau_cm"]) * k / r, d["W"])
    if n <= 12:
        assert s["method"] == "enumerate" and s["value"] == pytest.approx(exact, rel=1e-9)
    else:
        assert s["method"] == "mc" and s["samples"] == 4000 and 0 < s["stderr"] < 0.05 * exact
        assert abs(s["value"] - exact) < 4 * s["stderr"]
    assert exact <= d["round_time"] * (1 + 1e-9)  # the planned round time is the Theorem 2 bound
    res = CliRunner().invoke(_app(), ["plan", str(path)])
    assert "E[T] = " in res.stdout and f"{s['value']:.4g}" in res.stdout.replace("\n", " ")


def test_sampled_round_time_declines_past_its_budget():
    from fedsketch.network.profiles import ClientProfiles
    from fedsketch.planner.api import sampled_round_time
    from fedsketch.planner.bound import PlanProblem, Theta

    n = 100_001
    prob = PlanProblem(ClientProfiles(np.ones(n), np.ones(n), np.zeros(n)), np.ones(n), 8, 100.0,
                       Theta(1.0, 0.0, 0.0, 1.0))
    q, k = np.full(n, 0.01), np.full(n, 8)
    assert sampled_round_time(prob, q, k, np.random.default_rng(0)) is None
    small = PlanProblem(ClientProfiles(np.ones(20), np.ones(20), np.zeros(20)), np.ones(20), 8, 100.0,
                        Theta(1.0, 0.0, 0.0, 1.0))
    assert sampled_round_time(small, np.full(20, 0.5), np.full(20, 8), np.random.default_rng(0)).samples == 4000
