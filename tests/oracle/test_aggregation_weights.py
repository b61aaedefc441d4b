"""Aggregation weights of every method against hand-computed values (issue 11, point 6c).

Two oracles: literal numbers for a four-client federation (p and q chosen so that p/q, the
data-weighted mean over the cohort and a plain mean all differ), and the weights read back
from a real run: one round's change of the global state regressed on the clients' recorded
uploads, compared with the weights computed by hand from ``run.json``'s p and q.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle_helpers import recording_run

from fedsketch.rng import Streams
from fedsketch.sketch import MERGED, lora_keys
from fedsketch.strategies.methods import MethodContext, build_method

P = np.array([0.1, 0.2, 0.3, 0.4])
Q = np.array([0.5, 1.0, 0.25, 0.8])
COHORT = np.array([0, 2, 3])


def _method(name, p=P, q=Q):
    return build_method(name, MethodContext(p=p, q=q, k=np.full(p.size, 8), r=8, streams=Streams(0)))


@pytest.mark.parametrize("method, expect", [
    ("independent", [0.1 / 0.5, 0.3 / 0.25, 0.4 / 0.8]),  # p_n / q_n = 0.2, 1.2, 0.5 (eq. 6)
    ("fslora", [0.1 / 0.8, 0.3 / 0.8, 0.4 / 0.8]),  # p_n / sum_K p = 0.125, 0.375, 0.5
    ("heterolora", [0.125, 0.375, 0.5]),
    ("flora", [0.125, 0.375, 0.5]),
])
def test_weights_by_hand(method, expect):
    w = _method(method).weights(COHORT)
    np.testing.assert_allclose(w, expect, rtol=1e-15)


def _flat_lora(state):
    return np.concatenate([np.concatenate([B.ravel(), A.ravel()]) for m, (B, A) in sorted(state.items())
                           if m in lora_keys(state)]).astype(np.float64)


def _scatter(state, u):
    """Client n's upload placed at its indices in a zero state shaped like ``state``."""
    out = {m: (np.zeros_like(B), np.zeros_like(A)) for m, (B, A) in state.items() if m in lora_keys(state)}
    for m, (dB, dA) in u.delta.items():
        out[m][0][:, u.indices[m]] = dB
        out[m][1][u.indices[m], :] = dA
    return out


RUN = ("fl.rounds=1", "data.partition='dirichlet'", "data.dirichlet_alpha=1.0", "data.num_clients=5",
       "fl.local_steps=2", "eval.num_samples=2", "fl.ranks='uniform'")


@pytest.mark.parametrize("method, sets", [
    ("independent", ("fl.sampling='fixed'", "fl.q=0.6", "fl.server_lr=0.7")),
    ("fslora", ("fl.method='fslora'", "fl.clients_per_round=3")),
    ("heterolora", ("fl.method='heterolora'", "fl.clients_per_round=3")),
])
def test_weights_read_back_from_a_run(tiny_cfg, method, sets):
    cfg = tiny_cfg(*RUN, *sets)
    res, eng, info = recording_run(cfg)
    K = res.records[1].sampled
    assert len(K) >= 2, "the oracle needs at least two participants"
    p, q = np.asarray(info["p"]), np.asarray(info["q"])
    assert len(set(np.round(p[K], 9))) > 1  # unequal data weights: p/q and p/sum p differ from a plain mean
    x0 = _method(cfg.fl.method, p, q).initial_state(eng.state0)
    cols = np.stack([_flat_lora(_scatter(x0, eng.uploads[(1, n)])) for n in K], axis=1)
    w, *_ = np.linalg.lstsq(cols, _flat_lora(res.state) - _flat_lora(x0), rcond=None)
    hand = cfg.fl.server_lr * (p[K] / q[K] if method == "independent" else p[K] / p[K].sum())
    np.testing.assert_allclose(w, hand, rtol=1e-4)


def test_flora_merged_delta_is_the_weighted_stack(tiny_cfg):
    cfg = tiny_cfg(*RUN, "fl.method='flora'", "fl.clients_per_round=3", "fl.server_lr=0.5")
    res, eng, info = recording_run(cfg)
    K = res.records[1].sampled
    p = np.asarray(info["p"])
    x0 = eng.state0
    s = cfg.lora.alpha / cfg.lora.rank  # PEFT's LoRA scale alpha / r (no rsLoRA in the tiny config)
    for m in lora_keys(x0):
        cols = []
        for n in K:
            u = eng.uploads[(1, n)]
            idx = u.indices[m]
            B_n, A_n = x0[m][0][:, idx] + u.delta[m][0], x0[m][1][idx, :] + u.delta[m][1]
            cols.append((B_n.astype(np.float64) @ A_n.astype(np.float64)).ravel())
        w, *_ = np.linalg.lstsq(np.stack(cols, axis=1), res.state[MERGED + m][0].ravel().astype(np.float64),
                                rcond=None)
        np.testing.assert_allclose(w, 0.5 * s * p[K] / p[K].sum(), rtol=1e-4)
