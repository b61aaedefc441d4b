"""Stability-aware P2 (PAPER.md §8): constrain / scale_lr / none, and the one rounds model.

Oracles: the definitions of §8 written out by hand here (Omega, kappa_max, s, R), brute force on
a q-grid for N = 3, and finite differences for the q-step's gradient.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from planner_helpers import synthetic_problem

from fedsketch.planner.bound import PlanProblem, Theta
from fedsketch.planner.kstep import k_step, move_gains
from fedsketch.planner.qstep_fast import q_step_fast
from fedsketch.planner.qstep_problem import FixedK
from fedsketch.planner.solve import make_plan, solve

MODES = ("none", "constrain", "scale_lr")


def _by_hand(prob: PlanProblem, q, k, phi_max):
    """Omega, kappa_max, Phi, s and R of §8 / eq. 21 from their definitions."""
    p, r, th = prob.p, prob.r, prob.theta
    omega = np.sum(p * (1 - p) + p**2 / q)
    kmax = max(r / kn for kn in k)
    phi = kmax * omega
    s = min(1.0, phi_max / phi) if prob.stability == "scale_lr" else 1.0
    X, Y = np.sum(p**2 / q), np.sum(p**2 * r / (k * q))
    den = th.theta1 - s * (th.theta2 * X + th.theta3 * Y)
    R = (th.theta4 / s) / den if den > 0 else np.inf
    return phi, s, R


@pytest.mark.parametrize("mode", MODES)
def test_one_rounds_model_and_the_fast_forms_agree_with_it(mode):
    prob = replace(synthetic_problem(20, 3, r=8, theta=Theta(4.0, 0.5, 0.5, 100.0), compute_model="affine",
                                     base_fraction=0.3), stability=mode, max_step_factor=2.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        q, k = rng.uniform(0.2, 1, 20), rng.integers(2, 9, 20)
        q[::5] = 1.0
        phi, s, R = _by_hand(prob, q, k, 2.0)
        assert prob.step_factor(q, k) == pytest.approx(phi) and prob.lr_scale(q, k) == pytest.approx(s)
        assert prob.rounds(q, k) == pytest.approx(R, rel=1e-12)
        J = prob.objective(q, k)
        assert J == pytest.approx(R * prob.round_time(q, k), rel=1e-12)
        # q-step's form (sorted, cached) and k-step's all-moves form against the one objective
        if mode != "constrain" or prob.violations(q, k) == []:
            fx = FixedK(prob, k)
            assert fx.J(fx.to_sorted(q)) == pytest.approx(J, rel=1e-11)
        for step in (-1, 1):
            J2, k2 = move_gains(prob, q, k, step)
            for n in range(20):
                if np.isfinite(J2[n]):
                    kk = k.copy()
                    kk[n] = k2[n]
                    assert J2[n] == pytest.approx(prob.objective(q, kk), rel=1e-10), (mode, step, n)


@pytest.mark.parametrize("mode", ["scale_lr", "constrain"])
def test_q_step_gradient_matches_finite_differences(mode):
    prob = replace(synthetic_problem(12, 1, r=8, theta=Theta(4.0, 0.5, 0.5, 100.0)), stability=mode,
                   max_step_factor=1.5)
    k = np.full(12, 8)
    if mode == "scale_lr":
        k[3] = 2  # kappa_max = 4: Phi > Phi_max, so s < 1
    fx = FixedK(prob, k)
    fx.lam = 0.7 if mode == "constrain" else 0.0  # the Lagrangian term of the constrained q-step
    x = np.random.default_rng(2).uniform(0.2, 0.9, 12)
    if mode == "scale_lr":
        assert fx.s(x) < 1  # the branch with s < 1
    f, g = fx.log_obj(x)
    for m in range(12):
        e = np.zeros(12)
        e[m] = 1e-6
        fd = (fx.log_obj(x + e)[0] - fx.log_obj(x - e)[0]) / 2e-6
        assert g[m] == pytest.approx(fd, rel=1e-5, abs=1e-8)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 25), st.sampled_from(["per_client", "p_weighted", "exact"]),
       st.sampled_from(["linear", "affine"]), st.floats(1.0, 4.0), st.sampled_from([4, 8, 16]),
       st.sampled_from(["decrease", "both"]))
def test_every_constrained_plan_respects_phi_max(seed, n, feas, model, phi_max, r, moves):
    prob = replace(synthetic_problem(n, seed, r=r, feasibility=feas, compute_model=model, base_fraction=0.3,
                                     theta=Theta(2.0, 0.5, 0.5, 100.0)), stability="constrain",
                   max_step_factor=phi_max)
    assume(prob.sum_p1mp + np.sum(prob.p**2) <= phi_max)  # Omega(1) = 1 <= phi_max up to round-off
    plan, bls = make_plan(prob, np.random.default_rng(seed), k_moves=moves)
    phi = _by_hand(prob, plan.q, plan.k, phi_max)[0]
    assert phi <= phi_max * (1 + 1e-9)
    assert prob.violations(plan.q, plan.k) == []
    assert plan.k.min() >= np.ceil(r / phi_max - 1e-9)
    assert plan.stability["step_factor"] == pytest.approx(phi) and plan.stability["lr_scale"] == 1.0
    for b in bls:  # a baseline counts as feasible only when it is stable too
        if b.feasible:
            assert _by_hand(prob, b.q, b.k, phi_max)[0] <= phi_max * (1 + 1e-9)
            assert plan.objective <= b.total_time * (1 + 1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 25), st.floats(1.0, 4.0), st.sampled_from([4, 8, 16]))
def test_scale_lr_plans_have_s_at_most_one(seed, n, phi_max, r):
    prob = replace(synthetic_problem(n, seed, r=r, base_fraction=0.3, theta=Theta(2.0, 0.5, 0.5, 100.0)),
                   stability="scale_lr", max_step_factor=phi_max)
    plan = solve(prob)
    phi, s, R = _by_hand(prob, plan.q, plan.k, phi_max)
    assert 0 < plan.stability["lr_scale"] <= 1.0
    assert plan.stability["lr_scale"] == pytest.approx(s) and s * phi <= phi_max * (1 + 1e-12)
    assert plan.stability["binding"] == (s < 1.0)
    assert plan.rounds == pytest.approx(R, rel=1e-12)
    assert prob.violations(plan.q, plan.k) == []


def _grid_best(prob: PlanProblem, pts: int = 30) -> float:
    """Exact J minimised over a q-grid and all k in {1..r}^3 (N = 3), feasible points only."""
    best = np.inf
    for k in itertools.product(range(1, prob.r + 1), repeat=3):
        k = np.array(k)
        lb = prob.q_lower(k)
        if np.any(lb > 1):
            continue
        axes = [np.unique(np.concatenate((np.geomspace(lb[i], 1.0, pts), [1.0]))) for i in range(3)]
        for q in itertools.product(*axes):
            q = np.array(q)
            if not prob.violations(q, k):
                best = min(best, prob.objective(q, k))
    return best


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode,phi_max", [("constrain", 1.2), ("constrain", 2.5), ("scale_lr", 1.3)])
def test_tiny_instance_against_brute_force(seed, mode, phi_max):
    prob = replace(synthetic_problem(3, seed, r=4, theta=Theta(1.0, 0.2, 0.2, 100.0)), stability=mode,
                   max_step_factor=phi_max)
    best = _grid_best(prob, 9)
    plan = solve(prob)
    assert prob.violations(plan.q, plan.k) == []
    # the grid is coarse: the solver must not lose to it (under scale_lr that needs §8.2's 1-D scan
    # over s: the local q-step alone ended 0.9 % and 5.6 % above the grid on seeds 0 and 1)
    assert plan.objective <= best * (1 + 1e-6)


def test_constrain_binds_and_costs_time_against_the_paper():
    base = synthetic_problem(50, 0)
    free = solve(base)
    assert base.step_factor(free.q, free.k) > 1.3  # the paper's plan breaks Theorem 1's condition
    prob = replace(base, stability="constrain", max_step_factor=1.3)
    plan = solve(prob)
    assert plan.stability["binding"] and plan.stability["step_factor"] == pytest.approx(1.3, rel=1e-6)
    assert plan.objective > free.objective  # a tighter feasible set never predicts a faster plan
    d = plan.to_dict()
    assert d["step_factor"] == pytest.approx(plan.stability["step_factor"]) and d["stability_binding"] is True


def test_constrain_refuses_ranks_that_cannot_be_stable():
    prob = replace(synthetic_problem(5, 0, r=16), stability="constrain", max_step_factor=1.3)
    with pytest.raises(ValueError, match="max_step_factor"):
        q_step_fast(prob, np.full(5, 8))  # kappa_max = 2 > 1.3 for every q
    assert prob.k_stable == 13
    with pytest.raises(ValueError, match="max_step_factor must be a number >= 1"):
        replace(prob, max_step_factor=0.9)


def test_k_step_keeps_the_constraint():
    prob = replace(synthetic_problem(30, 5, r=16), stability="constrain", max_step_factor=1.6)
    k = np.full(30, 16)
    q = q_step_fast(prob, k).q
    res = k_step(prob, q, k)
    assert prob.step_factor(q, res.k) <= 1.6 * (1 + 1e-12)
    assert res.k.min() < 16  # it did move, inside the constraint
