"""Sketch properties of PAPER.md eqs. 3–4 (numpy only)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from fedsketch.sketch import ClientUpdate, draw_indices, extract, masked, sketch_matrix, sketched_product


@pytest.mark.parametrize("k", [1, 3, 8])
def test_sketched_product_is_unbiased(k):
    """E[B S A] = B A (eq. 4) over the index sets fedsketch draws (Monte Carlo)."""
    rng = np.random.default_rng(0)
    r = 8
    B, A = rng.normal(size=(12, r)), rng.normal(size=(r, 10))
    draws = 40_000
    mean = np.zeros((12, 10))
    for _ in range(draws):
        mean += sketched_product(B, A, draw_indices(rng, ["m"], r, k)["m"])
    mean /= draws
    rel = np.linalg.norm(mean - B @ A) / np.linalg.norm(B @ A)
    # Monte-Carlo error shrinks as 1/sqrt(draws); at k = r the sketch is exact
    assert rel < (1e-12 if k == r else 0.03), rel


def test_sketch_matrix_matches_product():
    rng = np.random.default_rng(1)
    B, A = rng.normal(size=(5, 6)), rng.normal(size=(6, 4))
    idx = np.array([1, 4])
    np.testing.assert_allclose(B @ sketch_matrix(6, idx) @ A, sketched_product(B, A, idx))


@pytest.mark.parametrize("r, k", [(6, 1), (6, 2), (6, 5), (4, 4)])
def test_sketch_is_unbiased_exactly_over_all_subsets(r, k):
    """E[S] = I and E[B S A] = B A (eqs. 3–4), the expectation taken exactly: the mean over every
    k-subset of {0..r-1}, each equally likely (the uniform draw of Algorithm 1, line 2)."""
    rng = np.random.default_rng(2)
    B, A = rng.normal(size=(5, r)), rng.normal(size=(r, 3))
    subsets = [np.array(s) for s in combinations(range(r), k)]
    np.testing.assert_allclose(np.mean([sketch_matrix(r, s) for s in subsets], axis=0), np.eye(r), atol=1e-12)
    mean = np.mean([sketched_product(B, A, s) for s in subsets], axis=0)
    np.testing.assert_allclose(mean, B @ A, rtol=1e-12, atol=1e-12)


def test_draw_indices_per_module_and_seeded():
    mods = ["a", "b", "c"]
    s1 = draw_indices(np.random.default_rng(3), mods, 16, 4)
    s2 = draw_indices(np.random.default_rng(3), mods, 16, 4)
    assert all(np.array_equal(s1[m], s2[m]) for m in mods)
    assert all(len(set(s1[m])) == 4 and s1[m].max() < 16 for m in mods)
    assert not all(np.array_equal(s1["a"], s1[m]) for m in mods[1:])  # independent across layers
    with pytest.raises(ValueError, match=r"k must lie in \[1, r=16\]"):
        draw_indices(np.random.default_rng(0), mods, 16, 17)


def test_masked_and_extract():
    rng = np.random.default_rng(0)
    state = {"m": (rng.normal(size=(4, 6)), rng.normal(size=(6, 3)))}
    idx = {"m": np.array([0, 5])}
    mB, mA = masked(state, idx)["m"]
    assert np.all(mB[:, 1:5] == 0) and np.all(mA[1:5] == 0)
    np.testing.assert_array_equal(mB[:, [0, 5]], state["m"][0][:, [0, 5]])
    dB, dA = extract(state, idx)["m"]
    assert dB.shape == (4, 2) and dA.shape == (2, 3)


def test_upload_bytes_counted_from_blocks():
    u = ClientUpdate(client=0, round=1, indices={"m": np.array([1, 2])},
                     delta={"m": (np.zeros((10, 2)), np.zeros((2, 7)))})
    assert u.num_values == 2 * (10 + 7)
    assert u.nbytes(16) == 34 * 2 + 2 * 4
