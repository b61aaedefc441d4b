"""The fedsketch ``ClientApp``: a node that trains the sketch the server issued (eqs. 7–8).

Handlers
--------
``@app.query()``
    Discovery: replies with the partition (client) id this node serves, read from its node
    config (``partition-id``; in simulation Flower sets it, in deployment pass
    ``flower-supernode --node-config "partition-id=N num-partitions=M"``).
``@app.train()``
    Decodes the global adapter ``X_t`` and the node's instruction (round, client, q_n, k_n,
    sketch indices, LoRA scale, learning rate, the resolved config as TOML), runs
    :meth:`fedsketch.engine.runtime.TorchEngine.train_client` and replies with the compact
    blocks ``(B_H[:, I] - B_t[:, I], A_H[I, :] - A_t[I, :])`` of eq. 8, the echoed indices, and
    the loss / compute seconds. Exceptions propagate: Flower turns them into an error reply
    that the server records as a failed client for the round.

Engine lifetime
---------------
The engine (base model + LoRA + tokenised data) is cached at module level, keyed by the
config hash. In simulation the Ray actors persist, so each actor loads the model once and
serves many nodes and rounds. In deployment each message starts a fresh ``flwr-clientapp``
process, so the cache is empty every time and the model and data are reloaded per round
(for a 135M model this is seconds; for multi-GB models it dominates the round — see
docs/flower.md).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.typing import ConfigRecordValues
from flwr.clientapp import ClientApp

from fedsketch.flower import codec

app = ClientApp()

_LOCK = threading.Lock()
_CACHE: dict[str, Any] = {}  # config hash -> TorchEngine (at most one kept)
STATS = {"engine_loads": 0}


def partition_of(context: Context) -> int:
    """The client (partition) id of this node, from ``node_config["partition-id"]``."""
    nc = context.node_config
    if "partition-id" not in nc:
        raise KeyError(
            "node_config has no 'partition-id'; start the SuperNode with "
            '--node-config "partition-id=N num-partitions=M"'
        )
    return int(nc["partition-id"])


def get_engine(cfg_text: str, data_dir: str | None = None) -> Any:
    """The cached engine for this config (built on first use; one entry kept).

    ``data_dir`` (from the node config key ``data-dir``) makes the node read a local folder
    (``data.source = "local"``, ``data.data_dir``) when it keeps the data elsewhere than the server.
    """
    cfg = codec.config_from_text(cfg_text)
    if data_dir:
        cfg = cfg.replace(data=dataclasses.replace(cfg.data, source="local", data_dir=data_dir))
    key = cfg.hash()
    with _LOCK:
        eng = _CACHE.get(key)
        if eng is None:
            from fedsketch.data import build_federated_data
            from fedsketch.engine.runtime import TorchEngine
            from fedsketch.rng import Streams
            from fedsketch.runner.build import engine_settings

            _CACHE.clear()
            data = build_federated_data(cfg, load_test=False)
            eng = TorchEngine(engine_settings(cfg), data.train, data.test, data.parts, Streams(cfg.seed))
            _CACHE[key] = eng
            STATS["engine_loads"] += 1
        return eng


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Discovery reply: ``partition-id`` and ``num-partitions`` of this node."""
    nc = context.node_config
    body: dict[str, ConfigRecordValues] = {
        "partition-id": partition_of(context),
        "num-partitions": int(nc.get("num-partitions", -1)),
    }
    return Message(RecordDict({codec.NODE: ConfigRecord(body)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local sketched training of the instructed client (Algorithm 1 lines 6–9)."""
    ins = codec.record(msg.content, codec.TRAIN, ConfigRecord)
    client, rnd = int(codec.number(ins["client"], "client")), int(codec.number(ins["round"], "round"))
    mine = partition_of(context)
    if client != mine:
        raise ValueError(f"instruction for client {client} reached the node of partition {mine}")
    fault = str(ins.get("fault", ""))
    if fault == "raise":  # fault injection (tests, drills)
        raise RuntimeError(f"injected fault in client {client}, round {rnd}")
    if fault.startswith("sleep:"):
        time.sleep(float(fault.split(":", 1)[1]))
    engine = get_engine(str(ins["config"]), context.node_config.get("data-dir"))  # type: ignore[arg-type]
    state = codec.arrays_to_state(codec.record(msg.content, codec.GLOBAL, ArrayRecord))
    # LoRA scale; SGD rate (PAPER.md §8.2)
    kw = {key: float(codec.number(ins[key], key)) for key in ("scale", "lr") if key in ins}
    upd = engine.train_client(state, client, rnd, codec.config_to_indices(ins), **kw)
    blocks, idx, metrics = codec.update_to_records(upd)
    metrics["engine_loads"] = STATS["engine_loads"]
    return Message(RecordDict({codec.UPDATE: blocks, codec.INDICES: idx, codec.METRICS: metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Unused: evaluation is central (server side). Replies with an empty metric record."""
    return Message(RecordDict({codec.METRICS: MetricRecord({})}), reply_to=msg)
