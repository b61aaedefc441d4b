"""Round rules of the methods on the shared harness (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsketch.config import load_config
from fedsketch.runner.build import federation, method_from_config, profiles_from_config
from fedsketch.runner.run import Run, Schedule
from fedsketch.strategies import resolve_allocation
from fedsketch.strategies.methods import METHODS, MethodContext, build_method, check_method


def _setup(*sets):
    cfg = load_config(None, ["data.num_clients=12", *sets])
    p = np.random.default_rng(0).dirichlet(np.ones(12))
    fed = federation(cfg, p, profiles_from_config(cfg, payload_mbit=5.0))
    alloc = resolve_allocation(fed)
    _CFG[id(alloc)] = cfg  # the config behind this allocation, for method_from_config
    return fed, alloc


_CFG: dict = {}


MODS = ["l0.q", "l0.v"]


class _NoEngine:
    """Only the module names: a plan needs nothing else of the engine."""

    module_names = MODS


def plan_round(t, fed, alloc, modules):
    """Round t's plan (coins, sketches, scales) of a bare Run on ``fed``/``alloc``."""
    assert modules == MODS
    zeros = np.zeros(fed.num_clients)
    run = Run(method=method_from_config(_CFG[id(alloc)], fed, alloc), alloc=alloc, t_cp=zeros, t_cm=zeros,
              r=fed.r, streams=fed.streams, schedule=Schedule(rounds=10**6), engine=_NoEngine(), executor=None,
              probe=lambda t, state: {}, x0={})
    return run.plan(t)


def test_independent_is_bernoulli_with_r_over_k():
    fed, alloc = _setup("fl.q=0.5", "fl.ranks='fixed'", "fl.k=2")
    sizes = [plan_round(t, fed, alloc, MODS).sampled.size for t in range(300)]
    assert len(set(sizes)) > 3 and abs(np.mean(sizes) - 6) < 0.5
    plan = plan_round(1, fed, alloc, MODS)
    assert all(s == 4.0 for s in plan.scales.values())  # r/k = 8/2
    ids = plan.sampled
    np.testing.assert_allclose(method_from_config(_CFG[id(alloc)], fed, alloc).weights(ids), fed.p[ids] / 0.5)


def test_fslora_fixed_cohort_and_mean_weights():
    fed, alloc = _setup("fl.method='fslora'", "fl.q=0.25", "fl.ranks='capability'")
    sizes = {plan_round(t, fed, alloc, MODS).sampled.size for t in range(50)}
    assert sizes == {3}  # round(sum q) = 3, every round
    plan = plan_round(2, fed, alloc, MODS)
    w = method_from_config(_CFG[id(alloc)], fed, alloc).weights(plan.sampled)
    assert w.sum() == pytest.approx(1.0)
    k = alloc.k
    fastest = int(np.argmin(fed.profiles.tau_cp))
    speed = 1.0 / fed.profiles.tau_cp  # capability ranks by hand: round(r * speed / max speed), at least 1
    expect = [max(1, min(8, int(np.floor(8 * s / speed.max() + 0.5)))) for s in speed]
    assert k[fastest] == 8 and k.tolist() == expect and len(set(k)) > 1


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
        check_method("flora2")


def _flora_round(fed, alloc, t=2, seed=0):
    from fedsketch.sketch import ClientUpdate

    rng = np.random.default_rng(seed)
    method = method_from_config(_CFG[id(alloc)], fed, alloc)
    r, d, m = fed.r, 6, 5
    base = {mod: (np.zeros((d, r)), rng.normal(size=(r, m))) for mod in MODS}  # B_0 = 0, A_0 random
    state = method.initial_state(base)
    plan = plan_round(t, fed, alloc, MODS)
    ups = [ClientUpdate(int(n), t, plan.sketches[int(n)],
                        {mod: (rng.normal(size=(d, len(i))), rng.normal(size=(len(i), m)))
                         for mod, i in plan.sketches[int(n)].items()}) for n in plan.sampled]
    return method, state, plan, ups


