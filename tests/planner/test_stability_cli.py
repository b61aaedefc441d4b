"""`fedsketch plan` reports PAPER.md §8.3's stability fields (Phi, s, binding, rounds, time)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from fedsketch.cli.planner import register

N = 12
THETA = "[planner]\ntheta = [1.0, 0.5, 0.5, 100.0]\n"


def _app():
    app = typer.Typer()
    register(app, weights_fn=lambda cfg: np.random.default_rng(0).lognormal(0, 0.5, cfg.data.num_clients))
    return app


def _config(tmp_path, extra=THETA):
    path = tmp_path / "c.toml"
    path.write_text(f"seed = 3\n[data]\nnum_clients = {N}\n[lora]\nrank = 8\n[network]\npayload_mbit = 50.0\n"
                    f"[output]\ndir = \"{tmp_path / 'runs'}\"\n{extra}")
    return path


def _plan(tmp_path, *sets):
    args = ["plan", str(_config(tmp_path)), "--json", "--out", str(tmp_path / "p.json")]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def _phi(d, r=8):
    p = np.random.default_rng(0).lognormal(0, 0.5, N)
    p /= p.sum()
    q, k = np.array(d["q"]), np.array(d["k"])
    return r / k.min() * np.sum(p * (1 - p) + p**2 / q)


def test_default_plan_is_constrained_and_says_so(tmp_path):
    d = _plan(tmp_path)
    assert d["stability"]["stability"] == "constrain" and d["stability"]["max_step_factor"] == 2.85  # results/n50/stability
    assert d["step_factor"] == pytest.approx(_phi(d)) and d["step_factor"] <= 2.85 * (1 + 1e-9)
    assert d["lr_scale"] == 1.0 and isinstance(d["stability_binding"], bool)
    assert d["rounds"] > 0 and d["total_time"] == pytest.approx(d["rounds"] * d["round_time"])
    res = CliRunner().invoke(_app(), ["plan", str(_config(tmp_path))])
    assert res.exit_code == 0 and "step factor kappa_max*Omega" in res.stdout and "lr scale s" in res.stdout


def test_scale_lr_and_none_plans(tmp_path):
    d = _plan(tmp_path, "planner.stability=scale_lr")
    assert 0 < d["lr_scale"] <= 1.0 and d["lr_scale"] == pytest.approx(min(1.0, 2.85 / _phi(d)))
    free = _plan(tmp_path, "planner.stability=none")
    assert free["lr_scale"] == 1.0 and free["step_factor"] == pytest.approx(_phi(free))
    assert free["total_time"] <= d["total_time"] * (1 + 1e-9)  # the paper's P2 ignores the condition


@pytest.mark.parametrize("setting,word", [("planner.max_step_factor=0.5", "planner.max_step_factor"),
                                          ("planner.stability=maybe", "planner.stability")])
def test_bad_stability_settings_are_config_errors(tmp_path, setting, word):
    res = CliRunner().invoke(_app(), ["plan", str(_config(tmp_path)), "--set", setting])
    assert res.exit_code == 2 and word in res.output


def test_plans_stay_inside_the_pilots_region_unless_extrapolate(tmp_path):
    theta = tmp_path / "theta.json"
    theta.write_text(json.dumps({"theta": [1.0, 0.5, 0.5, 100.0], "ok": True, "problems": [],
                                 "pilots": [{"q": 1.0, "k": 8, "rounds": 150}, {"q": 0.5, "k": 8, "rounds": 160},
                                            {"q": 1.0, "k": 4, "rounds": 170}, {"q": 0.4, "k": 4, "rounds": 190}]}))
    base = ["planner.stability=none", f"planner.theta_file={str(theta)!r}", "planner.theta=[]"]
    free = _plan(tmp_path, *base, "planner.extrapolate=true")
    assert min(free["q"]) < 0.4 or min(free["k"]) < 4  # the unrestricted plan leaves the region ...
    inside = _plan(tmp_path, *base)
    assert min(inside["q"]) >= 0.4 - 1e-12 and min(inside["k"]) >= 4  # ... the default keeps it inside
