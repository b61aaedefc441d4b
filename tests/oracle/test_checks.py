"""One ``check_q`` and one ``check_k`` (issue 11, point 3): every layer that takes a per-client q or
k rejects the same bad value with the same message, naming the client."""

from __future__ import annotations

import numpy as np
import pytest

from fedsketch.checks import check_k, check_q
from fedsketch.network.profiles import ClientProfiles, sketch_times
from fedsketch.network.round_time import expected_round_time
from fedsketch.planner.bound import PlanProblem, Theta, step_size_factor
from fedsketch.sampling import sample_participants, unbiased_weights
from fedsketch.strategies import Allocation

N, R = 3, 4
PROF = ClientProfiles(tau_cp=np.ones(N), tau_cm=np.ones(N), tau_0=np.zeros(N))
PROB = PlanProblem(PROF, np.ones(N), R, 10.0, Theta(1.0, 0.5, 0.5, 10.0))


@pytest.mark.parametrize("bad", [[0.5, 0.0, 1.0], [0.5, 1.5, 1.0], [0.5, np.nan, 1.0], [0.5, -0.1, 1.0]])
def test_every_q_site_gives_the_one_message(bad):
    msg = r"q_n must lie in \(0, 1\]; client 1 has q="
    sites = [lambda: sample_participants(bad, np.random.default_rng(0)),
             lambda: unbiased_weights(np.ones(N), bad, np.arange(N)),
             lambda: Allocation(q=np.array(bad), k=np.full(N, R)).check(R),
             lambda: PROB.check_q(bad),
             lambda: step_size_factor(np.ones(N) / N, bad, np.ones(N)),
             lambda: check_q(bad)]
    for site in sites:
        with pytest.raises(ValueError, match=msg):
            site()
    if bad[1] < 0 or bad[1] > 1 or np.isnan(bad[1]):  # the expected-time model admits q = 0 only
        with pytest.raises(ValueError, match=r"q_n must lie in \[0, 1\]; client 1"):
            expected_round_time(bad, np.ones(N), np.ones(N), 10.0)
    else:
        assert np.isfinite(expected_round_time(bad, np.ones(N), np.ones(N), 10.0).value)


@pytest.mark.parametrize("bad", [[1, 0, 2], [1, 5, 2], [1, 2.5, 2]])
def test_every_k_site_gives_the_one_message(bad):
    integer = r"k_n must be an integer in \[1, r=4\]; client 1 has k="
    for site in (lambda: Allocation(q=np.ones(N), k=np.array(bad)).check(R), lambda: PROB.check_k(bad),
                 lambda: check_k(bad, R)):
        with pytest.raises(ValueError, match=integer):
            site()
    if bad[1] == 2.5:  # the time model of eqs. 18-19 is defined for real k in [1, r]
        t_cp, t_cm = sketch_times(PROF, np.array(bad, float), R)
        np.testing.assert_allclose(t_cm, np.array(bad) / R)
    else:
        with pytest.raises(ValueError, match=r"k_n must be in \[1, r=4\]; client 1 has k="):
            sketch_times(PROF, np.array(bad, float), R)


def test_shapes_are_checked_with_the_client_count():
    with pytest.raises(ValueError, match=r"q must have one entry per client \(3\)"):
        PROB.check_q([0.5, 0.5])
    with pytest.raises(ValueError, match=r"k must have one entry per client \(3\)"):
        PROB.check_k([1, 2])