def test_flora_merges_the_stacked_module_exactly():
    from fedsketch.sketch import MERGED
    from fedsketch.strategies.methods.flora import lora_scale

    fed, alloc = _setup("fl.method='flora'", "fl.ranks='uniform'", "fl.clients_per_round=4", "lora.alpha=4.0")
    method, state, plan, ups = _flora_round(fed, alloc)
    assert set(state) == {*MODS, *(MERGED + m for m in MODS)} and not state[MERGED + MODS[0]][0].any()
    w = method.weights(plan.sampled)
    new = method.aggregate(state, ups, w)
    lo = _CFG[id(alloc)].lora
    s = lora_scale(lo.alpha, lo.rank, lo.use_rslora)
    assert s == 4.0 / 8
    for mod in MODS:
        # the stacked module [w_1 B_1, ..., w_K B_K] @ [A_1; ...; A_K] of FLoRA, built explicitly
        Bs = np.concatenate([wn * (state[mod][0][:, u.indices[mod]] + u.delta[mod][0]) for u, wn in zip(ups, w)], 1)
        As = np.concatenate([state[mod][1][u.indices[mod], :] + u.delta[mod][1] for u in ups], 0)
        assert Bs.shape[1] == sum(int(alloc.k[n]) for n in plan.sampled)  # rank = sum of client ranks
        np.testing.assert_allclose(new[MERGED + mod][0], s * Bs @ As, rtol=1e-12)
        np.testing.assert_array_equal(new[mod][0], state[mod][0])  # factors re-start from (0, A_0)
        np.testing.assert_array_equal(new[mod][1], state[mod][1])
    assert not state[MERGED + MODS[0]][0].any()  # input state untouched
    again = method.aggregate(new, ups, w)  # merging accumulates
    np.testing.assert_allclose(again[MERGED + MODS[0]][0], 2 * new[MERGED + MODS[0]][0])


def test_flora_download_grows_with_the_previous_cohort():
    fed, alloc = _setup("fl.method='flora'", "fl.ranks='full'", "fl.clients_per_round=2")
    fed6, alloc6 = _setup("fl.method='flora'", "fl.ranks='full'", "fl.clients_per_round=6")
    m, m6 = method_from_config(_CFG[id(alloc)], fed, alloc), method_from_config(_CFG[id(alloc6)], fed6, alloc6)
    assert not m.download_mbit(1).any()  # nothing stacked before round 1
    d2, d6 = m.download_mbit(2), m6.download_mbit(2)
    np.testing.assert_allclose(d2, fed.profiles.tau_cm * 2)  # 2 clients x k = r: twice a full-rank module
    np.testing.assert_allclose(d6, 3 * d2)
    for other in ("independent", "fslora", "heterolora"):
        ctx = MethodContext(p=fed.p, q=alloc.q, k=alloc.k, r=8, streams=fed.streams, tau_cm=fed.profiles.tau_cm)
        assert not build_method(other, ctx).download_mbit(2).any()


def _coins(sampler, ctx):  # "Independent Bernoulli(q_n) coins; the cohort size varies"
    return len({sampler.sample(t).size for t in range(60)}) > 3 and np.array_equal(sampler.inclusion(), ctx.q)


def _cohort(sampler, ctx):  # "A fixed number m of clients per round" (m = round(sum q))
    return {sampler.sample(t).size for t in range(60)} == {round(ctx.q.sum())}


def _random_subset(sketcher, ctx):  # "A uniform k-subset ... trained at scale r/k"
    drawn = {tuple(sketcher.sketch(t, 0, 2, MODS)[MODS[0]]) for t in range(30)}
    return sketcher.scale(2) == ctx.r / 2 and len(drawn) > 5


def _leading(sketcher, ctx):  # "The leading k components ..., at the global scale s"
    return sketcher.scale(2) == 1.0 and all(
        np.array_equal(sketcher.sketch(t, 0, 2, MODS)[m], [0, 1]) for t in range(10) for m in MODS)


_IDS = np.array([0, 3, 5])
_STATE = {m: (np.zeros((3, 8)), np.ones((8, 2))) for m in MODS}


def _p_over_q(aggregator, ctx):  # "(p_n / q_n) ..., no renormalisation (eq. 6)"
    return (np.allclose(aggregator.weights(_IDS), ctx.p[_IDS] / ctx.q[_IDS])
            and set(aggregator.initial_state(_STATE)) == set(MODS))  # no merged delta


