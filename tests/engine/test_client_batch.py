"""Clients trained together (``train.client_batch``): uploads equal the sequential PEFT ones.

Oracle: ``TorchEngine.train_client`` (PEFT, one client at a time, full-logits loss) on the same
state, sketches, scales and mini-batch streams.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedsketch.data import build_federated_data
from fedsketch.engine.runtime import TorchEngine
from fedsketch.rng import Streams
from fedsketch.runner.build import engine_settings
from fedsketch.sketch import MERGED, draw_indices


def _engine(cfg):
    d = build_federated_data(cfg)
    return TorchEngine(engine_settings(cfg), d.train, d.test, d.parts, Streams(cfg.seed))


def _state(eng, merged: bool):
    rng = np.random.default_rng(0)
    st = {m: (0.05 * rng.normal(size=B.shape).astype(np.float32), A) for m, (B, A) in eng.initial_state().items()}
    if merged:  # a FLoRA-merged base: a dense delta added to every adapted base weight
        for m, (B, A) in list(st.items()):
            st[MERGED + m] = (0.02 * rng.normal(size=(B.shape[0], A.shape[1])).astype(np.float32),
                              np.zeros((0, A.shape[1]), np.float32))
    return st


def _jobs(eng):
    """Mixed k_n: two random (independent/FSLoRA) sketches at scale r/k, two HeteroLoRA prefixes at scale 1."""
    names, r = eng.module_names, eng.rank
    rng = np.random.default_rng(5)
    return [(0, draw_indices(rng, names, r, 3), None),
            (1, draw_indices(rng, names, r, r), None),
            (2, {m: np.arange(5) for m in names}, 1.0),
            (3, {m: np.arange(2) for m in names}, 1.0)]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _upload_rel(u, ref) -> float:
    """max |upload - reference| / max |reference| over the whole upload (every module's dB and dA).

    Normwise over the upload: a single small block (e.g. dA ~ 1e-4 next to A ~ 0.2, whose fp32
    spacing is ~1e-8) has a rounding floor of its own near 1e-5 that says nothing about the path.
    """
    a = np.concatenate([x.ravel() for m in sorted(u.delta) for x in u.delta[m]])
    b = np.concatenate([x.ravel() for m in sorted(ref.delta) for x in ref.delta[m]])
    return _rel(a, b)


@pytest.mark.parametrize("logits", ["scored", "full"])  # fused: packed rows + scored head, or padded + full
@pytest.mark.parametrize("extra", [(), ("train.momentum=0.9", "train.max_grad_norm=0.05")], ids=["sgd", "momentum-clip"])
@pytest.mark.parametrize("merged", [False, True], ids=["plain", "flora-merged"])
def test_stacked_uploads_equal_sequential(tiny_cfg, merged, extra, logits):
    eng = _engine(tiny_cfg("fl.local_steps=3", "train.logits='full'", "train.client_batch=1", *extra))
    st, jobs = _state(eng, merged), _jobs(eng)
    seq = {n: eng.train_client(st, n, 1, idx, scale=s) for n, idx, s in jobs}  # PEFT, full logits: the oracle
    assert all(np.abs(seq[n].delta[m][0]).max() > 0 for n in seq for m in eng.module_names)
    eng.settings = dataclasses.replace(eng.settings, train=dataclasses.replace(eng.settings.train, logits=logits))
    for C in (1, 3, len(jobs)):
        got = {}
        for j in range(0, len(jobs), C):
            got.update({u.client: u for u in eng.train_clients(st, 1, jobs[j:j + C])})
        assert sorted(got) == sorted(seq)
        for n, u in got.items():
            ref = seq[n]
            assert u.round == ref.round and u.num_examples == ref.num_examples
            for m in eng.module_names:
                np.testing.assert_array_equal(u.indices[m], ref.indices[m])
                assert u.delta[m][0].shape == ref.delta[m][0].shape and u.delta[m][1].shape == ref.delta[m][1].shape
            assert _upload_rel(u, ref) <= 1e-5, (C, n)
            assert u.train_loss == pytest.approx(ref.train_loss, rel=1e-5)


def test_stacked_path_leaves_the_peft_model_as_it_was(tiny_cfg):
    """After a fused group the PEFT adapter is active again and evaluation sees the global state."""
    eng = _engine(tiny_cfg())
    st = _state(eng, False)
    before = eng.evaluate(st)
    eng.train_clients(st, 1, _jobs(eng))
    assert eng.evaluate(st).as_dict() == before.as_dict()
    assert not any(m.get_base_layer()._forward_hooks for m in eng.modules.values())


@pytest.mark.parametrize("method", ["independent", "heterolora", "flora"])
def test_run_with_client_batch_matches_sequential_run(tiny_cfg, method):
    """Whole runs: client_batch = 0 (all) + the new loss and evaluation against the earlier paths."""
    from fedsketch.runner import run_experiment

    common = [f"fl.method='{method}'", "fl.rounds=2", "output.checkpoint_every=0"]
    if method != "independent":
        common += ["fl.ranks='capability'"]
    old = run_experiment(tiny_cfg(*common, "train.client_batch=1", "train.logits='full'", "eval.scoring='per_option'",
                                  "output.name='old'"))
    new = run_experiment(tiny_cfg(*common, "train.client_batch=0", "output.name='new'"))
    assert len(old.records) == len(new.records) == 3
    for a, b in zip(old.records, new.records, strict=True):
        assert a.sampled == b.sampled and not b.failed
        assert a.accuracy == b.accuracy
        assert b.test_loss == pytest.approx(a.test_loss, rel=1e-5)
        if a.train_loss is not None:
            assert b.train_loss == pytest.approx(a.train_loss, rel=1e-5)
    for m in old.state:
        for x, y in zip(old.state[m], new.state[m], strict=True):
            if x.size:
                assert _rel(y, x) <= 1e-5


def test_client_batch_is_validated(tiny_cfg):
    from fedsketch.config import ConfigError

    with pytest.raises(ConfigError, match="train.client_batch"):
        tiny_cfg("train.client_batch=-1")
    with pytest.raises(ConfigError, match="train.logits"):
        tiny_cfg("train.logits='some'")
    with pytest.raises(ConfigError, match="eval.scoring"):
        tiny_cfg("eval.scoring='fast'")


def test_fused_clients_of_different_learning_rates_train_at_their_own(tiny_cfg):
    """One SGD steps a stack at one rate: clients of different rates in one call each train at their own.

    Oracle: ``train_client`` of each client alone at its rate."""
    from fedsketch.sketch import ClientJob

    eng = _engine(tiny_cfg("fl.local_steps=2", "train.momentum=0.9"))
    st, base = _state(eng, False), eng.settings.train.lr
    lr = {0: 0.5 * base, 1: 0.1 * base, 2: 0.5 * base, 3: None}  # None: train.lr
    jobs = [ClientJob(n, idx, s, lr[n]) for n, idx, s in _jobs(eng)]
    got = eng.train_clients(st, 1, jobs)
    assert [u.client for u in got] == [0, 1, 2, 3]  # in the order of the jobs
    for u, job in zip(got, jobs, strict=True):
        ref = eng.train_client(st, job.client, 1, job.indices, scale=job.scale, lr=job.lr)
        assert _upload_rel(u, ref) <= 1e-5, job.client
    other = eng.train_client(st, 1, 1, jobs[1].indices, scale=jobs[1].scale)  # at train.lr: far from client 1's
    assert _upload_rel(got[1], other) > 0.1
