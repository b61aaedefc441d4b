"""Federated LoRA methods on one harness, each a sampler x a sketcher x an aggregator.

``fl.method`` picks a composition from :data:`METHODS`; its parts come from :data:`SAMPLERS`,
:data:`SKETCHERS` and :data:`AGGREGATORS` and are built once per run by :func:`build_method`
from plain values (:class:`MethodContext`). The round loop (``fedsketch.runner.run.Run``) is the
same for all of them.

==============  ===========  =============  ===========
method          sampler      sketcher       aggregator
==============  ===========  =============  ===========
independent     bernoulli    random_subset  unbiased      (the paper's Algorithm 1)
fslora          cohort       random_subset  mean
heterolora      cohort       leading        mean
flora           cohort       leading        stack_merge   (FedStackLoRA)
==============  ===========  =============  ===========
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fedsketch.strategies.methods import flora, fslora, heterolora, independent
from fedsketch.strategies.methods.base import Aggregator, Method, MethodContext, Sampler, Sketcher

SAMPLERS: dict[str, Callable[[MethodContext], Sampler]] = {
    "bernoulli": independent.BernoulliSampler.build,  # independent Bernoulli(q_n) coins
    "cohort": fslora.CohortSampler.build,  # a fixed-size uniform cohort
}
SKETCHERS: dict[str, Callable[[MethodContext], Sketcher]] = {
    "random_subset": independent.RandomSubsetSketcher.build,  # uniform k-subset at scale r/k
    "leading": heterolora.LeadingSketcher.build,  # the leading k components at scale 1
}
AGGREGATORS: dict[str, Callable[[MethodContext], Aggregator]] = {
    "unbiased": independent.UnbiasedAggregator.build,  # p_n / q_n (eq. 6)
    "mean": fslora.MeanAggregator.build,  # p_n / sum_K p
    "stack_merge": flora.StackMergeAggregator.build,  # FLoRA's stacked module merged into the base
}
METHODS: dict[str, tuple[str, str, str]] = {
    "independent": independent.COMPOSITION,
    "fslora": fslora.COMPOSITION,
    "heterolora": heterolora.COMPOSITION,
    "flora": flora.COMPOSITION,
}


def check_method(name: str) -> tuple[str, str, str]:
    """The (sampler, sketcher, aggregator) names of method ``name``; a clear error if unknown."""
    if name not in METHODS:
        raise ValueError(f"fl.method: {name!r} is not allowed; choose one of {', '.join(map(repr, METHODS))}")
    return METHODS[name]


def build_method(name: str, ctx: MethodContext) -> Method:
    """Method ``name`` with its three parts built from ``ctx`` (once per run)."""
    sampler, sketcher, aggregator = check_method(name)
    return Method(name, SAMPLERS[sampler](ctx), SKETCHERS[sketcher](ctx), AGGREGATORS[aggregator](ctx))


def _probe_context(q: Sequence[float], k: Sequence[int], r: int, clients_per_round: int = 0) -> MethodContext:
    """A context to ask a part a question that needs no data (placeholder p and streams)."""
    import numpy as np

    from fedsketch.rng import Streams

    q_arr = np.asarray(q, dtype=float)
    return MethodContext(
        p=np.ones(q_arr.size),
        q=q_arr,
        k=np.asarray(k, dtype=np.int64),
        r=r,
        streams=Streams(0),
        clients_per_round=int(clients_per_round),
    )


def client_scale(name: str, k: int, r: int) -> float:
    """The LoRA-scale multiplier method ``name`` trains a rank-``k`` client at (r/k or 1)."""
    return SKETCHERS[check_method(name)[1]](_probe_context([1.0], [k], r)).scale(k)


def inclusion(name: str, q: Sequence[float], clients_per_round: int = 0):
    """(N,) per-round participation probability of method ``name``'s sampler for allocation ``q``:
    q itself (independent coins), or m/N for a fixed cohort of m = ``clients_per_round`` (or round(sum q))."""
    ctx = _probe_context(q, [1] * len(q), 1, clients_per_round)
    return SAMPLERS[check_method(name)[0]](ctx).inclusion()


__all__ = [
    "AGGREGATORS",
    "METHODS",
    "SAMPLERS",
    "SKETCHERS",
    "Method",
    "MethodContext",
    "build_method",
    "check_method",
    "client_scale",
    "inclusion",
]
