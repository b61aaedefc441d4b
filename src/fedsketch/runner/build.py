"""Build a :class:`~fedsketch.runner.run.Run` from a config: the only place that reads the config
across its sections (data, model, lora, fl, network, planner, train, eval, output) for a run or a plan.

:func:`prepare` loads the data and the engine and resolves the allocation; :func:`build_run` opens
the run folder (``config.toml``, ``run.json``, resume from a checkpoint or evaluate round 0);
:func:`run_experiment` runs it. :func:`profiles_from_config` and :func:`problem_from_config` turn
the config into the client profiles and the P2 instance that both ``fedsketch run`` and
``fedsketch plan`` use; everything below them takes its own section and plain values.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsketch import checkpoint
from fedsketch.config import ExperimentConfig, same_experiment, to_toml
from fedsketch.io import atomic_write_json, atomic_write_text
from fedsketch.lock import run_folder_lock
from fedsketch.network import sketch_times
from fedsketch.network.profiles import ClientProfiles, full_rank_payload_mbit, payload_from_model, profiles_from_network
from fedsketch.planner.api import BASELINE_STREAM, build_problem, plan_problem
from fedsketch.planner.baselines import Baseline
from fedsketch.planner.bound import PlanProblem, Theta
from fedsketch.planner.estimate import PilotObservation
from fedsketch.planner.solve import Plan
from fedsketch.records import RoundRecord
from fedsketch.rng import Streams
from fedsketch.runner.executor import ClientExecutor, Engine, InProcessExecutor
from fedsketch.runner.run import Run, RunFolder, RunResult, Schedule, Uplink
from fedsketch.strategies import Allocation, Federation, resolve_allocation
from fedsketch.strategies.methods import Method, MethodContext, build_method
from fedsketch.strategies.methods.flora import lora_scale

if TYPE_CHECKING:
    from fedsketch.engine.runtime import EngineSettings


def run_dir_for(cfg: ExperimentConfig) -> Path:
    name = cfg.output.name or f"{cfg.data.task}-{cfg.fl.sampling}-{cfg.fl.ranks}-seed{cfg.seed}-{cfg.hash()}"
    return Path(cfg.output.dir) / name


def prepare(cfg: ExperimentConfig, engine: Any = None) -> tuple[Any, Federation, Allocation, np.ndarray, np.ndarray]:
    """Data, engine, client profiles and the strategy's allocation for ``cfg``."""
    engine, fed = prepare_federation(cfg, engine)
    alloc = resolve_allocation(fed)
    if "lr_scale" in alloc.info:  # a planned allocation: record the rate the clients train at
        alloc = Allocation(q=alloc.q, k=alloc.k, info={**alloc.info, "train_lr": client_lr(cfg, alloc)})
    t_cp, t_cm = sketch_times(fed.profiles, alloc.k, cfg.lora.rank, cfg.network.compute_model)
    return engine, fed, alloc, t_cp, t_cm


def client_lr(cfg: ExperimentConfig, alloc: Allocation) -> float:
    """The clients' local SGD learning rate: ``train.lr``, times the plan's scale s under
    ``planner.stability = "scale_lr"`` (PAPER.md §8.2). Each round's plan carries it to every client."""
    return cfg.train.lr * float(alloc.info.get("lr_scale", 1.0))


def prepare_federation(cfg: ExperimentConfig, engine: Any = None) -> tuple[Any, Federation]:
    """The federated data, the engine (a ``TorchEngine`` unless given) and the federation's facts."""
    from fedsketch.data import build_federated_data

    streams = Streams(cfg.seed)
    data = build_federated_data(cfg)
    if engine is None:
        from fedsketch.engine.runtime import TorchEngine

        engine = TorchEngine(engine_settings(cfg), data.train, data.test, data.parts, streams)
    payload = full_rank_payload_mbit(cfg.network, engine.num_values_full_rank())  # the rule `fedsketch plan` uses too
    return engine, federation(cfg, data.weights, profiles_from_config(cfg, payload_mbit=payload), streams)


def federation(
    cfg: ExperimentConfig, p: np.ndarray, profiles: ClientProfiles, streams: Streams | None = None
) -> Federation:
    """The facts the strategies see: ``p``, the profiles, the ``fl`` and ``planner`` sections, r, W."""
    return Federation(
        p=np.asarray(p, dtype=float),
        profiles=profiles,
        fl=cfg.fl,
        planner=cfg.planner,
        streams=streams or Streams(cfg.seed),
        r=cfg.lora.rank,
        bandwidth_mbps=cfg.network.bandwidth_mbps,
        compute_model=cfg.network.compute_model,
    )


