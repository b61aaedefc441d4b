"""The fedsketch ``ServerApp``: discovery, the round loop, and the run folder.

The loop is the in-process one with the client execution replaced by Flower messages:
:func:`fedsketch.server.open_run` (prepare, config.toml, run.json, resume or round-0
evaluation) -> per round ``SketchStrategy.configure_train`` / :func:`exchange` /
``SketchStrategy.aggregate_train`` -> :func:`fedsketch.server.commit_round` (clock,
evaluation, metrics.jsonl, checkpoint) -> :func:`fedsketch.server.close_run` (adapter, plot).

Configuration
-------------
``run_flower`` (simulation, same process) hands the resolved config over through
:data:`HANDOFF`. In deployment (``flwr run``), the ServerApp reads the run config
(``[tool.flwr.app.config]`` or ``flwr run --run-config``):

``config``
    Path of a fedsketch TOML config (required; absolute, or relative to the ServerApp's cwd).
``overrides``
    ``;``-separated ``section.key=value`` overrides (optional).
``fresh``
    Ignore an existing checkpoint (default false).
``round-timeout``
    Seconds to wait for a round's train replies (default 3600).
``discovery-wait``
    Seconds to wait for ``data.num_clients`` nodes to connect (default 120).
``poll-interval``
    Seconds between pulls of replies (default 0.25).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from fedsketch.config import ExperimentConfig, load_config
from fedsketch.flower import codec
from fedsketch.flower.strategy import SketchStrategy, discover, exchange
from fedsketch.server import RunResult, close_run, commit_round, open_run


@dataclass
class ServerOptions:
    """What the ServerApp needs besides the Flower context."""

    cfg: ExperimentConfig
    fresh: bool = False
    round_timeout: float = 3600.0
    discovery_wait: float = 120.0
    poll_interval: float = 0.05
    faults: dict[int, str] = field(default_factory=dict)
    result: RunResult | None = None  # filled in by the ServerApp
    round_wall_seconds: list[float] = field(default_factory=list)
    discovery_seconds: float = 0.0


HANDOFF: ServerOptions | None = None  # set by run_flower (simulation runs the ServerApp in-process)

app = ServerApp()


def options_from_context(context: Context) -> ServerOptions:
    """The options of this run: the in-process handoff if set, else the run config."""
    if HANDOFF is not None:
        return HANDOFF
    rc = context.run_config
    if "config" not in rc or not str(rc["config"]):
        raise ValueError("run config key 'config' (path of a fedsketch TOML config) is required, e.g. "
                         "flwr run . <connection> --run-config \"config='/abs/path/exp.toml'\"")
    overrides = [s.strip() for s in str(rc.get("overrides", "")).split(";") if s.strip()]
    cfg = load_config(Path(str(rc["config"])), overrides)
    return ServerOptions(cfg=cfg, fresh=bool(rc.get("fresh", False)),
                         round_timeout=float(rc.get("round-timeout", 3600.0)),
                         discovery_wait=float(rc.get("discovery-wait", 120.0)),
                         poll_interval=float(rc.get("poll-interval", 0.25)))


def client_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config the nodes receive: a local ``data_dir`` made absolute (nodes may run elsewhere)."""
    if cfg.data.source == "local" and cfg.data.data_dir:
        return cfg.replace(data=dataclasses.replace(cfg.data, data_dir=str(Path(cfg.data.data_dir).resolve())))
    return cfg


def serve(grid: Grid, opts: ServerOptions) -> RunResult:
    """Run (or resume) the experiment of ``opts.cfg`` over ``grid``; write the run folder."""
    cfg = opts.cfg
    sess = open_run(cfg, fresh=opts.fresh)
    t0 = time.perf_counter()
    node_of = discover(grid, cfg.data.num_clients, wait=opts.discovery_wait, timeout=opts.round_timeout)
    opts.discovery_seconds = time.perf_counter() - t0
    log(INFO, "fedsketch: %d of %d clients have a node (discovery %.1f s)", len(node_of), cfg.data.num_clients,
        opts.discovery_seconds)
    strategy = SketchStrategy(sess.fed, sess.alloc, sess.t_cp, sess.t_cm, sess.engine.module_names,
                              codec.config_text(client_config(cfg)), node_of, opts.round_timeout, opts.faults)
    strategy.summary()
    arrays = codec.state_to_arrays(sess.state)
    for t in range(sess.start + 1, sess.last + 1):
        w0 = time.perf_counter()
        if len(strategy.node_of) < cfg.data.num_clients:  # late joiners (deployment)
            known = {nid: n for n, nid in strategy.node_of.items()}
            strategy.node_of = discover(grid, cfg.data.num_clients, wait=0.0, timeout=opts.round_timeout,
                                        known=known)
        replies = exchange(grid, strategy.configure_train(t, arrays, ConfigRecord(), grid), opts.round_timeout,
                           opts.poll_interval)
        arrays, _ = strategy.aggregate_train(t, replies)
        assert arrays is not None and strategy.state is not None and strategy.last_record is not None
        rec = commit_round(sess, t, strategy.state, strategy.last_record)
        opts.round_wall_seconds.append(time.perf_counter() - w0)
        acc = f", accuracy {100 * rec['accuracy']:.1f}%" if rec.get("accuracy") is not None else ""
        log(INFO, "fedsketch round %d/%d: %d sampled, %d failed, sim %.1f s%s", t, cfg.fl.rounds,
            len(rec["sampled"]), len(rec["failed"]), rec["sim_seconds"], acc)
        for f in rec["failed"]:
            log(INFO, "  client %s failed: %s", f["client"], f["reason"])
        if sess.finished:
            break
    return close_run(sess)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """ServerApp entry point (simulation and deployment)."""
    opts = options_from_context(context)
    opts.result = serve(grid, opts)
    log(INFO, "fedsketch: run folder %s", opts.result.run_dir)


def summary(opts: ServerOptions) -> dict[str, Any]:
    return {"discovery_seconds": opts.discovery_seconds, "round_wall_seconds": list(opts.round_wall_seconds)}
