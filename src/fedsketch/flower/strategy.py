"""A Flower ``Strategy`` that runs fedsketch's own round: plan -> per-node messages -> finish.

Nothing of the algorithm is re-implemented here. Per round the strategy calls

* :func:`fedsketch.server.plan_round` — independent Bernoulli(q_n) coins and one sketch per
  sampled client (PAPER.md Algorithm 1 lines 2 and 5, eqs. 3 and 6);
* sends each sampled client's node its own ``ConfigRecord`` (q_n, k_n, index sets) with the
  global adapter ``X_t``;
* :func:`fedsketch.server.finish_round` — validation, the unbiased ``p_n / q_n`` aggregation of
  eq. 6 and the equal-finish simulated round time of eq. 10.

Error replies and replies that did not arrive before the timeout become failure reasons that
``finish_round`` records (the round aggregates the others; the estimator stays the paper's
eq. 6 over the clients that did reply — failures are reported, not re-weighted).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsketch.flower import codec
from fedsketch.server import RoundPlan, finish_round, plan_round
from fedsketch.sketch import ClientUpdate, LoraState
from fedsketch.strategies import Allocation, Federation


def exchange(grid: Grid, messages: Iterable[Message], timeout: float, poll: float = 0.05) -> list[Message]:
    """Push ``messages`` and pull replies until all arrived or ``timeout`` seconds passed.

    Like ``Grid.send_and_receive`` but with a short poll interval: the deployment grid's own
    loop sleeps 3 s between pulls, which would quantise every round to multiples of 3 s.
    """
    msgs = list(messages)
    if not msgs:
        return []
    pending = set(grid.push_messages(msgs))
    replies: list[Message] = []
    end = time.monotonic() + timeout
    while pending:
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if not pending or time.monotonic() >= end:
            break
        time.sleep(poll)
    return replies


def discover(grid: Grid, num_clients: int, *, wait: float = 120.0, timeout: float = 120.0,
             known: dict[int, int] | None = None) -> dict[int, int]:
    """Map client (partition) ids to node ids by QUERY messages.

    Waits up to ``wait`` seconds for ``num_clients`` nodes to connect, queries every node not
    yet in ``known`` (node id -> client id) and returns ``{client: node}``. Nodes that reply
    with an error, an out-of-range or a duplicate partition id are left out (a warning is
    logged); clients without a node fail when they are sampled.
    """
    from flwr.supercore import log
    from logging import WARNING

    known = dict(known or {})
    deadline = time.monotonic() + wait
    nodes = set(grid.get_node_ids())
    while len(nodes) < num_clients and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = set(grid.get_node_ids())
    todo = sorted(nodes - set(known))
    msgs = [Message(RecordDict({codec.NODE: ConfigRecord({"ask": "partition-id"})}), dst_node_id=nid,
                    message_type=MessageType.QUERY) for nid in todo]
    for rep in exchange(grid, msgs, timeout):
        nid = rep.metadata.src_node_id
        if rep.has_error():
            log(WARNING, "node %s: discovery failed: %s", nid, rep.error.reason)
            continue
        known[nid] = int(rep.content[codec.NODE]["partition-id"])
    out: dict[int, int] = {}
    for nid, n in sorted(known.items()):
        if not 0 <= n < num_clients:
            log(WARNING, "node %s serves partition %s, outside 0..%s; ignored", nid, n, num_clients - 1)
        elif n in out:
            log(WARNING, "partition %s served by nodes %s and %s; keeping the first", n, out[n], nid)
        else:
            out[n] = nid
    return out


class SketchStrategy(Strategy):
    """Independent-sampling sketched-LoRA strategy driving fedsketch's round functions.

    Parameters
    ----------
    fed, alloc, t_cp, t_cm
        As returned by :func:`fedsketch.server.prepare` (client weights p_n, profiles, the
        allocation (q_n, k_n), and per-client compute/communication times for eq. 10).
    module_names : list of str
        Adapted modules (``engine.module_names``), in the engine's order.
    cfg_text : str
        The resolved config as TOML, sent to the nodes (they build their engine from it).
    node_of : dict
        ``{client id: node id}`` from :func:`discover`.
    timeout : float
        Seconds to wait for the train replies of a round.
    faults : dict, optional
        ``{client id: "raise" | "sleep:<seconds>"}`` fault injection (tests and drills).
    """

    def __init__(self, fed: Federation, alloc: Allocation, t_cp: np.ndarray, t_cm: np.ndarray,
                 module_names: list[str], cfg_text: str, node_of: dict[int, int], timeout: float = 3600.0,
                 faults: dict[int, str] | None = None) -> None:
        self.fed, self.alloc, self.t_cp, self.t_cm = fed, alloc, t_cp, t_cm
        self.module_names, self.cfg_text = module_names, cfg_text
        self.node_of = dict(node_of)
        self.timeout = timeout
        self.faults = dict(faults or {})
        self.state: LoraState | None = None  # X_t of the round in flight, then X_{t+1}
        self.plan: RoundPlan | None = None
        self.unreachable: dict[int, str] = {}
        self.last_record: dict[str, Any] | None = None

    @property
    def client_of(self) -> dict[int, int]:
        return {nid: n for n, nid in self.node_of.items()}

    # ------------------------------------------------------------------ train

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Plan the round (coins + sketches) and build one message per sampled, reachable client."""
        self.state = codec.arrays_to_state(arrays)
        self.plan = plan_round(server_round, self.fed, self.alloc, self.module_names)
        self.unreachable = {}
        msgs = []
        for n, idx in self.plan.sketches.items():
            nid = self.node_of.get(n)
            if nid is None:
                self.unreachable[n] = "no node serves this client"
                continue
            scale = getattr(self.plan, "scales", {}).get(n)  # per-client LoRA scale, if the plan sets one
            ins = codec.train_instruction(self.cfg_text, server_round, n, float(self.alloc.q[n]), idx,
                                          self.faults.get(n, ""), scale,
                                          float(self.alloc.info.get("lr_scale", 1.0)))
            msgs.append(Message(RecordDict({codec.GLOBAL: arrays, codec.TRAIN: ins}), dst_node_id=nid,
                                message_type=MessageType.TRAIN))
        return msgs

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Turn replies into uploads / failure reasons and call ``finish_round`` (eqs. 6, 10)."""
        if self.plan is None or self.state is None or self.plan.round != server_round:
            raise RuntimeError(f"aggregate_train({server_round}) without configure_train for that round")
        client_of = self.client_of
        results: dict[int, ClientUpdate | str] = dict(self.unreachable)
        for rep in replies:
            n = client_of.get(rep.metadata.src_node_id)
            if n is None or n not in self.plan.sketches:
                continue  # a stray reply (e.g. from an earlier, timed-out round)
            if rep.has_error():
                results[n] = f"client error (code {rep.error.code}): {rep.error.reason}"
                continue
            try:
                c = rep.content
                results[n] = codec.records_to_update(c[codec.UPDATE], c[codec.INDICES], c[codec.METRICS])
            except Exception as e:  # noqa: BLE001 - a malformed reply is a failed client
                results[n] = f"malformed reply: {type(e).__name__}: {e}"
        for n in self.plan.sketches:
            results.setdefault(n, f"timeout: no reply within {self.timeout:g} s")
        self.state, rec = finish_round(self.plan, self.state, results, self.fed, self.alloc, self.t_cp, self.t_cm)
        self.last_record = rec
        m = {"round_sim_seconds": float(rec["round_sim_seconds"]), "num_sampled": len(rec["sampled"]),
             "num_failed": len(rec["failed"]), "uploaded_bytes": int(rec["uploaded_bytes"])}
        if rec["train_loss"] is not None:
            m["train_loss"] = float(rec["train_loss"])
        return codec.state_to_arrays(self.state), MetricRecord(m)

    # ------------------------------------------------------------------ evaluate (central, not here)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        from logging import INFO

        from flwr.supercore import log

        q, k = np.asarray(self.alloc.q), np.asarray(self.alloc.k)
        log(INFO, "\t├── fedsketch SketchStrategy: %d clients, %d with a node", len(q), len(self.node_of))
        log(INFO, "\t├── q in [%.3f, %.3f] (expected %.1f sampled per round)", q.min(), q.max(), q.sum())
        log(INFO, "\t└── k in [%d, %d] of r=%d", k.min(), k.max(), self.fed.cfg.lora.rank)
