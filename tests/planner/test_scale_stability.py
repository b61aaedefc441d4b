"""Internet-scale planner under every ``planner.stability`` form (issue 13 point 4; PAPER.md §8).

``tests/planner/data/solver_oracle_stability.json`` holds the whole-Algorithm-2 plans of the
solver at commit c139507 (before this rewrite; ``scripts/planner_oracle.py --suite stability``)
for ``none``, ``constrain`` (Phi_max = 1.3) and ``scale_lr`` at N = 10 ... 5000. The solver must
not be worse than it by more than 0.1 % in J (issue 13), with every constraint of P2 satisfied,
both on its small-N path and on its large-N path (systematic subsample, then one pass on all
clients), the latter forced at N = 5000 by a small ``multistart_max_n``. The work per client of
the large-N path must not grow with N (counted evaluations; timings live in ``bench/planner.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from planner_oracle import stability_problem  # noqa: E402

import fedsketch.planner.kstep as kstep_mod  # noqa: E402
import fedsketch.planner.solve as solve_mod  # noqa: E402
from fedsketch.planner.qstep_problem import FixedK  # noqa: E402
from fedsketch.planner.solve import _dual_price, solve, subsample_problem  # noqa: E402

ORACLE = json.loads((Path(__file__).parent / "data" / "solver_oracle_stability.json").read_text())
RTOL = 1e-3  # issue 13: J within 0.1 % of the recorded solver


def _select(cases):
    # none/constrain: every case (fast); scale_lr: a spread over N and both compute models (seconds)
    keep = []
    for c in cases:
        if c["stability"] != "scale_lr" or (c["seed"] == 0 and c["N"] in (10, 500)) or (
                c["N"] == 50 and c["seed"] == 1) or (c["N"] == 5000 and c["seed"] == 0 and c["compute_model"] == "linear"):
            keep.append(c)
    return keep


SMALL = _select(ORACLE["cases"])
LARGE = [c for c in ORACLE["cases"] if c["N"] == 5000 and not (c["stability"] == "scale_lr" and c["seed"] == 1)]


def _id(c):
    return f"N{c['N']}-s{c['seed']}-{c['stability']}-{c['compute_model']}"


def _check_plan(prob, plan, case):
    assert prob.violations(plan.q, plan.k) == []
    assert plan.objective == pytest.approx(prob.objective(plan.q, plan.k), rel=1e-12)
    phi = prob.step_factor(plan.q, plan.k)  # recomputed from the definition, not from the plan's report
    if case["stability"] == "constrain":
        assert phi <= prob.max_step_factor * (1 + 1e-9)
    if case["stability"] == "scale_lr":
        s = min(1.0, prob.max_step_factor / phi)
        assert plan.stability["lr_scale"] == pytest.approx(s, rel=1e-12) and s <= 1.0
    assert plan.objective <= case["J"] * (1 + RTOL), (plan.objective, case["J"])


@pytest.mark.parametrize("case", SMALL, ids=_id)
def test_small_n_path_not_worse_than_recorded_solver(case):
    prob = stability_problem(case["N"], case["seed"], case["stability"], case["compute_model"])
    plan = solve(prob)
    _check_plan(prob, plan, case)


@pytest.mark.parametrize("case", LARGE, ids=_id)
def test_large_n_path_not_worse_than_recorded_solver(case):
    # multistart_max_n = 1000 sends N = 5000 down the large-N path (subsample of 2000, then all clients)
    prob = stability_problem(case["N"], case["seed"], case["stability"], case["compute_model"])
    plan = solve(prob, multistart_max_n=1000)
    assert "subsample" in plan.diagnostics
    _check_plan(prob, plan, case)


def test_subsample_is_systematic_in_compute_time_and_renormalised():
    prob = stability_problem(5000, 1, "constrain", "affine")
    sub, idx = subsample_problem(prob, 300)
    assert sub.N == idx.size == 300 and np.unique(idx).size == 300
    tau = prob.profiles.tau_cp
    assert idx[0] == np.argmin(tau) and idx[-1] == np.argmax(tau)  # both ends of the compute-time range
    ranks = np.argsort(np.argsort(tau))[idx]  # positions in tau_cp order: evenly spaced
    assert np.all(np.abs(np.diff(ranks) - 4999 / 299) <= 1)
    assert sub.p.sum() == pytest.approx(1.0) and np.allclose(sub.p, prob.p[idx] / prob.p[idx].sum())
    assert np.array_equal(sub.profiles.tau_0, prob.profiles.tau_0[idx])
    assert (sub.stability, sub.max_step_factor, sub.theta) == (prob.stability, prob.max_step_factor, prob.theta)
    assert np.array_equal(subsample_problem(prob, 300)[1], idx)  # deterministic, no random stream


def test_dual_price_satisfies_kkt_at_the_constrained_plan():
    # independent check: at the optimum of the constrained q-step, grad_y log J + lam grad_y X = 0 on the
    # free clients (y = log q); the least-squares price must leave a residual far below the gradient
    prob = stability_problem(500, 0, "constrain", "linear")
    plan = solve(prob)
    lam = _dual_price(prob, plan.q, plan.k)
    assert lam > 0
    fx = FixedK(prob, plan.k)
    x = fx.to_sorted(plan.q)
    free = (x > fx.lb * (1 + 1e-9)) & (x < 1 - 1e-9)
    h = 1e-6  # central differences of log J and of X along each free coordinate (no analytic gradient)
    idx = np.flatnonzero(free)[:: max(1, free.sum() // 25)]
    res, gnorm = [], []
    for i in idx:
        e = np.zeros_like(x)
        e[i] = x[i] * h  # d/dy_i = q_i d/dq_i
        dj = (np.log(fx.J(x + e)) - np.log(fx.J(x - e))) / (2 * h)
        dx = (fx.X(x + e) - fx.X(x - e)) / (2 * h)
        res.append(dj + lam * dx)
        gnorm.append(abs(dj))
    assert np.max(np.abs(res)) < 1e-3 * np.max(gnorm)
    # unconstrained problem: no price
    prob_none = stability_problem(500, 0, "none", "linear")
    plan_none = solve(prob_none)
    assert _dual_price(prob_none, plan_none.q, plan_none.k) == pytest.approx(0.0, abs=1e-3 * lam)


def _count_full_size_work(n, stability, monkeypatch):
    """Objective/gradient evaluations, k-step precomputes and best-response runs on all n clients."""
    counts = {"log_obj": 0, "k_precompute": 0, "best_response": 0}
    orig_obj, orig_pre, orig_br = FixedK.log_obj, kstep_mod._precompute, solve_mod.best_response_start

    def log_obj(self, x, with_diag=False):
        counts["log_obj"] += x.size == n
        return orig_obj(self, x, with_diag)

    def pre(prob, q, k):
        counts["k_precompute"] += prob.N == n
        return orig_pre(prob, q, k)

    def br(prob, **kw):
        counts["best_response"] += prob.N == n
        return orig_br(prob, **kw)

    monkeypatch.setattr(FixedK, "log_obj", log_obj)
    monkeypatch.setattr(kstep_mod, "_precompute", pre)
    monkeypatch.setattr(solve_mod, "best_response_start", br)
    prob = stability_problem(n, 3, stability, "linear")
    plan = solve(prob, multistart_max_n=2000, subsample_n=1000)
    monkeypatch.undo()
    assert prob.violations(plan.q, plan.k) == [] and "subsample" in plan.diagnostics
    return counts, plan


@pytest.mark.parametrize("stability", ["constrain", "scale_lr", "none"])
def test_large_n_path_work_per_client_does_not_grow(stability, monkeypatch):
    # each counted unit is O(N) numpy work (plus one O(N log N) sort): if their number does not grow
    # with N the solve is O(N log N), whatever the machine's speed. Measured: 24-32 evaluations under
    # constrain, 26-30 under scale_lr, 9-10 under none at N = 8,000 ... 512,000 (L-BFGS and dual-search
    # counts vary by instance); a count growing with N (e.g. O(N) evaluations) would be 4x here.
    c1, p1 = _count_full_size_work(8_000, stability, monkeypatch)
    c4, p4 = _count_full_size_work(32_000, stability, monkeypatch)
    assert c1["log_obj"] > 0
    for key in c1:
        assert c4[key] <= 1.5 * c1[key] + 2, (key, c1, c4)
    # and the mean-field limit holds: J moves by well under 1 % from 8,000 to 32,000 clients
    assert p4.objective == pytest.approx(p1.objective, rel=1e-2)