def profiles_from_config(cfg: ExperimentConfig, payload_mbit: float | None = None) -> ClientProfiles:
    """Client profiles of ``cfg``: :func:`fedsketch.network.profiles.profiles_from_network` for the
    ``[network]`` section, ``data.num_clients`` clients, the ``network`` stream of ``seed`` and
    H = ``fl.local_steps``; ``payload_mbit`` is the full-rank upload size (see there)."""
    return profiles_from_network(
        cfg.network,
        cfg.data.num_clients,
        Streams(cfg.seed).generator("network"),
        cfg.fl.local_steps,
        payload_mbit=payload_mbit,
    )


WeightsFn = Callable[[ExperimentConfig], np.ndarray]


def default_weights(cfg: ExperimentConfig) -> np.ndarray:
    """Client dataset sizes of the real partition (``fedsketch.data.partition.partition_sizes``)."""
    from fedsketch.data.datasets import DataError
    from fedsketch.data.partition import PartitionError, partition_sizes

    try:
        return np.asarray(partition_sizes(cfg), dtype=float)
    except (DataError, PartitionError):  # bad input (exit 2), named as the run names it
        raise
    except Exception as e:  # noqa: BLE001 - report any data problem as a planner input error
        raise ValueError(f"data weights p_n: could not build the client partition: {e}") from e


def problem_from_config(
    cfg: ExperimentConfig,
    p: np.ndarray | None = None,
    profiles: ClientProfiles | None = None,
    weights_fn: WeightsFn | None = None,
    theta: Theta | None = None,
    payload_mbit: float | None = None,
    pilots: Sequence[PilotObservation] | None = None,
) -> PlanProblem:
    """The P2 instance (eq. 21) described by ``cfg`` (:func:`fedsketch.planner.api.build_problem`).

    Parameters
    ----------
    cfg : ExperimentConfig
    p : array (N,), optional
        Data weights or sizes; else ``weights_fn(cfg)`` (default :func:`default_weights`).
    profiles : ClientProfiles, optional
        Else :func:`profiles_from_config` with ``payload_mbit``.
    theta : Theta, optional
        Else ``planner.theta`` or ``planner.theta_file``.
    payload_mbit : float, optional
        Full-rank LoRA upload size (Mbit) for the seeded profile draw, as the run computes it
        (:func:`config_payload_mbit`); unused when ``profiles`` is given.
    pilots : sequence of PilotObservation, optional
        The pilots whose region the plan must stay in; default: those of ``planner.theta_file``.
    """
    if p is None:
        p = (weights_fn or default_weights)(cfg)
    if profiles is None:
        profiles = profiles_from_config(cfg, payload_mbit=payload_mbit)
    return build_problem(
        cfg.planner,
        profiles,
        p,
        cfg.lora.rank,
        cfg.network.bandwidth_mbps,
        cfg.network.compute_model,
        theta=theta,
        pilots=pilots,
    )


def plan_config(prob: PlanProblem, cfg: ExperimentConfig) -> tuple[Plan, list[Baseline]]:
    """Solve ``prob`` with ``cfg``'s ``[planner]`` settings; the baselines draw from the seed's
    ``planner_baselines`` stream (as :func:`fedsketch.strategies.optimized.planned_allocation` does)."""
    return plan_problem(prob, cfg.planner, Streams(cfg.seed).generator(BASELINE_STREAM))


def plan_from_config(
    cfg: ExperimentConfig,
    p: np.ndarray | None = None,
    profiles: ClientProfiles | None = None,
    weights_fn: WeightsFn | None = None,
    payload_mbit: float | None = None,
) -> tuple[Plan, list[Baseline], PlanProblem]:
    """Build the problem from ``cfg`` and solve it (Algorithm 2 lines 5–22)."""
    prob = problem_from_config(cfg, p, profiles, weights_fn, payload_mbit=payload_mbit)
    plan, bls = plan_config(prob, cfg)
    return plan, bls, prob


def engine_settings(cfg: ExperimentConfig) -> EngineSettings:
    """What the engine reads of ``cfg``: the model, lora, train and eval sections, and four values
    of the data and fl sections."""
    from fedsketch.engine.runtime import EngineSettings  # torch lives behind this import

    return EngineSettings(
        model=cfg.model,
        lora=cfg.lora,
        train=cfg.train,
        eval=cfg.eval,
        max_seq_len=cfg.data.max_seq_len,
        prompt_format=cfg.data.prompt_format,
        local_steps=cfg.fl.local_steps,
        batch_size=cfg.fl.batch_size,
    )


def config_payload_mbit(cfg: ExperimentConfig) -> float | None:
    """The full-rank upload size (Mbit) ``fedsketch run`` uses for ``cfg``, or None where no
    payload enters the profiles (explicit or CSV ``tau_cm``); the model is read only if needed."""
    if not payload_from_model(cfg.network):
        return full_rank_payload_mbit(cfg.network, None)
    from fedsketch.engine.payload import lora_num_values  # torch lives behind this import

    return full_rank_payload_mbit(cfg.network, lora_num_values(cfg.model, cfg.lora))


