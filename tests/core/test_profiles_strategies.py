"""Client time profiles (eqs. 18–19) and the sampling / rank policies (Fig. 2–3 baselines)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsketch.config import load_config
from fedsketch.network import ClientProfiles, load_profiles_csv, sketch_times
from fedsketch.rng import Streams
from fedsketch.runner.build import federation, profiles_from_config
from fedsketch.strategies import resolve_allocation
from fedsketch.planner.baselines import capped_proportional


def test_sketch_times_linear_and_affine():
    prof = ClientProfiles(tau_cp=np.array([10.0, 20.0]), tau_cm=np.array([4.0, 8.0]), tau_0=np.array([2.0, 5.0]))
    t_cp, t_cm = sketch_times(prof, np.array([4, 8]), 8)
    np.testing.assert_allclose(t_cp, [5.0, 20.0])
    np.testing.assert_allclose(t_cm, [2.0, 8.0])
    t_cp, _ = sketch_times(prof, np.array([4, 8]), 8, "affine")
    np.testing.assert_allclose(t_cp, [2 + 0.5 * 8, 20.0])
    with pytest.raises(ValueError, match=r"client 1 has k=9"):
        sketch_times(prof, np.array([4, 9]), 8)


def test_profiles_reject_bad_values_naming_client():
    with pytest.raises(ValueError, match="tau_cm must be > 0; client 1"):
        ClientProfiles(tau_cp=np.ones(2), tau_cm=np.array([1.0, 0.0]), tau_0=np.zeros(2))


def test_profiles_from_config_sources(tmp_path):
    cfg = load_config(None, ["data.num_clients=3", "network.profile='explicit'", "network.tau_cp=[1,2,3]",
                             "network.tau_cm=[4,5,6]"])
    prof = profiles_from_config(cfg)
    np.testing.assert_array_equal(prof.tau_cm, [4, 5, 6])
    csv = tmp_path / "p.csv"
    csv.write_text("client,tau_cp,tau_cm\n0,1,2\n2,3,4\n")
    cfg = load_config(None, ["data.num_clients=3", "network.profile='csv'", f"network.profile_csv='{csv}'"])
    with pytest.raises(ValueError, match=r"no row for client\(s\) \[1\]"):
        profiles_from_config(cfg)
    csv.write_text("client,tau_cp,tau_cm\n0,1,2\n1,x,4\n2,3,4\n")
    with pytest.raises(ValueError, match="line 3"):
        load_profiles_csv(csv, 3)
    cfg = load_config(None, ["data.num_clients=50", "seed=3"])
    a, b = profiles_from_config(cfg, payload_mbit=10.0), profiles_from_config(cfg, payload_mbit=10.0)
    np.testing.assert_array_equal(a.tau_cp, b.tau_cp)
    assert a.tau_cp.std() > 0 and a.tau_cm.min() >= 10.0  # heterogeneous; rho <= 1


def _fed(*sets):
    cfg = load_config(None, ["data.num_clients=20", *sets])
    p = np.random.default_rng(0).dirichlet(np.full(20, 0.5))
    prof = profiles_from_config(cfg, payload_mbit=10.0)
    return federation(cfg, p, prof)


def test_sampling_policies():
    assert np.all(resolve_allocation(_fed("fl.sampling='full'")).q == 1)
    assert np.all(resolve_allocation(_fed("fl.sampling='fixed'", "fl.q=0.3")).q == 0.3)
    fed = _fed("fl.sampling='weighted'", "fl.q=0.4")
    q = resolve_allocation(fed).q
    assert q.sum() == pytest.approx(0.4 * 20) and q.max() <= 1
    free = q < 1
    np.testing.assert_allclose(q[free] / fed.p[free], (q[free] / fed.p[free])[0])  # proportional where uncapped


def test_capped_proportional_water_fills():
    q = capped_proportional(np.array([0.7, 0.1, 0.1, 0.1]), 2.0)
    assert q[0] == 1.0 and q.sum() == pytest.approx(2.0)
    np.testing.assert_allclose(q[1:], 1 / 3)


def test_rank_policies():
    r = 8
    # (the bounds 1 <= k <= r are Allocation.check's; here: the seeded draws of the 'ranks' stream)
    fed = _fed("fl.ranks='uniform'")
    k = resolve_allocation(fed).k
    assert k.tolist() == fed.streams.generator("ranks").integers(1, r + 1, size=20).tolist()
    assert len(set(k)) > 2
    k = resolve_allocation(_fed("fl.ranks='normal'")).k
    assert abs(k.mean() - (1 + r) / 2) < 1.5 and len(set(k)) > 2
    assert np.all(resolve_allocation(_fed("fl.ranks='fixed'", "fl.k=3")).k == 3)
    assert np.all(resolve_allocation(_fed("fl.ranks='full'")).k == r)
