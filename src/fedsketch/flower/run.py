"""``run_flower``: the experiment in Flower's simulation engine, in this process.

One virtual SuperNode per client (``node_config["partition-id"]`` = client id), one Ray
actor per CPU by default (``client_resources.num_cpus = 1``). ``flwr.simulation.run_simulation``
does not install runtime dependencies (only ``flwr run`` with a SuperLink does), and it does
not read ``[tool.flwr.app.config]``, so the config is handed to the in-process ServerApp
through :data:`fedsketch.flower.server_app.HANDOFF`; the nodes receive it inside each train
message.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from fedsketch.config import ExperimentConfig
from fedsketch.runner import RunResult

_RUN_LOCK = threading.Lock()  # one simulation at a time per process (the handoff is global)


def run_flower(
    cfg: ExperimentConfig,
    fresh: bool = False,
    *,
    num_cpus: float = 1.0,
    num_gpus: float | None = None,
    round_timeout: float = 3600.0,
    faults: dict[int, str] | None = None,
    ray_init_args: dict[str, Any] | None = None,
    verbose: bool = False,
    stats: dict[str, Any] | None = None,
) -> RunResult:
    """Run (or resume) ``cfg`` on Flower's simulation engine; same run folder as the in-process backend.

    Parameters
    ----------
    cfg : ExperimentConfig
    fresh : bool
        Ignore an existing checkpoint.
    num_cpus, num_gpus : float
        Resources per ClientApp (Ray actor). ``num_gpus`` defaults to 1 when the engine would
        use CUDA (``train.device``), else 0.
    round_timeout : float
        Seconds to wait for a round's replies; missing ones are recorded as failed clients.
    faults : dict, optional
        ``{client id: "raise" | "sleep:<seconds>"}``: inject a failure into those clients'
        ClientApps (every round) — for tests and drills.
    ray_init_args : dict, optional
        Extra ``ray.init`` arguments (e.g. ``{"num_cpus": 2}``).
    stats : dict, optional
        Filled with ``discovery_seconds`` and ``round_wall_seconds`` (per-round wall time).
    """
    from flwr.simulation import run_simulation

    from fedsketch.flower import client_app, server_app

    if num_gpus is None:
        use_cuda = cfg.train.device == "cuda"
        if cfg.train.device == "auto":
            import torch

            use_cuda = torch.cuda.is_available()
        num_gpus = 1.0 if use_cuda else 0.0
    backend_config: dict[str, Any] = {
        "client_resources": {"num_cpus": num_cpus, "num_gpus": num_gpus},
        "init_args": {"logging_level": logging.WARNING, **(ray_init_args or {})},
    }
    opts = server_app.ServerOptions(cfg=cfg, fresh=fresh, round_timeout=round_timeout, faults=dict(faults or {}))
    with _RUN_LOCK:
        server_app.HANDOFF = opts
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        try:
            run_simulation(
                server_app=server_app.app,
                client_app=client_app.app,
                num_supernodes=cfg.data.num_clients,
                backend_config=backend_config,
                verbose_logging=verbose,
            )
        finally:
            server_app.HANDOFF = None
    if opts.result is None:
        raise RuntimeError("the Flower simulation ended without a result (see the log above)")
    if stats is not None:
        stats.update(server_app.summary(opts))
    return opts.result
