"""FlowerExecutor with a fake grid (no Ray): error, missing, malformed and stray replies."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Error, Message, RecordDict  # noqa: E402

from fedsketch.config import load_config  # noqa: E402
from fedsketch.flower import codec  # noqa: E402
from fedsketch.flower.executor import FlowerExecutor  # noqa: E402
from fedsketch.network import sketch_times  # noqa: E402
from fedsketch.runner.build import federation, method_from_config, profiles_from_config  # noqa: E402
from fedsketch.runner.executor import InProcessExecutor  # noqa: E402
from fedsketch.runner.run import Run, Schedule  # noqa: E402
from fedsketch.sketch import ClientUpdate  # noqa: E402
from fedsketch.strategies import resolve_allocation  # noqa: E402

MODULES = ["l0.q", "l0.v"]


@pytest.fixture(autouse=True)
def task_identity():
    """Messages take run/node/task ids from the process's task identity (set by Flower's runtime)."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
D, M, R = 6, 5, 4


class FakeGrid:
    """Replies per node: 'ok' (a valid upload), 'error', 'silent' (never replies), 'bad' (malformed)."""

    def __init__(self, behaviour: dict[int, str]) -> None:
        self.behaviour, self.replies, self.pushed = behaviour, {}, []

    def get_node_ids(self):
        return list(self.behaviour)

    def push_messages(self, messages):
        ids = []
        for i, msg in enumerate(messages):
            mid = f"m{len(self.pushed)}-{i}"
            msg.metadata.__dict__["_message_id"] = mid
            self.pushed.append(msg)
            ids.append(mid)
            kind = self.behaviour[msg.metadata.dst_node_id]
            if kind == "silent":
                continue
            ins = msg.content[codec.TRAIN]
            if kind == "error":
                rep = Message(Error(code=1, reason="boom"), reply_to=msg)
            elif kind == "bad":
                rep = Message(RecordDict({codec.METRICS: codec.MetricRecord({})}), reply_to=msg)
            else:
                idx = codec.config_to_indices(ins)
                delta = {m: (np.full((D, len(i)), 0.1, np.float32), np.full((len(i), M), 0.2, np.float32))
                         for m, i in idx.items()}
                u = ClientUpdate(int(ins["client"]), int(ins["round"]), idx, delta, 4, 1.5, 0.01)
                b, c, mt = codec.update_to_records(u)
                rep = Message(RecordDict({codec.UPDATE: b, codec.INDICES: c, codec.METRICS: mt}), reply_to=msg)
            self.replies[mid] = rep
        return ids

    def pull_messages(self, ids):
        return [self.replies.pop(i) for i in list(ids) if i in self.replies]


def _config():
    return load_config(None, ["data.num_clients=4", "fl.sampling='full'", "fl.ranks='fixed'", "fl.k=2",
                              f"lora.rank={R}"])


def _setup():
    cfg = _config()
    profiles = profiles_from_config(cfg, payload_mbit=1.0)
    fed = federation(cfg, np.full(4, 0.25), profiles)
    alloc = resolve_allocation(fed)
    t_cp, t_cm = sketch_times(profiles, alloc.k, R, cfg.network.compute_model)
    rng = np.random.default_rng(0)
    state = {m: (rng.normal(size=(D, R)).astype(np.float32), rng.normal(size=(R, M)).astype(np.float32))
             for m in MODULES}
    return cfg, fed, alloc, t_cp, t_cm, state


class _Modules:
    module_names = MODULES


def _run(fed, alloc, t_cp, t_cm, state, executor):
    """A bare Run at X_t = ``state`` whose clients are ``executor``."""
    return Run(method=method_from_config(_config(), fed, alloc), alloc=alloc, t_cp=t_cp, t_cm=t_cm, r=R,
               streams=fed.streams, schedule=Schedule(rounds=10), engine=_Modules(), executor=executor,
               probe=lambda t, s: {}, x0=state)


