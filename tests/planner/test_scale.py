"""Internet-scale planner (issue 13 point 4): the rewritten solver against the recorded oracle.

``tests/planner/data/solver_oracle.json`` holds the J of the solver as it was before the rewrite
(commit 5894788; written by ``scripts/planner_oracle.py``) on fixed synthetic instances. The
rewrite (O(N) eq. 15 gradient, preconditioned q-step, best-response start) must never be worse
than that by more than 0.1 % (issue 13), for the whole Algorithm 2, the q-step at k = r and one
k-step from that q. Timings live in ``bench/planner.py``, not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from planner_helpers import synthetic_problem

from fedsketch.network.round_time import _emax_and_grad_sorted, _suffix_survival
from fedsketch.planner.kstep import k_step
from fedsketch.planner.meanfield import best_response_start
from fedsketch.planner.qstep_fast import q_step_fast
from fedsketch.planner.solve import solve

ORACLE = json.loads((Path(__file__).parent / "data" / "solver_oracle.json").read_text())
CASES = [c for c in ORACLE["cases"] if c["N"] <= 500] + [
    next(c for c in ORACLE["cases"] if c["N"] == 5000 and c["compute_model"] == "affine")]


def _prob(c):
    return synthetic_problem(c["N"], c["seed"], feasibility=c["feasibility"], compute_model=c["compute_model"],
                             base_fraction=0.3)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"N{c['N']}-s{c['seed']}-{c['feasibility']}-{c['compute_model']}")
def test_not_worse_than_recorded_solver(case):
    prob = _prob(case)
    k = np.full(prob.N, prob.r)
    qs = q_step_fast(prob, k)
    assert qs.objective <= case["J_qstep_full_rank"] * (1 + 1e-3)
    assert k_step(prob, qs.q, k).objective <= case["J_kstep_from_qstep"] * (1 + 1e-3)
    plan = solve(prob)
    assert prob.violations(plan.q, plan.k) == []
    assert plan.objective == pytest.approx(prob.objective(plan.q, plan.k), rel=1e-12)
    assert plan.objective <= case["J_solve"] * (1 + 1e-3)


@pytest.mark.parametrize("case", CASES[:6], ids=lambda c: f"N{c['N']}-s{c['seed']}-{c['feasibility']}")
def test_best_response_start_alone_reaches_the_recorded_plan(case):
    # the large-N path (N > multistart_max_n) keeps only this start: check it is enough here
    prob = _prob(case)
    plan = solve(prob, multistart_max_n=0)
    assert list(plan.diagnostics["starts"]) == ["best_response"]
    assert plan.objective <= case["J_solve"] * (1 + 1e-3)
    q, k, info = best_response_start(prob)
    assert prob.violations(q, k) == [] and info["history"] == sorted(info["history"], reverse=True)


def _grad_by_definition(qs, ts):
    """dE/dq_m = P_m (t_m - S_m) with S_m summed term by term (O(N^2))."""
    n = qs.size
    g = np.zeros(n)
    for m in range(n):
        S = sum(qs[j] * ts[j] * np.prod(1 - qs[j + 1:m]) for j in range(m))
        g[m] = np.prod(1 - qs[m + 1:]) * (ts[m] - S)
    return g


@pytest.mark.parametrize("seed", range(40))
def test_eq15_gradient_matches_the_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    qs, ts = rng.uniform(0, 1, n), np.sort(rng.uniform(0, 10, n))
    if seed % 3 == 0:
        qs[rng.random(n) < 0.3] = 1.0  # q = 1 clients reset the recurrence
    if seed % 4 == 0:
        qs[rng.random(n) < 0.5] = rng.choice([1e-300, 1 - 1e-12, 0.9999])
    val, g = _emax_and_grad_sorted(qs, ts)
    assert np.allclose(g, _grad_by_definition(qs, ts), rtol=1e-9, atol=1e-12)
    assert val == pytest.approx(sum(qs[m] * ts[m] * np.prod(1 - qs[m + 1:]) for m in range(n)), rel=1e-12, abs=1e-300)


def test_survival_flushes_instead_of_sticking_at_the_smallest_subnormal():
    # cumprod of 0.95s reaches 5e-324 and stays there (0.95 * 5e-324 rounds back); that made every
    # client "live" and eq. 15's gradient O(N^2) at large N
    P = _suffix_survival(np.full(20_000, 0.05))
    assert P[0] == 0.0 and P[-1] == 1.0 and P[-2] == pytest.approx(0.95)
    assert np.all(np.diff(P) >= 0)
    n_live = np.count_nonzero(P)
    assert n_live == pytest.approx(690 / -np.log(0.95), abs=2)
    q = np.full(60_000, 0.05)
    g = _emax_and_grad_sorted(q, np.linspace(1, 2, q.size))[1]
    assert np.all(g[: q.size - n_live - 1] == 0) and np.all(g[-n_live:] > 0)
