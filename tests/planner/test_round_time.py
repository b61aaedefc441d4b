"""Round-time model: eq. 10 split, eq. 15, Theorem 2 bound, MC and enumeration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsketch.network import allocate_bandwidth, expected_round_time
from fedsketch.network.bandwidth import equal_finish_time, round_times
from fedsketch.network.round_time import (
    _emax_and_grad_sorted,
    expected_bandwidth_time,
    expected_max_compute,
    theorem2_bound,
)

times = st.floats(0.0, 50.0, allow_nan=False)
payloads = st.floats(0.1, 500.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(times, payloads), min_size=1, max_size=30), st.floats(0.5, 1000.0))
def test_bandwidth_split_uses_W_and_equalises_finish(clients, W):
    t_cp = np.array([c[0] for c in clients])
    t_cm = np.array([c[1] for c in clients])
    T, b = allocate_bandwidth(t_cp, t_cm, W)
    assert np.all(b > 0)
    assert b.sum() == pytest.approx(W, rel=1e-12)
    finish = t_cp + t_cm / b
    assert np.allclose(finish, T, rtol=1e-9, atol=1e-9)
    # the vectorised root used by MC agrees
    assert round_times(np.ones((1, t_cp.size), bool), t_cp, t_cm, W)[0] == pytest.approx(T, rel=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_batched_root_agrees_with_the_scalar_root(seed):
    """Eq. 10 has two solvers in network/bandwidth.py: Brent per participant set and Newton over many masks."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25))
    t_cp = rng.uniform(0.0, 30.0, n) if seed % 3 else np.full(n, 4.0)  # equal compute: the closed form
    t_cm, W = rng.uniform(0.1, 500.0, n), float(rng.uniform(0.5, 1000.0))
    masks = rng.random((200, n)) < rng.uniform(0.05, 0.95)
    masks[0] = False
    batched = round_times(masks, t_cp, t_cm, W)
    scalar = [equal_finish_time(t_cp[m], t_cm[m], W) if m.any() else 0.0 for m in masks]
    assert batched[0] == 0.0
    np.testing.assert_allclose(batched, scalar, rtol=1e-12, atol=0.0)


def _instance(draw_seed: int, n: int):
    rng = np.random.default_rng(draw_seed)
    return rng.uniform(0.02, 1.0, n), rng.uniform(2, 20, n), rng.uniform(20, 400, n)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 40))
def test_mc_below_theorem2_bound(seed, n):
    q, t_cp, t_cm = _instance(seed, n)
    mc = expected_round_time(q, t_cp, t_cm, 100.0, method="mc", rng=np.random.default_rng(seed), samples=2000)
    bound = expected_round_time(q, t_cp, t_cm, 100.0, method="bound")
    assert mc.stderr > 0
    assert mc.value <= bound.value + 4 * mc.stderr


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8))
def test_enumeration_matches_mc(seed, n):
    q, t_cp, t_cm = _instance(seed, n)
    ex = expected_round_time(q, t_cp, t_cm, 100.0, method="enumerate")
    mc = expected_round_time(q, t_cp, t_cm, 100.0, method="mc", rng=np.random.default_rng(seed), samples=20000)
    assert ex.stderr == 0 and ex.samples == 2**n
    assert abs(ex.value - mc.value) <= 4.5 * mc.stderr + 1e-9
    assert ex.value <= theorem2_bound(q, t_cp, t_cm, 100.0) + 1e-9


def test_enumeration_brute_force_and_auto():
    q, t_cp, t_cm = _instance(3, 4)
    total = 0.0
    for mask in range(16):
        on = np.array([(mask >> i) & 1 for i in range(4)], bool)
        pr = np.prod(np.where(on, q, 1 - q))
        total += pr * (allocate_bandwidth(t_cp[on], t_cm[on], 100.0)[0] if on.any() else 0.0)
    res = expected_round_time(q, t_cp, t_cm, 100.0)
    assert res.method == "enumerate" and res.value == pytest.approx(total, rel=1e-10)
    assert expected_round_time(*_instance(1, 13), 100.0).method == "mc"
    with pytest.raises(ValueError, match="N <= 12"):
        expected_round_time(*_instance(1, 13), 100.0, method="enumerate")


