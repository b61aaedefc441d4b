"""Theorem 1's step-size factor kappa_max * Omega (PAPER.md §2.3)."""

import numpy as np
import pytest

from fedsketch.planner.bound import step_size_factor


def test_full_participation_full_rank_gives_one():
    p = np.array([0.2, 0.3, 0.5])
    factor, omega, kmax = step_size_factor(p, np.ones(3), np.ones(3))
    assert (factor, kmax) == (pytest.approx(1.0), 1.0) and omega == pytest.approx(1.0)  # sum p(1-p) + p^2 = sum p


def test_matches_the_definition_and_grows_as_q_falls():
    p, q, kappa = np.array([0.1, 0.9]), np.array([0.05, 0.5]), np.array([2.0, 8.0])
    omega = 0.1 * 0.9 + 0.01 / 0.05 + 0.9 * 0.1 + 0.81 / 0.5
    assert step_size_factor(p, q, kappa) == pytest.approx((8 * omega, omega, 8.0))
    assert step_size_factor(p, q / 2, kappa)[0] > step_size_factor(p, q, kappa)[0]


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match=r"q_n must lie in \(0, 1\]"):
        step_size_factor([0.5, 0.5], [0.0, 1.0], [1, 1])
    with pytest.raises(ValueError, match="one entry per client"):
        step_size_factor([0.5, 0.5], [1.0], [1, 1])
