"""P2 model, q-step, k-step and the alternating solver (Algorithm 2)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from planner_helpers import THETA, synthetic_problem
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsketch.network import ClientProfiles
from fedsketch.planner.bound import PlanProblem, Theta
from fedsketch.planner.kstep import k_step, move_gains
from fedsketch.planner.qstep_fast import q_step_fast
from fedsketch.planner.qstep_problem import SolverError
from fedsketch.planner.qstep_reference import q_step_reference
from fedsketch.planner.solve import make_plan, solve


def test_model_pieces_match_definitions():
    prob = synthetic_problem(7, 1)
    rng = np.random.default_rng(0)
    q, k = rng.uniform(0.5, 1, 7), rng.integers(1, 17, 7)
    p, r = prob.p, prob.r
    X = np.sum(p**2 / q)
    Y = np.sum(p**2 * r / (k * q))
    assert prob.X(q) == pytest.approx(X) and prob.Y(q, k) == pytest.approx(Y)
    D = THETA.theta1 - THETA.theta2 * X - THETA.theta3 * Y
    assert prob.D(q, k) == pytest.approx(D)
    assert prob.rounds(q, k) == pytest.approx(THETA.theta4 / D)
    t_cp, t_cm = k / r * prob.profiles.tau_cp, k / r * prob.profiles.tau_cm
    from fedsketch.network import expected_round_time

    bound = expected_round_time(q, t_cp, t_cm, prob.W, method="bound").value
    assert prob.round_time(q, k) == pytest.approx(bound)
    assert prob.objective(q, k) == pytest.approx(THETA.theta4 / D * bound)
    # scale invariance of theta (§2.8): J scales, argmin and q_min do not
    prob2 = PlanProblem(prob.profiles, prob.p, r, prob.W, Theta(*(3.7 * THETA.as_array())))
    assert np.allclose(prob2.q_min(k), prob.q_min(k))


@pytest.mark.parametrize("model", ["linear", "affine"])
@pytest.mark.parametrize("feas", ["per_client", "p_weighted", "exact"])
def test_single_move_gains_are_exact(model, feas):
    prob = synthetic_problem(25, 2, r=8, feasibility=feas, compute_model=model, base_fraction=0.4,
                             theta=Theta(4.0, 0.5, 0.5, 100.0))
    rng = np.random.default_rng(1)
    q = rng.uniform(0.6, 1, 25)
    q[::4] = 1.0
    k = rng.integers(3, 9, 25)
    for step in (-1, 1):
        J2, k2 = move_gains(prob, q, k, step)
        for n in range(25):
            if np.isfinite(J2[n]):
                kk = k.copy()
                kk[n] = k2[n]
                assert J2[n] == pytest.approx(prob.objective(q, kk), rel=1e-10)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 30), st.sampled_from(["per_client", "p_weighted", "exact"]),
       st.sampled_from(["linear", "affine"]), st.sampled_from(["decrease", "both"]))
def test_plan_feasible_and_not_worse_than_baselines(seed, n, feas, model, moves):
    prob = synthetic_problem(n, seed, r=8, feasibility=feas, compute_model=model, base_fraction=0.3,
                             theta=Theta(2.0, 0.5, 0.5, 100.0))
    plan, bls = make_plan(prob, np.random.default_rng(seed), k_moves=moves)
    assert prob.violations(plan.q, plan.k) == []
    assert np.all((plan.k >= 1) & (plan.k <= prob.r)) and np.all((plan.q > 0) & (plan.q <= 1))
    assert plan.objective == pytest.approx(prob.objective(plan.q, plan.k), rel=1e-12)
    assert plan.total_time == pytest.approx(plan.rounds * plan.round_time, rel=1e-12)
    names = {b.name for b in bls}
    assert names == {"full", "fixed", "uniform", "weighted", "full_rank", "normal_rank", "uniform_rank"}
    for b in bls:
        if b.feasible:
            assert plan.objective <= b.total_time * (1 + 1e-9), b.name
    uni = next(b for b in bls if b.name == "uniform")
    assert uni.q.sum() == pytest.approx(plan.q.sum())
    w = next(b for b in bls if b.name == "weighted")
    assert w.q.max() <= 1 + 1e-12 and w.q.sum() == pytest.approx(plan.q.sum())


def _grid_J(prob: PlanProblem, k: np.ndarray, pts: int) -> tuple[float, np.ndarray]:
    """Exact J of N = 3 on a pts^3 grid of q over the Appendix C box."""
    lb = prob.q_lower(k)
    if np.any(lb > 1):
        return np.inf, None
    axes = [np.unique(np.concatenate((np.geomspace(lb[i], 1.0, pts), [1.0]))) for i in range(3)]
    Q = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # (G, 3)
    t_cp, t_cm = prob.times(k)
    o = np.argsort(t_cp)
    qs, ts = Q[:, o], t_cp[o]
    E = qs[:, 2] * ts[2] + qs[:, 1] * (1 - qs[:, 2]) * ts[1] + qs[:, 0] * (1 - qs[:, 1]) * (1 - qs[:, 2]) * ts[0]
    T = E + Q @ t_cm / prob.W
    D = prob.theta.theta1 - (prob.c(k)[None, :] / Q).sum(1)
    ok = D >= max(prob.delta, 1e-300)
    J = np.where(ok, prob.theta.theta4 / np.where(ok, D, 1) * T, np.inf)
    i = int(np.argmin(J))
    return float(J[i]), Q[i]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("feas", ["per_client", "exact"])
def test_brute_force_tiny_instance(seed, feas):
    prob = synthetic_problem(3, seed, r=4, feasibility=feas, theta=Theta(1.0, 0.2, 0.2, 100.0))
    best = np.inf
    for k in itertools.product(range(1, 5), repeat=3):
        k = np.array(k)
        Jg, qg = _grid_J(prob, k, 40)
        if qg is None:
            continue
        best = min(best, Jg, q_step_fast(prob, k, qg).objective)
    plan = solve(prob)
    assert plan.objective >= best * (1 - 1e-6)
    assert plan.objective <= best * 1.02


@pytest.mark.parametrize("feas", ["per_client", "p_weighted", "exact"])
def test_fast_q_step_matches_reference(feas):
    prob = synthetic_problem(20, 3, feasibility=feas, theta=Theta(2.0, 0.5, 0.5, 100.0))
    k = prob.feasible_k_start(np.random.default_rng(0).integers(6, 17, 20))
    ref = q_step_reference(prob, k)
    fast = q_step_fast(prob, k)
    scipy = q_step_fast(prob, k, backend="scipy")
    assert abs(fast.objective - ref.objective) <= 0.005 * ref.objective
    assert fast.objective <= ref.objective * (1 + 1e-6)
    assert scipy.objective == pytest.approx(fast.objective, rel=1e-6)
    assert ref.info["candidates"] > 30


def test_reference_solver_failure_reports_status():
    prob = synthetic_problem(5, 0)
    with pytest.raises(SolverError, match="solver status") as e:
        q_step_reference(prob, np.full(5, 16), solvers=("OSQP",), grid_points=3, golden_steps=2)
    assert "OSQP" in e.value.status


def test_reference_alternating_matches_fast():
    prob = synthetic_problem(8, 4, feasibility="exact")
    fast = solve(prob)
    ref = solve(prob, q_solver="reference", q_kwargs={"grid_points": 12, "golden_steps": 10})
    assert ref.objective == pytest.approx(fast.objective, rel=0.01)


def test_k_step_never_increases_and_respects_bounds():
    prob = synthetic_problem(30, 5, r=16, feasibility="per_client")
    q = q_step_fast(prob, np.full(30, 16)).q
    res = k_step(prob, q, np.full(30, 16), moves="decrease")
    assert res.objective <= prob.objective(q, np.full(30, 16))
    assert np.all(res.k >= 1) and np.all(res.k <= 16)
    assert prob.violations(q, res.k) == []


def _skewed(n=50):
    # max_n N p_n^2 = 1.5 (the upper range of a Dirichlet(0.1) split, spec §2.7)
    big = np.sqrt(1.5 / n)
    rest = np.random.default_rng(0).dirichlet(np.full(n - 1, 0.5)) * (1 - big)
    p = np.concatenate(([big], rest))
    p = np.roll(p, 7)  # the big client is client 7
    assert max(n * p**2) == pytest.approx(1.5)
    return p


def test_skewed_split_default_feasible_and_per_client_names_client():
    n = 50
    rng = np.random.default_rng(1)
    prof = ClientProfiles(rng.uniform(2, 20, n), rng.uniform(20, 400, n), np.zeros(n))
    p = _skewed(n)
    from fedsketch.config import PlannerConfig

    default = PlannerConfig().feasibility
    prob = PlanProblem(prof, p, 16, 100.0, THETA, feasibility=default)
    plan = solve(prob)
    assert prob.violations(plan.q, plan.k) == []
    bad = PlanProblem(prof, p, 16, 100.0, THETA, feasibility="per_client")
    with pytest.raises(ValueError, match=r"client 7: .*per_client"):
        solve(bad)


def test_bad_inputs_raise_with_client_and_constraint():
    n = 4
    prof = ClientProfiles(np.ones(n), np.ones(n), np.zeros(n))
    with pytest.raises(ValueError, match="bandwidth W"):
        PlanProblem(prof, np.ones(n), 4, 0.0, THETA)
    with pytest.raises(ValueError, match="target never reachable"):
        Theta(0.0, 0.5, 0.5, 1.0)
    with pytest.raises(ValueError, match="target never reachable"):  # D <= 0 even at q = 1, k = r
        PlanProblem(prof, np.ones(n), 4, 10.0, Theta(1.0, 4.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="tau_cp must be > 0; client 2"):
        ClientProfiles(np.array([1.0, 1.0, 0.0, 1.0]), np.ones(n), np.zeros(n))
    prob = PlanProblem(prof, np.ones(n), 4, 10.0, THETA)
    with pytest.raises(ValueError, match=r"k_n must be an integer in \[1, r=4\]; client 3"):
        prob.check_k([1, 2, 3, 5])
    with pytest.raises(ValueError, match="client 0"):
        k_step(prob, np.ones(n), np.array([0, 1, 1, 1]))
    with pytest.raises(ValueError, match="data weight p_n must be > 0; client 1"):
        PlanProblem(prof, np.array([1.0, 0.0, 1.0, 1.0]), 4, 10.0, THETA)
    # a client whose Appendix C bound exceeds 1 is named, with the constraint
    skew = PlanProblem(prof, np.array([0.05, 0.05, 0.85, 0.05]), 4, 10.0, Theta(4.0, 1.0, 1.0, 1.0),
                       feasibility="per_client")
    with pytest.raises(ValueError, match=r"client 2: the Appendix C constraint \(per_client"):
        solve(skew)
    exact = PlanProblem(prof, np.array([0.05, 0.05, 0.85, 0.05]), 4, 10.0, Theta(4.0, 1.0, 1.0, 1.0))
    assert exact.violations(*(lambda pl: (pl.q, pl.k))(solve(exact))) == []


def test_k_min_bounds_every_planned_rank():
    import dataclasses

    from fedsketch.planner.bound import Theta
    from fedsketch.planner.kstep import k_step
    from fedsketch.planner.solve import make_plan
    from planner_helpers import synthetic_problem

    # a sketch term so cheap that the unconstrained plan uses k = 1 somewhere
    prob = synthetic_problem(20, 3, r=8, theta=Theta(1.0, 0.05, 0.001, 100.0))
    q = np.full(prob.N, 0.5)
    free = k_step(prob, q, np.full(prob.N, 8, dtype=np.int64)).k
    assert free.min() == 1
    bounded = dataclasses.replace(prob, k_min=3)
    k = k_step(bounded, q, np.full(prob.N, 8, dtype=np.int64)).k
    assert k.min() == 3 and not bounded.violations(q, k)
    # the free plan's k = 1 lies below the floor: violations names each such client (prob itself accepts it)
    low = np.flatnonzero(free < 3)
    msgs = bounded.violations(q, free)
    assert [m for m in msgs if "planner.k_min=3" in m] == [
        f"client {n}: k_n={free[n]} < planner.k_min=3 (the rank floor: the pilots' region)" for n in low[:10]]
    assert not [m for m in prob.violations(q, free) if "k_min" in m]
    plan = make_plan(bounded, np.random.default_rng(0))[0]
    assert plan.k.min() >= 3
    with pytest.raises(ValueError, match="k_min must be an integer in \\[1, r=8\\]"):
        dataclasses.replace(prob, k_min=9)
