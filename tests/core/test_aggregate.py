"""Independent sampling + unbiased aggregation (PAPER.md eq. 6, Appendix A eq. 27)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsketch.aggregate import aggregate, validate_update
from fedsketch.rng import Streams
from fedsketch.sampling import sample_participants, unbiased_weights
from fedsketch.sketch import ClientUpdate


def _updates(rng, n, d=5, r=4, m=3):
    ups = []
    for c in range(n):
        idx = np.sort(rng.choice(r, 2, replace=False))
        ups.append(ClientUpdate(client=c, round=1, indices={"x": idx},
                                delta={"x": (rng.normal(size=(d, 2)), rng.normal(size=(2, m)))}, train_loss=1.0))
    return ups


def _flat(state):
    return np.concatenate([state["x"][0].ravel(), state["x"][1].ravel()])


def test_monte_carlo_mean_equals_full_participation():
    rng = np.random.default_rng(0)
    N = 12
    state = {"x": (np.zeros((5, 4)), np.zeros((4, 3)))}
    ups = _updates(rng, N)
    p = rng.dirichlet(np.ones(N))
    q = rng.uniform(0.1, 1.0, N)
    full = _flat(aggregate(state, ups, p))  # sum_n p_n Delta_n
    draws, acc = 20_000, np.zeros_like(full)
    sizes = []
    for t in range(draws):
        ids = sample_participants(q, np.random.default_rng([7, t]))
        sizes.append(ids.size)
        acc += _flat(aggregate(state, [ups[i] for i in ids], unbiased_weights(p, q, ids)))
    mean = acc / draws
    assert np.linalg.norm(mean - full) / np.linalg.norm(full) < 0.03
    assert np.std(sizes) > 0.5 and abs(np.mean(sizes) - q.sum()) < 0.05  # cohort size varies, mean sum q
    # the self-normalised alternative is biased: the test above would catch it
    acc2 = np.zeros_like(full)
    for t in range(4000):
        ids = sample_participants(q, np.random.default_rng([8, t]))
        if ids.size:
            w = unbiased_weights(p, q, ids)
            acc2 += _flat(aggregate(state, [ups[i] for i in ids], w / w.sum()))
    assert np.linalg.norm(acc2 / 4000 - full) / np.linalg.norm(full) > 0.05


def test_empty_round_possible_and_seeded():
    q = np.full(5, 0.05)
    sizes = [sample_participants(q, Streams(0).generator("sampling", t)).size for t in range(200)]
    assert 0 in sizes
    a = sample_participants(q, Streams(1).generator("sampling", 3))
    b = sample_participants(q, Streams(1).generator("sampling", 3))
    assert np.array_equal(a, b)


def test_invalid_q_names_client():
    with pytest.raises(ValueError, match="client 2 has q=0.0"):
        sample_participants(np.array([0.5, 1.0, 0.0]), np.random.default_rng(0))


def test_non_finite_and_malformed_updates_rejected():
    rng = np.random.default_rng(0)
    state = {"x": (np.zeros((5, 4)), np.zeros((4, 3)))}
    u = _updates(rng, 1)[0]
    issued = dict(u.indices)
    assert validate_update(u, state, issued) is None
    u.delta["x"][0][0, 0] = np.nan
    assert validate_update(u, state, issued) == "non_finite"
    v = _updates(rng, 1)[0]
    assert "indices" in validate_update(v, state, {"x": np.array([0, 1, 2])})
    w = _updates(rng, 1)[0]
    w.delta["x"] = (np.zeros((5, 3)), w.delta["x"][1])
    assert "block shapes" in validate_update(w, state, dict(w.indices))


def test_aggregate_touches_only_uploaded_columns():
    rng = np.random.default_rng(0)
    state = {"x": (rng.normal(size=(5, 4)), rng.normal(size=(4, 3)))}
    u = _updates(rng, 1)[0]
    new = aggregate(state, [u], np.array([2.0]))
    idx = u.indices["x"]
    others = np.setdiff1d(np.arange(4), idx)
    np.testing.assert_array_equal(new["x"][0][:, others], state["x"][0][:, others])
    np.testing.assert_allclose(new["x"][0][:, idx], state["x"][0][:, idx] + 2.0 * u.delta["x"][0])
    np.testing.assert_allclose(new["x"][1][idx], state["x"][1][idx] + 2.0 * u.delta["x"][1])
