"""The sketches a run draws are uniform over k-subsets and independent (issue 11, point 6d).

Drawn through the method's public ``sketch(t, n, k, modules)`` with the run's streams, so
the stream keys the run uses are part of what is tested. Chi-square tests (scipy.stats) on
r = 5, k = 2 (10 subsets): the subset counts against uniform, and the joint counts of two
layers of one client, two clients in one round, and one client in consecutive rounds against
independence (10 x 10 contingency tables). Seeded, so the outcome is fixed; alpha = 1e-3.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from scipy.stats import chi2_contingency, chisquare

from fedsketch.rng import Streams
from fedsketch.strategies.methods import MethodContext, build_method

R, K, ROUNDS, CLIENTS = 5, 2, 120, 40
SUBSETS = {s: i for i, s in enumerate(combinations(range(R), K))}
MODULES = ["layers.0.q_proj", "layers.0.v_proj", "layers.1.q_proj"]
ALPHA = 1e-3


@pytest.fixture(scope="module", params=["independent", "fslora"])
def draws(request):
    """Subset id of every (round, client, module): array (ROUNDS, CLIENTS, len(MODULES))."""
    p = np.full(CLIENTS, 1 / CLIENTS)
    method = build_method(request.param, MethodContext(p=p, q=np.full(CLIENTS, 0.5), k=np.full(CLIENTS, K), r=R,
                                                       streams=Streams(11)))
    out = np.empty((ROUNDS, CLIENTS, len(MODULES)), dtype=int)
    for t in range(1, ROUNDS + 1):
        for n in range(CLIENTS):
            idx = method.sketch(t, n, K, MODULES)
            for j, m in enumerate(MODULES):
                assert len(set(idx[m].tolist())) == K
                out[t - 1, n, j] = SUBSETS[tuple(sorted(int(i) for i in idx[m]))]
    return out


def _independent(a: np.ndarray, b: np.ndarray) -> float:
    table = np.zeros((len(SUBSETS), len(SUBSETS)))
    np.add.at(table, (a.ravel(), b.ravel()), 1)
    return chi2_contingency(table).pvalue


def test_uniform_over_subsets(draws):
    counts = np.bincount(draws.ravel(), minlength=len(SUBSETS))
    assert chisquare(counts).pvalue > ALPHA, counts


def test_independent_across_layers(draws):
    assert _independent(draws[:, :, 0], draws[:, :, 1]) > ALPHA
    assert _independent(draws[:, :, 1], draws[:, :, 2]) > ALPHA


def test_independent_across_clients(draws):
    assert _independent(draws[:, :-1, 0], draws[:, 1:, 0]) > ALPHA
    assert _independent(draws[:, 0::2, 1], draws[:, 1::2, 1]) > ALPHA


def test_independent_across_rounds(draws):
    assert _independent(draws[:-1, :, 0], draws[1:, :, 0]) > ALPHA
    assert _independent(draws[:-2, :, 2], draws[2:, :, 2]) > ALPHA


def test_the_tests_have_power():
    """The same statistics on deliberately dependent or skewed draws reject (sanity of the oracle)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, len(SUBSETS), size=4000)
    assert _independent(a, a) < ALPHA  # shared sets
    assert _independent(a, (a + rng.integers(0, 2, size=a.size)) % len(SUBSETS)) < ALPHA  # correlated
    skew = np.bincount(np.minimum(rng.integers(0, len(SUBSETS) + 2, size=4000), len(SUBSETS) - 1),
                       minlength=len(SUBSETS))
    assert chisquare(skew).pvalue < ALPHA
