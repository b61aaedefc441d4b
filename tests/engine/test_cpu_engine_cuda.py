"""A CPU engine on a machine with CUDA: nothing initialises CUDA, and no worker forks from a CUDA process.

A forked child of a process that holds a CUDA context fails at its first CUDA call ("Cannot re-initialize
CUDA in forked subprocess"), so (a) a CPU engine never reads, seeds or forks a CUDA generator (checked with
one CUDA device simulated on this CPU machine), and (b) when the process holds a CUDA context anyway
(simulated through ``engine.workers.cuda_initialized``), ``train.workers = 2`` trains in this process.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from fedsketch.runner.executor import InProcessExecutor, RoundPlan
from fedsketch.sketch import ClientJob
from test_client_batch import _engine, _jobs, _state  # same directory: pytest puts it on sys.path


@pytest.fixture
def one_cuda_device(monkeypatch):
    """This machine as if it had one CUDA device; every CUDA generator call is recorded instead of made."""
    calls: list[str] = []
    forks: list[list] = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("manual_seed_all", "manual_seed", "seed_all", "get_rng_state", "set_rng_state",
                 "get_rng_state_all", "set_rng_state_all", "init", "_lazy_init"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, _name=name, **k: calls.append(_name))
    real_fork_rng = torch.random.fork_rng

    def fork_rng(devices=None, *a, **k):
        forks.append(None if devices is None else list(devices))
        return real_fork_rng(devices, *a, **k)

    monkeypatch.setattr(torch.random, "fork_rng", fork_rng)
    return calls, forks


def test_a_cpu_engine_never_calls_into_cuda_seeding(tiny_cfg, one_cuda_device):
    calls, forks = one_cuda_device
    eng = _engine(tiny_cfg("train.device='cpu'", "lora.dropout=0.1", "fl.local_steps=1"))  # dropout draws
    assert eng.device.type == "cpu"
    st, jobs = _state(eng, False), _jobs(eng)
    eng.train_client(st, 0, 1, jobs[0][1])
    eng.train_clients(st, 1, jobs[:2])
    eng.evaluate(st)
    assert len(forks) >= 4  # the tiny base, the LoRA init, one client, one fused group: all seeded in scope
    assert forks == [[] for _ in forks], forks  # the CPU generator only, never a CUDA device
    assert calls == []


def test_workers_do_not_fork_from_a_process_with_a_cuda_context(tiny_cfg, monkeypatch, caplog):
    import fedsketch.engine.workers as workers

    eng = _engine(tiny_cfg())
    jobs = [ClientJob(*job) for job in _jobs(eng)]
    monkeypatch.setattr(type(eng), "train_client",
                        lambda self, state, client, rnd, indices, scale=None, lr=None: (os.getpid(), lr))
    monkeypatch.setattr(workers, "cuda_initialized", lambda: True)

    def no_fork(*a, **k):
        raise AssertionError("forked from a process with a CUDA context")

    monkeypatch.setattr(workers, "train_forked", no_fork)
    with caplog.at_level(logging.WARNING):
        got = eng.train_parallel(_state(eng, False), 1, jobs, 2)
    assert got == {job.client: (os.getpid(), None) for job in jobs}  # all trained here, in process
    assert "holds a CUDA context" in caplog.text and "train.workers=2" in caplog.text
    # the executor of a run with train.workers = 2: the same, each client at its plan's rate
    plan = RoundPlan(round=2, sampled=np.array([j.client for j in jobs]), sketches={j.client: j.indices for j in jobs},
                     lr={j.client: 0.1 * (1 + j.client) for j in jobs})
    got = InProcessExecutor(eng, client_batch=1, workers=2).execute(2, {}, plan)
    assert got == {j.client: (os.getpid(), 0.1 * (1 + j.client)) for j in jobs}
    monkeypatch.setattr(workers, "cuda_initialized", lambda: False)  # no CUDA context: the workers fork
    with pytest.raises(AssertionError, match="forked from"):
        eng.train_parallel({}, 1, jobs, 2)


def test_cuda_initialized_is_torchs_flag(monkeypatch):
    import fedsketch.engine.workers as workers

    for flag in (True, False):
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda flag=flag: flag)
        assert workers.cuda_initialized() is flag
