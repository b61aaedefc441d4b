"""PAPER.md §8.4 refinement: a verification pilot's row of eq. 22 uses the plan's own per-client
q_n and k_n and the data weights p_n = |D_n| / |D| (not the mean q, k of a heterogeneous plan, not raw
sizes). Oracle: noise-free pilots from known constants; every correct row is consistent with them, so
the refit returns the true theta exactly, and the row's X, Y equal the sums computed here."""

from __future__ import annotations

import numpy as np

from fedsketch.planner.bound import Theta
from fedsketch.planner.estimate import PilotObservation
from fedsketch.planner.refine import refine

TRUE = np.array([1.0, 0.4, 0.6, 50.0])
R = 16
SIZES = np.random.default_rng(5).integers(40, 4000, 20).astype(float)  # raw |D_n|, not normalised
PW = SIZES / SIZES.sum()
P = float(np.sum(PW**2))


def _rounds(X, Y):
    return TRUE[3] / (TRUE[0] - TRUE[1] * X - TRUE[2] * Y)


def _pilots():
    return [PilotObservation(q, k, _rounds(P / q, P * R / (q * k)), (1.0,) * 3)
            for q, k in [(1.0, 16), (0.4, 16), (1.0, 12), (0.4, 12), (0.7, 8)]]


# a heterogeneous plan: q_n and k_n vary across clients (mean q, mean k would give other X, Y)
Q = np.linspace(0.15, 1.0, SIZES.size)
K = np.array([16, 12, 8, 4] * 5)


def _refine(max_iter=2):
    def plan_fn(theta, rows):
        return Q, K, 0.5 * _rounds(np.sum(PW**2 / Q), np.sum(PW**2 * R / (K * Q)))  # predictions off by 2x

    def verify_fn(q, k):
        assert np.array_equal(q, Q) and np.array_equal(k, K)  # the pilot runs the plan itself
        return _rounds(np.sum(PW**2 / q), np.sum(PW**2 * R / (k * q)))

    return refine(_pilots(), SIZES, R, plan_fn, verify_fn, max_iter=max_iter, tol=0.0)


def test_verification_rows_use_per_client_q_k_and_normalised_weights():
    est, steps = _refine()
    assert len(steps) == 2
    rows = [o for o in est.observations if o.X is not None]
    assert len(rows) == 2
    X, Y = np.sum(PW**2 / Q), np.sum(PW**2 * R / (K * Q))  # independent: p_n = |D_n| / |D|
    for o in rows:
        assert np.isclose(o.X, X, rtol=1e-12) and np.isclose(o.Y, Y, rtol=1e-12)
        assert not np.isclose(o.X, P / np.mean(Q), rtol=1e-3)  # the mean-q row would differ
    # every row is consistent with the truth: the refit is exact
    assert est.ok and np.allclose(est.theta, TRUE / np.linalg.norm(TRUE), rtol=1e-8)
    assert est.residual < 1e-10


def test_the_refit_with_the_verification_rows_predicts_the_plan():
    est, _ = _refine(max_iter=1)
    th = Theta.from_sequence(est.theta)
    X, Y = np.sum(PW**2 / Q), np.sum(PW**2 * R / (K * Q))
    pred = th.theta4 / (th.theta1 - th.theta2 * X - th.theta3 * Y)
    assert np.isclose(pred, _rounds(X, Y), rtol=1e-8)
