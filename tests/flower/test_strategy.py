"""SketchStrategy with a fake grid (no Ray): error, missing, malformed and stray replies."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Error, Message, RecordDict  # noqa: E402

from fedsketch.config import load_config  # noqa: E402
from fedsketch.flower import codec  # noqa: E402
from fedsketch.flower.strategy import SketchStrategy, exchange  # noqa: E402
from fedsketch.network import sketch_times  # noqa: E402
from fedsketch.network.profiles import profiles_from_config  # noqa: E402
from fedsketch.rng import Streams  # noqa: E402
from fedsketch.server import finish_round, plan_round  # noqa: E402
from fedsketch.sketch import ClientUpdate  # noqa: E402
from fedsketch.strategies import Federation, resolve_allocation  # noqa: E402

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


def _setup():
    cfg = load_config(None, ["data.num_clients=4", "fl.sampling='full'", "fl.ranks='fixed'", "fl.k=2",
                             f"lora.rank={R}"])
    profiles = profiles_from_config(cfg, payload_mbit=1.0)
    fed = Federation(p=np.full(4, 0.25), profiles=profiles, cfg=cfg, streams=Streams(cfg.seed))
    alloc = resolve_allocation(fed)
    t_cp, t_cm = sketch_times(profiles, alloc.k, R, cfg.network.compute_model)
    rng = np.random.default_rng(0)
    state = {m: (rng.normal(size=(D, R)).astype(np.float32), rng.normal(size=(R, M)).astype(np.float32))
             for m in MODULES}
    return cfg, fed, alloc, t_cp, t_cm, state


def test_error_silent_malformed_and_unreachable_clients():
    cfg, fed, alloc, t_cp, t_cm, state = _setup()
    node_of = {0: 100, 1: 101, 2: 102}  # client 3 has no node
    grid = FakeGrid({100: "ok", 101: "error", 102: "silent"})
    strat = SketchStrategy(fed, alloc, t_cp, t_cm, MODULES, "seed = 0\n", node_of, timeout=0.2)
    msgs = list(strat.configure_train(1, codec.state_to_arrays(state), ConfigRecord(), grid))
    assert sorted(m.metadata.dst_node_id for m in msgs) == [100, 101, 102]
    ins = {m.metadata.dst_node_id: m.content[codec.TRAIN] for m in msgs}
    assert ins[100]["q"] == pytest.approx(float(alloc.q[0])) and ins[100]["k"] == 2
    assert sorted(k for k in ins[100] if k.startswith(codec.IDX)) == [codec.IDX + m for m in MODULES]
    replies = exchange(grid, msgs, timeout=0.2)
    arrays, metrics = strat.aggregate_train(1, replies)
    rec = strat.last_record
    reasons = {f["client"]: f["reason"] for f in rec["failed"]}
    assert set(reasons) == {1, 2, 3}
    assert "boom" in reasons[1] and reasons[2].startswith("timeout") and "no node" in reasons[3]
    assert metrics["num_failed"] == 3 and metrics["num_sampled"] == 4
    # the aggregate equals finish_round applied to the one good upload (same function, same weights)
    plan = plan_round(1, fed, alloc, MODULES)
    idx = plan.sketches[0]
    good = ClientUpdate(0, 1, idx, {m: (np.full((D, 2), 0.1, np.float32), np.full((2, M), 0.2, np.float32))
                                    for m in MODULES}, 4, 1.5, 0.01)
    want, want_rec = finish_round(plan, state, {0: good}, fed, alloc, t_cp, t_cm)
    got = codec.arrays_to_state(arrays)
    for m in MODULES:
        np.testing.assert_array_equal(got[m][0], want[m][0])
        np.testing.assert_array_equal(got[m][1], want[m][1])
    assert rec["round_sim_seconds"] == want_rec["round_sim_seconds"]


def test_malformed_reply_is_a_failure():
    cfg, fed, alloc, t_cp, t_cm, state = _setup()
    grid = FakeGrid({100: "bad", 101: "ok", 102: "ok", 103: "ok"})
    strat = SketchStrategy(fed, alloc, t_cp, t_cm, MODULES, "", {0: 100, 1: 101, 2: 102, 3: 103}, timeout=1.0)
    msgs = strat.configure_train(1, codec.state_to_arrays(state), ConfigRecord(), grid)
    strat.aggregate_train(1, exchange(grid, msgs, timeout=1.0))
    failed = strat.last_record["failed"]
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