def _mean(aggregator, ctx):  # "the data-weighted mean", p_n / sum_{m in K} p_m
    return (np.allclose(aggregator.weights(_IDS), ctx.p[_IDS] / ctx.p[_IDS].sum())
            and set(aggregator.initial_state(_STATE)) == set(MODS))  # no merged delta


def _stack_merge(aggregator, ctx):  # data-size weights, and a dense merged delta per module
    from fedsketch.sketch import MERGED

    return (np.allclose(aggregator.weights(_IDS), ctx.p[_IDS] / ctx.p[_IDS].sum())
            and set(aggregator.initial_state(_STATE)) == {*MODS, *(MERGED + m for m in MODS)})


#: method -> (the file and class, the behaviour its docstring promises) of its sampler, sketcher, aggregator
PARTS = {
    "independent": (("independent.BernoulliSampler", _coins), ("independent.RandomSubsetSketcher", _random_subset),
                    ("independent.UnbiasedAggregator", _p_over_q)),
    "fslora": (("fslora.CohortSampler", _cohort), ("independent.RandomSubsetSketcher", _random_subset),
               ("fslora.MeanAggregator", _mean)),
    "heterolora": (("fslora.CohortSampler", _cohort), ("heterolora.LeadingSketcher", _leading),
                   ("fslora.MeanAggregator", _mean)),
    "flora": (("fslora.CohortSampler", _cohort), ("heterolora.LeadingSketcher", _leading),
              ("flora.StackMergeAggregator", _stack_merge)),
}


def test_methods_are_compositions_without_inheritance():
    """Each method is built from the classes its files define, each part behaves as its docstring
    says, and no part inherits an implementation."""
    assert METHODS == {"independent": ("bernoulli", "random_subset", "unbiased"),
                       "fslora": ("cohort", "random_subset", "mean"),
                       "heterolora": ("cohort", "leading", "mean"),
                       "flora": ("cohort", "leading", "stack_merge")}
    assert set(PARTS) == set(METHODS)
    fed, alloc = _setup("fl.q=0.5")
    ctx = MethodContext(p=fed.p, q=alloc.q, k=alloc.k, r=8, streams=fed.streams, tau_cm=fed.profiles.tau_cm)
    for name, parts in PARTS.items():
        m = build_method(name, ctx)
        for part, (where, behaves) in zip((m.sampler, m.sketcher, m.aggregator), parts, strict=True):
            cls = type(part)
            assert f"{cls.__module__}.{cls.__qualname__}" == f"fedsketch.strategies.methods.{where}", (name, cls)
            assert behaves(part, ctx), (name, where)
            assert cls.__mro__[1:] == (object,)  # no implementation inheritance chains


def test_the_method_is_built_once_per_run(tiny_cfg, monkeypatch):
    import fedsketch.runner.build as build
    from fedsketch.runner import run_experiment

    calls = []
    real = build.build_method
    monkeypatch.setattr(build, "build_method", lambda *a, **kw: calls.append(a[0]) or real(*a, **kw))
    res = run_experiment(tiny_cfg("fl.method='flora'", "fl.rounds=3"))
    assert len(res.records) == 4 and calls == ["flora"]


def test_inclusion_is_what_the_sampler_draws():
    """Per-round participation probability (used by compare's stability report for Omega): q_n for
    independent coins; m/N for a fixed cohort of m, whatever fl.q says (oracle: sampling frequency
    over 4000 rounds, and m/N by hand)."""
    from fedsketch.rng import Streams
    from fedsketch.strategies.methods import SAMPLERS, inclusion
    from fedsketch.strategies.methods.base import MethodContext

    q = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert np.array_equal(inclusion("independent", q), q)
    for name in ("fslora", "heterolora", "flora"):
        assert np.allclose(inclusion(name, q, 3), 0.3)  # 3 of 10, not fl.q = 0.5
        assert np.allclose(inclusion(name, q), 0.5)  # m = round(sum q) = 5
    ctx = MethodContext(p=np.ones(10), q=q, k=np.ones(10, dtype=np.int64), r=1, streams=Streams(7), clients_per_round=3)
    sampler = SAMPLERS["cohort"](ctx)
    freq = np.mean([np.isin(np.arange(10), sampler.sample(t)) for t in range(4000)], axis=0)
    assert np.allclose(freq, 0.3, atol=0.03)
