"""Round rules of the methods on the shared harness (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsketch.config import load_config
from fedsketch.network.profiles import profiles_from_config
from fedsketch.rng import Streams
from fedsketch.server import plan_round
from fedsketch.strategies import Federation, resolve_allocation
from fedsketch.strategies.methods import make_method


def _setup(*sets):
    cfg = load_config(None, ["data.num_clients=12", *sets])
    p = np.random.default_rng(0).dirichlet(np.ones(12))
    fed = Federation(p=p, profiles=profiles_from_config(cfg, payload_mbit=5.0), cfg=cfg, streams=Streams(cfg.seed))
    return fed, resolve_allocation(fed)


MODS = ["l0.q", "l0.v"]


def test_independent_is_bernoulli_with_r_over_k():
    fed, alloc = _setup("fl.q=0.5", "fl.ranks='fixed'", "fl.k=2")
    sizes = [plan_round(t, fed, alloc, MODS).sampled.size for t in range(300)]
    assert len(set(sizes)) > 3 and abs(np.mean(sizes) - 6) < 0.5
    plan = plan_round(1, fed, alloc, MODS)
    assert all(s == 4.0 for s in plan.scales.values())  # r/k = 8/2
    ids = plan.sampled
    np.testing.assert_allclose(make_method("independent").weights(fed, alloc, ids), fed.p[ids] / 0.5)


def test_fslora_fixed_cohort_and_mean_weights():
    fed, alloc = _setup("fl.method='fslora'", "fl.q=0.25", "fl.ranks='capability'")
    sizes = {plan_round(t, fed, alloc, MODS).sampled.size for t in range(50)}
    assert sizes == {3}  # round(sum q) = 3, every round
    plan = plan_round(2, fed, alloc, MODS)
    w = make_method("fslora").weights(fed, alloc, plan.sampled)
    assert w.sum() == pytest.approx(1.0)
    k = alloc.k
    fastest = int(np.argmin(fed.profiles.tau_cp))
    assert k[fastest] == 8 and k.min() >= 1 and len(set(k)) > 1  # capability ranks


def test_heterolora_leading_ranks_unscaled():
    fed, alloc = _setup("fl.method='heterolora'", "fl.ranks='uniform'", "fl.clients_per_round=5")
    plan = plan_round(3, fed, alloc, MODS)
    assert plan.sampled.size == 5
    for n in plan.sampled:
        for m in MODS:
            np.testing.assert_array_equal(plan.sketches[int(n)][m], np.arange(alloc.k[n]))
        assert plan.scales[int(n)] == 1.0


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="fl.method: 'flora2' is not allowed"):
        make_method("flora2")
