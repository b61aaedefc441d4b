"""The clients of a run as Flower nodes: a :class:`~fedsketch.runner.executor.ClientExecutor`.

Nothing of the algorithm is re-implemented here: the :class:`~fedsketch.runner.run.Run` samples,
sketches, validates, aggregates and times the round exactly as in process. Per round
:meth:`FlowerExecutor.execute` sends each sampled client's node its own ``ConfigRecord``
(q_n, k_n, index sets, LoRA scale) with the global adapter ``X_t``, and turns the replies into
uploads. Error replies, malformed replies and replies that did not arrive before the timeout
become failure reasons that the run records (the round aggregates the others; the estimator
stays the paper's eq. 6 over the clients that did reply — failures are reported, not re-weighted).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedsketch.flower import codec
from fedsketch.runner.executor import RoundPlan
from fedsketch.sketch import ClientUpdate, LoraState


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


def discover(
    grid: Grid, num_clients: int, *, wait: float = 120.0, timeout: float = 120.0, known: dict[int, int] | None = None
) -> dict[int, int]:
    """Map client (partition) ids to node ids by QUERY messages.

    Waits up to ``wait`` seconds for ``num_clients`` nodes to connect, queries every node not
    yet in ``known`` (node id -> client id) and returns ``{client: node}``. Nodes that reply
    with an error, an out-of-range or a duplicate partition id are left out (a warning is
    logged); clients without a node fail when they are sampled.
    """
    from logging import WARNING

    from flwr.supercore import log

    known = dict(known or {})
    deadline = time.monotonic() + wait
    nodes = set(grid.get_node_ids())
    while len(nodes) < num_clients and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = set(grid.get_node_ids())
    todo = sorted(nodes - set(known))
    msgs = [
        Message(
            RecordDict({codec.NODE: ConfigRecord({"ask": "partition-id"})}),
            dst_node_id=nid,
            message_type=MessageType.QUERY,
        )
        for nid in todo
    ]
    for rep in exchange(grid, msgs, timeout):
        nid = rep.metadata.src_node_id
        if rep.has_error():
            log(WARNING, "node %s: discovery failed: %s", nid, rep.error.reason)
            continue
        known[nid] = int(
            codec.number(codec.record(rep.content, codec.NODE, ConfigRecord)["partition-id"], "partition-id")
        )
    out: dict[int, int] = {}
    for nid, n in sorted(known.items()):
        if not 0 <= n < num_clients:
            log(WARNING, "node %s serves partition %s, outside 0..%s; ignored", nid, n, num_clients - 1)
        elif n in out:
            log(WARNING, "partition %s served by nodes %s and %s; keeping the first", n, out[n], nid)
        else:
            out[n] = nid
    return out


class FlowerExecutor:
    """Train a round's sketches on the Flower nodes of ``grid``.

    Parameters
    ----------
    grid : Grid
    cfg_text : str
        The resolved config as TOML, sent to the nodes (they build their engine from it).
    node_of : dict
        ``{client id: node id}`` from :func:`discover` (refreshed for late joiners each round).
    num_clients : int
        Clients of the run; while fewer have a node, every round first looks for new nodes.
    timeout, poll : float
        Seconds to wait for the train replies of a round, and between pulls.
    faults : dict, optional
        ``{client id: "raise" | "sleep:<seconds>"}`` fault injection (tests and drills).
    """

    def __init__(
        self,
        grid: Grid,
        cfg_text: str,
        node_of: dict[int, int],
        num_clients: int,
        timeout: float = 3600.0,
        poll: float = 0.05,
        faults: dict[int, str] | None = None,
    ) -> None:
        self.grid, self.cfg_text, self.node_of, self.num_clients = grid, cfg_text, dict(node_of), num_clients
        self.timeout, self.poll, self.faults = timeout, poll, dict(faults or {})

    def execute(self, t: int, state: LoraState, plan: RoundPlan) -> dict[int, ClientUpdate | str]:
        if len(self.node_of) < self.num_clients:  # late joiners (deployment)
            known = {nid: n for n, nid in self.node_of.items()}
            self.node_of = discover(self.grid, self.num_clients, wait=0.0, timeout=self.timeout, known=known)
        msgs, unreachable = self.messages(plan, state)
        return self.results(plan, exchange(self.grid, msgs, self.timeout, self.poll), unreachable)

    def messages(self, plan: RoundPlan, state: LoraState) -> tuple[list[Message], dict[int, str]]:
        """One TRAIN message per sampled client with a node; failure reasons for the others."""
        arrays = codec.state_to_arrays(state)
        msgs, unreachable = [], {}
        for n, idx in plan.sketches.items():
            nid = self.node_of.get(n)
            if nid is None:
                unreachable[n] = "no node serves this client"
                continue
            ins = codec.train_instruction(
                self.cfg_text, plan.round, n, plan.q[n], idx, self.faults.get(n, ""), plan.scales.get(n), plan.lr.get(n)
            )
            msgs.append(
                Message(
                    RecordDict({codec.GLOBAL: arrays, codec.TRAIN: ins}),
                    dst_node_id=nid,
                    message_type=MessageType.TRAIN,
                )
            )
        return msgs, unreachable

    def results(
        self, plan: RoundPlan, replies: Iterable[Message], unreachable: dict[int, str]
    ) -> dict[int, ClientUpdate | str]:
        """Every sampled client -> its upload, or why it failed."""
        client_of = {nid: n for n, nid in self.node_of.items()}
        results: dict[int, ClientUpdate | str] = dict(unreachable)
        for rep in replies:
            n = client_of.get(rep.metadata.src_node_id)
            if n is None or n not in plan.sketches:
                continue  # a stray reply (e.g. from an earlier, timed-out round)
            if rep.has_error():
                results[n] = f"client error (code {rep.error.code}): {rep.error.reason}"
                continue
            try:
                c = rep.content
                results[n] = codec.records_to_update(
                    codec.record(c, codec.UPDATE, ArrayRecord),
                    codec.record(c, codec.INDICES, ConfigRecord),
                    codec.record(c, codec.METRICS, MetricRecord),
                )
            except Exception as e:  # noqa: BLE001 - a malformed reply is a failed client
                results[n] = f"malformed reply: {type(e).__name__}: {e}"
        for n in plan.sketches:
            results.setdefault(n, f"timeout: no reply within {self.timeout:g} s")
        return results
