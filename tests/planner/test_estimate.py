"""Estimation of theta (eqs. 22-23) from synthetic pilot observations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedsketch.planner.estimate import (
    EstimationError,
    PilotObservation,
    estimate_theta,
    run_pilots,
)
from fedsketch.planner.pilot_design import pilot_configs

R = 16
D1 = [(1.0, 16), (0.5, 16), (1.0, 4), (0.25, 8)]


def _rounds(theta, P, q, k):
    t1, t2, t3, t4 = theta
    return t4 / (t1 - t2 * P / q - t3 * P * R / (q * k))


@settings(max_examples=40, deadline=None)
@given(st.floats(0.5, 5.0), st.floats(0.0, 2.0), st.floats(0.05, 2.0), st.floats(1.0, 1e4), st.integers(0, 1000))
def test_recovers_theta_up_to_scale(t1, t2, t3, t4, seed):
    p = np.random.default_rng(seed).lognormal(0, 0.5, 50)
    P = np.sum((p / p.sum()) ** 2)
    theta = np.array([t1, t2, t3, t4])
    configs = [(1.0, 16), (0.5, 16), (1.0, 2), (0.25, 8), (0.5, 4)]
    # the synthetic truth itself must make every pilot reachable
    assume(min(t1 - t2 * P / q - t3 * P * R / (q * k) for q, k in configs) > 0.05 * t1)
    obs = run_pilots(lambda q, k: _rounds(theta, P, q, k), configs)
    est = estimate_theta(obs, p, R)
    assert est.ok, est.problems
    truth = theta / np.linalg.norm(theta)
    assert np.allclose(est.theta, truth, rtol=1e-6, atol=1e-9 * np.abs(truth).max())
    assert est.require().theta4 > 0


def test_integer_rounds_close():
    p = np.random.default_rng(0).lognormal(0, 0.5, 50)
    P = np.sum((p / p.sum()) ** 2)
    theta = (1.0, 0.5, 0.5, 100.0)
    obs = [PilotObservation(q, k, round(_rounds(theta, P, q, k))) for q, k in D1]
    est = estimate_theta(obs, p, R)
    assert est.ok
    th = est.theta / est.theta[0]
    assert th[3] == pytest.approx(100.0, rel=0.05)


def test_flags_ill_conditioned_design():
    # every pilot with the same k/r: the X and Y columns are collinear, theta is not identified
    p = np.ones(50)
    P = 1 / 50
    theta = (1.0, 0.5, 0.5, 100.0)
    obs = [PilotObservation(q, 16, _rounds(theta, P, q, 16)) for q in (1.0, 0.8, 0.5, 0.25)]
    est = estimate_theta(obs, p, R)
    assert not est.ok
    assert any("ill-conditioned" in m for m in est.problems)
    with pytest.raises(EstimationError, match="ill-conditioned"):
        est.require()


def test_flags_sign_violation():
    # rounds that *fall* as q and k shrink imply negative theta2/theta3
    p = np.ones(50)
    obs = [PilotObservation(q, k, r) for (q, k), r in zip(D1, (40.0, 30.0, 25.0, 10.0))]
    est = estimate_theta(obs, p, R)
    assert not est.ok
    assert any("sign violation" in m for m in est.problems)
    with pytest.raises(EstimationError, match="sign violation"):
        est.require()


def test_pilot_errors():
    with pytest.raises(EstimationError, match="at least 4"):
        pilot_configs([1.0, 0.5, 0.25], [1.0, 1.0, 0.5], R)
    with pytest.raises(EstimationError, match="pair up"):
        pilot_configs([1.0, 0.5, 0.25, 1.0], [1.0, 1.0, 0.5], R)
    assert pilot_configs([1.0, 0.5, 1.0, 0.25], [1.0, 1.0, 0.25, 0.5], R) == [(1.0, 16), (0.5, 16), (1.0, 4), (0.25, 8)]
    with pytest.raises(EstimationError, match=r"q=0.25, k=8\) never reached"):
        run_pilots(lambda q, k: None if q < 0.3 else 10, D1)
    with pytest.raises(EstimationError, match="at least 4"):
        estimate_theta([PilotObservation(1.0, 16, 10.0)] * 3, np.ones(5), R)


# the six real pilots of results/theta-default-v2.json (r = 8) and the default partition's sizes
REAL_P = np.array([283, 27, 44, 571, 139, 154, 566, 26, 190, 251], dtype=float)
REAL_OBS = [PilotObservation(q, k, n) for q, k, n in
            [(1.0, 8, 5), (0.5, 8, 6), (1.0, 2, 7), (0.25, 4, 6), (0.5, 2, 7), (1.0, 4, 5)]]


def _misfit(A, theta):
    scale = np.linalg.norm(A, axis=0)
    v = theta * scale
    return np.linalg.norm((A / scale) @ (v / np.linalg.norm(v)))


def test_sign_constrained_fit_pins_theta2_and_is_the_best_such_fit():
    from fedsketch.planner.estimate import design_matrix

    flagged = estimate_theta(REAL_OBS, REAL_P, 8)
    assert not flagged.ok and flagged.theta[1] < 0 and "theta2" in flagged.problems[0]
    est = estimate_theta(REAL_OBS, REAL_P, 8, signs="constrain")
    assert est.ok and est.pinned == ["theta2"] and est.theta[1] == 0.0
    assert est.theta[0] > 0 and est.theta[2] > 0 and est.theta[3] > 0
    assert np.allclose(est.unconstrained, flagged.theta)
    assert est.residual >= est.unconstrained_residual  # the constraint can only cost misfit
    # no sign-valid unit vector with theta2 = 0 fits better (random search over the feasible set)
    A = design_matrix(REAL_OBS, REAL_P, 8)
    rng = np.random.default_rng(0)
    best = _misfit(A, est.theta)
    for _ in range(20000):
        cand = np.abs(rng.normal(size=4)) * est.theta.clip(1e-3) ** rng.uniform(0, 1)
        cand[1] = 0.0
        assert _misfit(A, cand) >= best - 1e-12
    d = est.to_dict()
    assert d["pinned_to_zero"] == ["theta2"] and d["ok"] and d["unconstrained_theta"][1] < 0


def test_constrain_leaves_a_valid_estimate_alone_and_flags_no_effect_at_all():
    theta = np.array([1.0, 0.5, 0.5, 100.0])
    P = float(np.sum((REAL_P / REAL_P.sum()) ** 2))
    obs = [PilotObservation(q, k, _rounds(theta, P, q, k * 2)) for q, k in
           [(1.0, 8), (0.5, 8), (1.0, 2), (0.25, 4), (0.5, 2)]]  # _rounds uses R = 16, so pass 2k
    a = estimate_theta(obs, REAL_P, 8)
    b = estimate_theta(obs, REAL_P, 8, signs="constrain")
    assert a.ok and b.ok and not b.pinned and np.allclose(a.theta, b.theta)
    # fewer rounds at smaller q and k: no sign-valid fit exists even with a constant pinned
    bad = [PilotObservation(q, k, 10.0 * q * k) for q, k in [(1.0, 8), (0.5, 8), (1.0, 2), (0.25, 4), (0.5, 2)]]
    c = estimate_theta(bad, REAL_P, 8, signs="constrain")
    assert not c.ok and any("sign" in m for m in c.problems)
    with pytest.raises(EstimationError, match="estimate_signs.*check, constrain"):
        estimate_theta(obs, REAL_P, 8, signs="clip")


def test_load_pilots_reads_an_estimate_and_names_bad_rows(tmp_path):
    import json

    from fedsketch.planner.estimate import load_pilots
    from fedsketch.config.readers import ReadError

    f = tmp_path / "t.json"
    f.write_text(json.dumps(estimate_theta(REAL_OBS, REAL_P, 8).to_dict()))
    assert load_pilots(f) == REAL_OBS
    f.write_text(json.dumps({"pilots": [{"q": 1.0, "k": 8, "rounds": 5}, {"q": 2.0, "k": 8, "rounds": 5}]}))
    with pytest.raises(ReadError, match=r"t.json: pilots\[1\]\.q: got 2.0; allowed a number in \(0, 1\]"):
        load_pilots(f)
    with pytest.raises(ReadError, match="not found"):
        load_pilots(tmp_path / "missing.json")


def test_constrain_keeps_an_unreachable_target_flagged():
    # pilots whose unconstrained fit has theta1 < 0: no pinning may hide that
    obs = [PilotObservation(q, k, n) for (q, k), n in
           zip([(1.0, 8), (0.5, 8), (1.0, 2), (0.25, 4), (0.5, 2)], [11.0, 8.0, 11.0, 2.0, 6.0])]
    assert estimate_theta(obs, REAL_P, 8).theta[0] < 0
    est = estimate_theta(obs, REAL_P, 8, signs="constrain")
    assert not est.ok and not est.pinned and any("theta1" in m for m in est.problems)
