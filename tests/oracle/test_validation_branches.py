"""Every validation branch of the server's upload check and of aggregation (issue 11, point 6g).

Each case starts from a well-formed upload that passes, breaks one thing, and expects the
branch's own reason; a run then rejects corrupted uploads of one client round by round and must
record that reason and leave the upload out of the aggregate and the byte count.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle_helpers import scripted_run

from fedsketch.aggregate import aggregate, validate_update
from fedsketch.sketch import MERGED, ClientUpdate

D, R, M = 6, 4, 5


def _state():
    rng = np.random.default_rng(0)
    st = {m: (rng.normal(size=(D, R)), rng.normal(size=(R, M))) for m in ("q", "v")}
    st[MERGED + "q"] = (np.zeros((D, M)), np.zeros((0, M)))  # a merged base delta is not uploaded
    return st


def _good():
    idx = {"q": np.array([0, 2]), "v": np.array([1, 3])}
    delta = {m: (np.full((D, 2), 0.1), np.full((2, M), -0.1)) for m in idx}
    return ClientUpdate(client=0, round=1, indices={m: i.copy() for m, i in idx.items()}, delta=delta,
                        train_loss=1.0), idx


def _drop(d, key):
    del d[key]


CASES = {
    "delta misses a module": (lambda u: _drop(u.delta, "v"), "modules differ from the global adapter"),
    "delta has an extra module": (lambda u: u.delta.__setitem__("k", u.delta["q"]), "modules differ"),
    "indices miss a module": (lambda u: _drop(u.indices, "q"), "modules differ"),
    "indices differ from the sketch": (lambda u: u.indices.__setitem__("v", np.array([1, 2])),
                                       "indices of v differ from the issued sketch"),
    "dB has wrong rows": (lambda u: u.delta.__setitem__("q", (np.zeros((D + 1, 2)), u.delta["q"][1])),
                          "block shapes of q"),
    "dB has wrong columns": (lambda u: u.delta.__setitem__("q", (np.zeros((D, 3)), u.delta["q"][1])),
                             "block shapes of q"),
    "dA has wrong rows": (lambda u: u.delta.__setitem__("v", (u.delta["v"][0], np.zeros((1, M)))),
                          "block shapes of v"),
    "dA has wrong columns": (lambda u: u.delta.__setitem__("v", (u.delta["v"][0], np.zeros((2, M - 1)))),
                             "block shapes of v"),
    "NaN in dB": (lambda u: u.delta["q"][0].__setitem__((0, 0), np.nan), "non_finite"),
    "inf in dA": (lambda u: u.delta["v"][1].__setitem__((1, 2), -np.inf), "non_finite"),
    "NaN train loss": (lambda u: setattr(u, "train_loss", float("nan")), "non_finite"),
    "inf train loss": (lambda u: setattr(u, "train_loss", float("inf")), "non_finite"),
}


def test_the_unbroken_upload_passes():
    u, issued = _good()
    assert validate_update(u, _state(), issued) is None


@pytest.mark.parametrize("case", list(CASES))
def test_each_branch_rejects_with_its_reason(case):
    breaker, reason = CASES[case]
    u, issued = _good()
    breaker(u)
    got = validate_update(u, _state(), issued)
    assert got is not None and got.startswith(reason), got


def test_weight_count_must_match_the_updates():
    from fedsketch.rng import Streams
    from fedsketch.strategies.methods import MethodContext, build_method

    u, _ = _good()
    with pytest.raises(ValueError, match="2 updates but 1 weights"):
        aggregate(_state(), [u, u], np.array([1.0]))
    ctx = MethodContext(p=np.full(2, 0.5), q=np.ones(2), k=np.full(2, 8), r=8, streams=Streams(0))
    plain = {m: v for m, v in _state().items() if not m.startswith(MERGED)}
    for name in ("independent", "fslora", "heterolora", "flora"):
        method = build_method(name, ctx)
        with pytest.raises(ValueError):
            method.aggregate(method.initial_state(plain), [u, u], np.array([1.0]))


# corruption of client 0's upload in round t (the run's modules and shapes, not the toy's)
RUN_CASES = {
    1: (lambda u: _drop(u.delta, next(iter(u.delta))), "modules differ from the global adapter"),
    2: (lambda u: u.delta.__setitem__(next(iter(u.delta)), (u.delta[next(iter(u.delta))][0][:, :-1],
                                                             u.delta[next(iter(u.delta))][1])), "block shapes of"),
    3: (lambda u: u.delta[next(iter(u.delta))][1].__setitem__((0, 0), np.nan), "non_finite"),
    4: (lambda u: setattr(u, "train_loss", float("inf")), "non_finite"),
    # a new dict: in process the upload's index dict may be the server's own record of the sketch
    5: (lambda u: setattr(u, "indices", {m: (i + 1) % 8 if j == 0 else i for j, (m, i) in enumerate(u.indices.items())}),
        "indices of"),
}


def test_a_run_records_each_rejection_and_leaves_the_upload_out(tiny_cfg):
    accepted: dict[int, int] = {}
    cfg = tiny_cfg("fl.rounds=5", "fl.sampling='full'", "fl.ranks='fixed'", "fl.k=3", "eval.every=0",
                   "eval.num_samples=2", "fl.local_steps=1", "data.max_seq_len=32", "fl.batch_size=1")
    bits = cfg.network.upload_bits

    def tamper(u):
        if u.client == 0:
            RUN_CASES[u.round][0](u)
        else:
            accepted[u.round] = accepted.get(u.round, 0) + u.nbytes(bits)

    res, _ = scripted_run(cfg, tamper=tamper)
    for t, (_, reason) in RUN_CASES.items():
        rec = res.records[t]
        assert rec.sampled == [0, 1, 2, 3]
        assert [f["client"] for f in rec.failed] == [0] and rec.failed[0]["reason"].startswith(reason)
        assert rec.uploaded_bytes == accepted[t]  # the rejected upload is not on the books
    assert all(np.all(np.isfinite(B)) and np.all(np.isfinite(A)) for B, A in res.state.values())