def _round(run, t):
    """The run's round up to the record (no evaluation or folder): plan, train, validate, aggregate, account."""
    plan = run.plan(t)
    updates, failed = run.validate(plan, run.executor.execute(t, run.state, plan))
    run.aggregate(updates)
    return run.account(plan, updates, failed)


def test_error_silent_malformed_and_unreachable_clients():
    cfg, fed, alloc, t_cp, t_cm, state = _setup()
    node_of = {0: 100, 1: 101, 2: 102}  # client 3 has no node
    grid = FakeGrid({100: "ok", 101: "error", 102: "silent"})
    nodes = FlowerExecutor(grid, "seed = 0\n", node_of, num_clients=4, timeout=0.2)
    run = _run(fed, alloc, t_cp, t_cm, state, nodes)
    plan = run.plan(1)
    msgs, unreachable = nodes.messages(plan, state)
    assert sorted(m.metadata.dst_node_id for m in msgs) == [100, 101, 102] and set(unreachable) == {3}
    ins = {m.metadata.dst_node_id: m.content[codec.TRAIN] for m in msgs}
    assert ins[100]["q"] == pytest.approx(float(alloc.q[0])) and ins[100]["k"] == 2
    assert sorted(k for k in ins[100] if k.startswith(codec.IDX)) == [codec.IDX + m for m in MODULES]
    rec = _round(run, 1)
    reasons = {f["client"]: f["reason"] for f in rec.failed}
    assert set(reasons) == {1, 2, 3}
    assert "boom" in reasons[1] and reasons[2].startswith("timeout") and "no node" in reasons[3]
    assert len(rec.sampled) == 4
    # the aggregate equals the in-process round with only client 0's upload arriving
    idx = plan.sketches[0]
    good = ClientUpdate(0, 1, idx, {m: (np.full((D, 2), 0.1, np.float32), np.full((2, M), 0.2, np.float32))
                                    for m in MODULES}, 4, 1.5, 0.01)

    class OnlyZero:
        def train_client(self, state, n, t, issued, scale=None, lr=None):
            if n != 0:
                raise RuntimeError("down")
            return good

    ref = _run(fed, alloc, t_cp, t_cm, state, InProcessExecutor(OnlyZero()))
    want_rec = _round(ref, 1)
    for m in MODULES:
        np.testing.assert_array_equal(run.state[m][0], ref.state[m][0])
        np.testing.assert_array_equal(run.state[m][1], ref.state[m][1])
    # and by hand: X + (p_0/q_0) Delta_0 scattered into the issued columns / rows (eq. 6)
    w = fed.p[0] / alloc.q[0]
    for m in MODULES:
        B = state[m][0].copy()
        B[:, idx[m]] += w * good.delta[m][0]
        np.testing.assert_allclose(run.state[m][0], B, rtol=1e-6)
    assert rec.round_sim_seconds == want_rec.round_sim_seconds


def test_malformed_reply_is_a_failure():
    cfg, fed, alloc, t_cp, t_cm, state = _setup()
    grid = FakeGrid({100: "bad", 101: "ok", 102: "ok", 103: "ok"})
    nodes = FlowerExecutor(grid, "", {0: 100, 1: 101, 2: 102, 3: 103}, num_clients=4, timeout=1.0)
    failed = _round(_run(fed, alloc, t_cp, t_cm, state, nodes), 1).failed
    assert [f["client"] for f in failed] == [0] and "malformed" in failed[0]["reason"]


def test_state_codec_roundtrip_is_exact():
    rng = np.random.default_rng(1)
    st = {m: (rng.normal(size=(D, R)).astype(np.float32), rng.normal(size=(R, M)).astype(np.float32)) for m in MODULES}
    back = codec.arrays_to_state(codec.state_to_arrays(st))
    assert list(back) == MODULES
    for m in MODULES:
        assert back[m][0].dtype == np.float32
        np.testing.assert_array_equal(back[m][0], st[m][0])
        np.testing.assert_array_equal(back[m][1], st[m][1])
