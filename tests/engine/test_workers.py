"""Clients trained side by side in forked processes (``train.workers``): the same uploads, bit for bit.

Oracle: ``TorchEngine.train_client`` in this process, one client after another, at the thread
count each worker uses (1 here). A client's update is a function of (state, client, round,
sketch, scale) and its named random streams only, so which process trains it cannot matter.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from fedsketch.runner.executor import InProcessExecutor, RoundPlan
from test_client_batch import _engine, _jobs, _state  # same directory: pytest puts it on sys.path


def _flat(u) -> np.ndarray:
    return np.concatenate([x.ravel() for m in sorted(u.delta) for x in u.delta[m]])


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("merged", [False, True], ids=["plain", "flora-merged"])
def test_forked_uploads_equal_sequential_bit_for_bit(tiny_cfg, merged, one_thread):
    eng = _engine(tiny_cfg("fl.local_steps=3", "train.momentum=0.9", "train.max_grad_norm=0.05"))
    st, jobs = _state(eng, merged), _jobs(eng)  # mixed k_n at r/k, HeteroLoRA prefixes at scale 1
    seq = {n: eng.train_client(st, n, 1, idx, scale=s) for n, idx, s in jobs}
    for W in (2, 3, 0):  # 0 = one per torch thread, here 1 worker
        got = eng.train_parallel(st, 1, jobs, W)
        assert sorted(got) == sorted(seq)
        for n, u in got.items():
            assert not isinstance(u, str), u
            assert u.client == n and u.round == 1 and u.num_examples == seq[n].num_examples
            assert all(np.array_equal(u.indices[m], seq[n].indices[m]) for m in eng.module_names)
            np.testing.assert_array_equal(_flat(u), _flat(seq[n]))
            assert u.train_loss == seq[n].train_loss
    assert np.abs(_flat(seq[0])).max() > 0  # the oracle trained something


def test_executor_sends_the_round_to_the_workers_with_each_clients_lr(tiny_cfg, one_thread):
    eng = _engine(tiny_cfg("fl.local_steps=2"))
    st, jobs = _state(eng, False), _jobs(eng)
    lr = {n: 0.5 * eng.settings.train.lr if n % 2 else 0.25 * eng.settings.train.lr for n, _, _ in jobs}
    plan = RoundPlan(round=2, sampled=np.array([n for n, _, _ in jobs]), sketches={n: idx for n, idx, _ in jobs},
                     scales={n: s for n, _, s in jobs if s is not None}, lr=lr)
    got = InProcessExecutor(eng, workers=2).execute(2, st, plan)
    for n, idx, s in jobs:
        np.testing.assert_array_equal(_flat(got[n]), _flat(eng.train_client(st, n, 2, idx, scale=s, lr=lr[n])))
    # a different step size gives a different upload: the check above can fail
    assert not np.array_equal(_flat(got[0]), _flat(eng.train_client(st, 0, 2, jobs[0][1], scale=jobs[0][2])))


def test_a_failing_client_fails_alone_and_a_dead_worker_fails_its_clients(tiny_cfg, one_thread, monkeypatch):
    eng = _engine(tiny_cfg("fl.local_steps=1"))
    st, jobs = _state(eng, False), _jobs(eng)
    bad = [(7, {"no.such.module": np.arange(2)}, None)]  # client 7 does not exist
    got = eng.train_parallel(st, 1, jobs + bad, 2)
    assert isinstance(got[7], str) and got[7].startswith(("IndexError", "KeyError"))
    assert all(not isinstance(got[n], str) for n, _, _ in jobs)

    real = type(eng).train_client

    def dies(self, state, client, rnd, indices, scale=None, lr=None):
        if client == 1:
            os._exit(3)  # the worker process dies (as under the OOM killer)
        return real(self, state, client, rnd, indices, scale=scale, lr=lr)

    monkeypatch.setattr(type(eng), "train_client", dies)  # the forked workers inherit it
    got = eng.train_parallel(st, 1, jobs, 2)
    assert sorted(got) == [n for n, _, _ in jobs]
    assert "BrokenProcessPool" in got[1]
    assert all(isinstance(u, str) or u.client == n for n, u in got.items())


def test_workers_run_one_thread_each_and_a_one_worker_round_stays_in_process(tiny_cfg, monkeypatch):
    """Every forked worker trains at one torch thread whatever the parent's count (more threads hang
    after fork under GNU OpenMP); a round that resolves to one worker runs here, at all threads."""
    eng = _engine(tiny_cfg())
    jobs = _jobs(eng)
    seen = {}

    def report(self, state, client, rnd, indices, scale=None, lr=None):
        return (os.getpid(), torch.get_num_threads())

    monkeypatch.setattr(type(eng), "train_client", report)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.randn(256, 256) @ torch.randn(256, 256)  # the parent has used its thread pool
        seen = eng.train_parallel({}, 1, jobs, 2)
        alone = eng.train_parallel({}, 1, jobs[:1], 0)
    finally:
        torch.set_num_threads(before)
    assert {t for _, t in seen.values()} == {1}
    assert os.getpid() not in {pid for pid, _ in seen.values()}
    assert alone[jobs[0][0]] == (os.getpid(), 2)


def test_run_with_workers_equals_the_one_process_run(tiny_cfg):
    """Whole runs (sampling, training, aggregation, evaluation): identical records at one thread per worker."""
    from fedsketch.runner import run_experiment

    common = ["fl.rounds=2", "train.threads=1", "fl.sampling='full'", "output.checkpoint_every=0"]
    before = torch.get_num_threads()
    try:
        one = run_experiment(tiny_cfg(*common, "output.name='one'"))
        two = run_experiment(tiny_cfg(*common, "train.workers=2", "output.name='two'"))
    finally:
        torch.set_num_threads(before)
    assert len(one.records) == len(two.records) == 3
    for a, b in zip(one.records, two.records, strict=True):
        wall = {"client_compute_seconds", "real_seconds", "eval_seconds", "seconds"}  # wall-clock fields differ
        assert {k: v for k, v in a.to_dict().items() if k not in wall} == \
            {k: v for k, v in b.to_dict().items() if k not in wall}
        assert a.accuracy == b.accuracy and a.test_loss == b.test_loss
    assert len(one.records[1].sampled) > 1  # more than one client a round: the workers ran in parallel
    for m in one.state:
        for x, y in zip(one.state[m], two.state[m], strict=True):
            np.testing.assert_array_equal(x, y)


def test_workers_are_validated(tiny_cfg):
    from fedsketch.config import ConfigError

    with pytest.raises(ConfigError, match="train.workers: 2 forked workers and train.client_batch=0"):
        tiny_cfg("train.workers=2", "train.client_batch=0")
    with pytest.raises(ConfigError, match="train.workers: forked workers need train.device='cpu'"):
        tiny_cfg("train.workers=2", "train.device='cuda'")
    with pytest.raises(ConfigError, match=r"train.workers: -1 is out of range"):
        tiny_cfg("train.workers=-1")
    assert tiny_cfg("train.workers=4").train.workers == 4
    # auto (0) steps aside by itself: next to fused clients, on a GPU
    assert tiny_cfg("train.workers=0", "train.client_batch=0").train.workers == 0
    assert tiny_cfg("train.workers=0", "train.device='cuda'").train.device == "cuda"


def test_auto_workers_step_aside_where_they_cannot_fork_and_for_fused_clients(tiny_cfg, monkeypatch):
    import fedsketch.engine.workers as workers

    eng = _engine(tiny_cfg())
    jobs = _jobs(eng)
    monkeypatch.setattr(type(eng), "train_client",
                        lambda self, state, client, rnd, indices, scale=None, lr=None: os.getpid())
    monkeypatch.setattr(workers, "fork_usable", lambda device_type: False)  # a GPU engine, or no fork here
    assert set(eng.train_parallel({}, 1, jobs, 0).values()) == {os.getpid()}  # in process
    with pytest.raises(RuntimeError, match="train.workers=2 needs the CPU engine"):
        eng.train_parallel({}, 1, jobs, 2)
    monkeypatch.undo()

    class Fused:  # the executor hands fused groups to train_clients even with auto workers
        module_names: list = []

        def train_clients(self, state, rnd, chunk):
            return [type("U", (), {"client": job.client})() for job in chunk]

        def train_parallel(self, *a):
            raise AssertionError("auto workers must not take a round of fused clients")

    plan = RoundPlan(round=1, sampled=np.array([0, 1]), sketches={0: {}, 1: {}})
    assert sorted(InProcessExecutor(Fused(), client_batch=0, workers=0).execute(1, {}, plan)) == [0, 1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_parent(tmp_path):
    """kill -9 of the run (or the OOM killer) takes its forked workers with it: none is left
    blocked on the pool's pipes under init."""
    import signal
    import subprocess
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from fedsketch.engine.workers import train_forked\n"
        "class Slow:\n"
        "    def train_client(self, state, client, rnd, indices, scale=None, lr=None):\n"
        f"        open(os.path.join({str(tmp_path)!r}, f'pid{{client}}'), 'w').write(str(os.getpid()))\n"
        "        time.sleep(120)\n"
        "train_forked(Slow(), {}, 1, [(0, {}, None), (1, {}, None)], 2)\n")
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.time() + 60
        while len(list(tmp_path.glob("pid*"))) < 2 and time.time() < deadline:
            time.sleep(0.1)
        pids = [int(p.read_text()) for p in tmp_path.glob("pid*") if p.read_text()]
        assert len(pids) == 2
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.time() + 10
        while any(_alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)]
    finally:
        parent.kill()
        for p in tmp_path.glob("pid*"):  # a survivor (the bug this guards against) is not left behind
            text = p.read_text()
            if text.isdigit() and int(text) > 1 and _alive(int(text)):
                os.kill(int(text), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead, waiting for its reaper
    except FileNotFoundError:
        return False
