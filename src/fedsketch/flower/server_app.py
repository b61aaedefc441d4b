"""The fedsketch ``ServerApp``: discovery, the round loop, and the run folder.

The ServerApp drives the same :class:`~fedsketch.runner.run.Run` as the in-process backend, with
the clients behind a :class:`~fedsketch.flower.executor.FlowerExecutor` (Flower messages):
:func:`fedsketch.runner.build_run` (prepare, config.toml, run.json, resume or round-0
evaluation) -> :func:`discover` -> :meth:`Run.run` (per round: sample, sketch, train on the
nodes, validate, aggregate, time, evaluate, record and checkpoint; then adapter, plot).

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

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from fedsketch.config import ExperimentConfig, load_config
from fedsketch.flower import codec
from fedsketch.flower.executor import FlowerExecutor, discover
from fedsketch.lock import run_folder_lock
from fedsketch.records import RoundRecord
from fedsketch.runner import Run, RunResult, build_run, run_dir_for


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
        raise ValueError(
            "run config key 'config' (path of a fedsketch TOML config) is required, e.g. "
            "flwr run . <connection> --run-config \"config='/abs/path/exp.toml'\""
        )
    overrides = [s.strip() for s in str(rc.get("overrides", "")).split(";") if s.strip()]
    cfg = load_config(Path(str(rc["config"])), overrides)
    return ServerOptions(
        cfg=cfg,
        fresh=bool(rc.get("fresh", False)),
        round_timeout=float(rc.get("round-timeout", 3600.0)),
        discovery_wait=float(rc.get("discovery-wait", 120.0)),
        poll_interval=float(rc.get("poll-interval", 0.25)),
    )


def client_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config the nodes receive: a local ``data_dir`` made absolute (nodes may run elsewhere)."""
    if cfg.data.source == "local" and cfg.data.data_dir:
        return cfg.replace(data=dataclasses.replace(cfg.data, data_dir=str(Path(cfg.data.data_dir).resolve())))
    return cfg


def serve(grid: Grid, opts: ServerOptions) -> RunResult:
    """Run (or resume) the experiment of ``opts.cfg`` over ``grid``; write the run folder."""
    cfg = opts.cfg
    nodes = FlowerExecutor(
        grid,
        codec.config_text(client_config(cfg)),
        {},
        cfg.data.num_clients,
        opts.round_timeout,
        opts.poll_interval,
        opts.faults,
    )
    with run_folder_lock(run_dir_for(cfg)):  # one writer per run folder, as in process (re-entrant)
        return _serve(grid, opts, cfg, nodes)


def _serve(grid: Grid, opts: ServerOptions, cfg: ExperimentConfig, nodes: FlowerExecutor) -> RunResult:
    run = build_run(cfg, executor=nodes, fresh=opts.fresh)
    t0 = time.perf_counter()
    nodes.node_of = discover(grid, cfg.data.num_clients, wait=opts.discovery_wait, timeout=opts.round_timeout)
    opts.discovery_seconds = time.perf_counter() - t0
    q, k = run.alloc.q, run.alloc.k
    log(
        INFO,
        "fedsketch: %d of %d clients have a node (discovery %.1f s); q in [%.3f, %.3f] (expected %.1f "
        "sampled per round), k in [%d, %d] of r=%d",
        len(nodes.node_of),
        cfg.data.num_clients,
        opts.discovery_seconds,
        q.min(),
        q.max(),
        q.sum(),
        k.min(),
        k.max(),
        run.r,
    )
    w0 = [time.perf_counter()]

    def on_round(run: Run, rec: RoundRecord) -> None:
        opts.round_wall_seconds.append(time.perf_counter() - w0[0])
        acc = f", accuracy {100 * rec.accuracy:.1f}%" if rec.accuracy is not None else ""
        log(
            INFO,
            "fedsketch round %d/%d: %d sampled, %d failed, sim %.1f s%s",
            rec.round,
            run.schedule.rounds,
            len(rec.sampled),
            len(rec.failed),
            rec.sim_seconds,
            acc,
        )
        for f in rec.failed:
            log(INFO, "  client %s failed: %s", f["client"], f["reason"])
        w0[0] = time.perf_counter()

    return run.run(on_round=on_round)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """ServerApp entry point (simulation and deployment)."""
    opts = options_from_context(context)
    opts.result = serve(grid, opts)
    log(INFO, "fedsketch: run folder %s", opts.result.run_dir)


def summary(opts: ServerOptions) -> dict[str, Any]:
    return {"discovery_seconds": opts.discovery_seconds, "round_wall_seconds": list(opts.round_wall_seconds)}