def method_from_config(cfg: ExperimentConfig, fed: Federation, alloc: Allocation) -> Method:
    """``fl.method`` built once for this federation and allocation (plain values only)."""
    lo = cfg.lora
    ctx = MethodContext(
        p=fed.p,
        q=alloc.q,
        k=alloc.k,
        r=lo.rank,
        streams=fed.streams,
        server_lr=cfg.fl.server_lr,
        lora_scale=lora_scale(lo.alpha, lo.rank, lo.use_rslora),
        clients_per_round=cfg.fl.clients_per_round,
        tau_cm=fed.profiles.tau_cm,
    )
    return build_method(cfg.fl.method, ctx)


def schedule_from_config(cfg: ExperimentConfig) -> Schedule:
    fl = cfg.fl
    return Schedule(
        rounds=fl.rounds,
        eval_every=cfg.eval.every,
        eval_every_sim_seconds=cfg.eval.every_sim_seconds,
        sim_budget_minutes=fl.sim_budget_minutes,
        stop_accuracy=fl.stop_accuracy,
        stop_divergence=fl.stop_divergence,
        min_completion=fl.min_completion,
        checkpoint_every=cfg.output.checkpoint_every,
    )


def uplink_from_config(cfg: ExperimentConfig) -> Uplink:
    return Uplink(bandwidth_mbps=cfg.network.bandwidth_mbps, upload_bits=cfg.network.upload_bits)


def build_run(
    cfg: ExperimentConfig, *, engine: Any = None, executor: ClientExecutor | None = None, fresh: bool = False
) -> Run:
    """Prepare, write ``config.toml`` / ``run.json``, and resume from a checkpoint or evaluate round 0.

    ``executor`` trains the clients (default: :class:`InProcessExecutor` on the engine, in groups of
    ``train.client_batch``).
    """
    wall0 = time.perf_counter()
    engine, fed, alloc, t_cp, t_cm = prepare(cfg, engine)
    out = run_dir_for(cfg)
    found = None if fresh else checkpoint.find(out / "checkpoint")
    rs = (
        checkpoint.load(
            found,
            cfg.hash(),
            cfg.to_dict(),  # verify before writing; other thread/worker counts are fine
            same=lambda h, written: same_experiment(cfg, h, written.get("train", {})),
        )
        if found is not None
        else None
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", to_toml(cfg))
    atomic_write_json(out / "run.json", _run_info(cfg, fed, alloc, t_cp, t_cm))
    title = (
        f"{cfg.data.task}: {cfg.fl.method}, sampling={cfg.fl.sampling}, ranks={cfg.fl.ranks}, seed={cfg.seed}"
        if cfg.output.plot
        else None
    )
    return Run(
        method=method_from_config(cfg, fed, alloc),
        alloc=alloc,
        t_cp=t_cp,
        t_cm=t_cm,
        r=cfg.lora.rank,
        streams=fed.streams,
        schedule=schedule_from_config(cfg),
        uplink=uplink_from_config(cfg),
        engine=engine,
        executor=executor or InProcessExecutor(engine, cfg.train.client_batch, cfg.train.workers),
        folder=RunFolder(out, cfg.hash(), title),
        resumed=rs,
        wall0=wall0,
        lr=client_lr(cfg, alloc),
    )


def run_experiment(
    cfg: ExperimentConfig,
    *,
    engine: Engine | None = None,
    fresh: bool = False,
    stop_after: int | None = None,
    on_round: Callable[[Run, RoundRecord], None] | None = None,
) -> RunResult:
    """Run (or resume) the experiment of ``cfg`` and write its run folder.

    Parameters
    ----------
    engine : optional
        A prepared engine (tests inject tiny ones); by default a :class:`TorchEngine`.
    fresh : bool
        Ignore an existing checkpoint and start over.
    stop_after : int, optional
        Stop after this many rounds (simulates an interruption; used by resume tests).
    on_round : callable(run, record), optional
        Called after each committed round (the CLI prints its progress line here).

    The run folder is locked while the run writes it (:func:`fedsketch.lock.run_folder_lock`): a second
    run of the same folder is refused (``FolderBusy``), and a run whose input fails before it wrote
    anything removes the folder it created.
    """
    with run_folder_lock(run_dir_for(cfg)):  # one writer per run folder (re-entrant: the CLI may hold it)
        return build_run(cfg, engine=engine, fresh=fresh).run(stop_after=stop_after, on_round=on_round)


def _run_info(
    cfg: ExperimentConfig, fed: Federation, alloc: Allocation, t_cp: np.ndarray, t_cm: np.ndarray
) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "peft", "numpy", "scipy", "cvxpy", "flwr"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {
        "seed": cfg.seed,
        "config_hash": cfg.hash(),
        "versions": versions,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "p": fed.p,
        "q": alloc.q,
        "k": alloc.k,
        "tau_cp": fed.profiles.tau_cp,
        "tau_cm": fed.profiles.tau_cm,
        "t_cp": t_cp,
        "t_cm": t_cm,
        "allocation_info": alloc.info,
    }