def test_eq15_matches_enumeration_and_gradient():
    rng = np.random.default_rng(0)
    q, t = rng.uniform(0, 1, 7), rng.uniform(1, 10, 7)
    q[2] = 1.0
    ex = 0.0
    for mask in range(2**7):
        on = np.array([(mask >> i) & 1 for i in range(7)], bool)
        ex += np.prod(np.where(on, q, 1 - q)) * (t[on].max() if on.any() else 0.0)
    assert expected_max_compute(q, t) == pytest.approx(ex, rel=1e-12)
    order = np.argsort(t)
    qs, ts = q[order], t[order]
    _, g = _emax_and_grad_sorted(qs, ts)
    h = 1e-7
    for m in range(7):
        e = np.zeros(7)
        e[m] = h
        fd = (_emax_and_grad_sorted(np.clip(qs + e, 0, 1), ts)[0] - _emax_and_grad_sorted(qs - e, ts)[0]) / (
            np.clip(qs + e, 0, 1)[m] - (qs - e)[m])
        assert fd == pytest.approx(g[m], rel=1e-5, abs=1e-7)
        assert g[m] >= 0


def test_approx_is_close_and_q1_exact():
    q, t_cp, t_cm = _instance(5, 10)
    ex = expected_round_time(q, t_cp, t_cm, 100.0, method="enumerate").value
    assert expected_bandwidth_time(q, t_cp, t_cm, 100.0) == pytest.approx(ex, rel=0.05)
    ones = np.ones(10)
    T = allocate_bandwidth(t_cp, t_cm, 100.0)[0]
    assert expected_round_time(ones, t_cp, t_cm, 100.0, method="approx").value == pytest.approx(T, rel=1e-10)
    assert expected_round_time(ones, t_cp, t_cm, 100.0, method="enumerate").value == pytest.approx(T, rel=1e-10)


@pytest.mark.parametrize("W", [0.0, -1.0, float("nan")])
def test_bad_bandwidth(W):
    with pytest.raises(ValueError, match="bandwidth W"):
        expected_round_time([0.5], [1.0], [1.0], W)


def test_bad_times_name_client():
    with pytest.raises(ValueError, match="client 1"):
        expected_round_time([0.5, 0.5], [1.0, -1.0], [1.0, 1.0], 10.0)
    with pytest.raises(ValueError, match="t_cm must be > 0; client 0"):
        expected_round_time([0.5, 0.5], [1.0, 1.0], [0.0, 1.0], 10.0)
    with pytest.raises(ValueError, match="client 1 has q"):
        expected_round_time([0.5, 1.5], [1.0, 1.0], [1.0, 1.0], 10.0)
    with pytest.raises(ValueError, match="method"):
        expected_round_time([0.5], [1.0], [1.0], 10.0, method="nope")


def test_approx_is_high_when_a_slow_client_is_rarely_sampled():
    """Eq. 11's root exceeds the compute time of every client with q_n > 0: with a slow client sampled 1 %
    of the time it stays above that client's 20 s while E[T] (by hand, two masks) is about 1.3 s."""
    q, t_cp, t_cm, W = np.array([1.0, 0.01]), np.array([1.0, 20.0]), np.array([10.0, 10.0]), 100.0
    alone = t_cp[0] + t_cm[0] / W  # only the fast client: it gets all of W
    both = allocate_bandwidth(t_cp, t_cm, W)[0]
    by_hand = 0.99 * alone + 0.01 * both
    assert expected_round_time(q, t_cp, t_cm, W, method="enumerate").value == pytest.approx(by_hand, rel=1e-10)
    assert by_hand < 1.4
    assert expected_bandwidth_time(q, t_cp, t_cm, W) > 20.0
