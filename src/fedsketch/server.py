"""The federated round loop of Algorithm 1 (PAPER.md §3).

Per round: sample clients independently (eq. 6 coins) -> draw sketches (eq. 3) -> local
training on the engine (eqs. 7–8) -> validate uploads -> unbiased aggregation (eq. 6) ->
simulated round time by the same-finish bandwidth split (eqs. 10, 18–19) -> evaluate ->
checkpoint -> record.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedsketch import checkpoint, report
from fedsketch.aggregate import validate_update
from fedsketch.config import ExperimentConfig, to_toml
from fedsketch.errors import RunFailed
from fedsketch.io import atomic_write_json, atomic_write_text
from fedsketch.network import allocate_bandwidth, sketch_times
from fedsketch.network.profiles import full_rank_payload_mbit, profiles_from_config
from fedsketch.rng import Streams
from fedsketch.sketch import ClientUpdate, LoraState
from fedsketch.stopping import is_diverged
from fedsketch.strategies import Allocation, Federation, resolve_allocation
from fedsketch.strategies.methods import make_method


@dataclass
class RunResult:
    run_dir: Path
    records: list[dict[str, Any]]
    state: LoraState
    allocation: Allocation

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("accuracy") is not None]


def run_dir_for(cfg: ExperimentConfig) -> Path:
    name = cfg.output.name or f"{cfg.data.task}-{cfg.fl.sampling}-{cfg.fl.ranks}-seed{cfg.seed}-{cfg.hash()}"
    return Path(cfg.output.dir) / name


@dataclass
class RoundPlan:
    """What the server decides before a round: who trains, with which sketch and LoRA scale."""

    round: int
    sampled: np.ndarray  # (|K_t|,) client ids, sorted
    sketches: dict[int, dict[str, np.ndarray]]  # client -> module -> kept rank indices
    scales: dict[int, float] = field(default_factory=dict)  # client -> multiplier of s (r/k_n for sketches)


def plan_round(t: int, fed: Federation, alloc: Allocation, module_names: list[str]) -> RoundPlan:
    """Who trains (Algorithm 1 line 5: independent Bernoulli(q_n) coins for the paper's method) and
    one sketch per sampled client (line 2), as the configured ``fl.method`` decides."""
    method = make_method(fed.cfg.fl.method)
    r = fed.cfg.lora.rank
    sampled = method.sample(t, fed, alloc)
    sketches = {int(n): method.sketch(t, int(n), int(alloc.k[n]), fed, module_names) for n in sampled}
    scales = {int(n): method.client_scale(int(alloc.k[n]), r) for n in sampled}
    return RoundPlan(round=t, sampled=sampled, sketches=sketches, scales=scales)


def finish_round(plan: RoundPlan, state: LoraState, results: dict[int, ClientUpdate | str], fed: Federation,
                 alloc: Allocation, t_cp: np.ndarray, t_cm: np.ndarray) -> tuple[LoraState, dict[str, Any]]:
    """Validate uploads, aggregate (eq. 6) and time the round (eq. 10).

    ``results`` maps every sampled client to its upload or to a failure reason (a string).
    """
    cfg = fed.cfg
    updates: list[ClientUpdate] = []
    failed: list[dict[str, Any]] = []
    for n in plan.sampled.tolist():
        res = results.get(n, "no reply")
        if isinstance(res, str):
            why = res
        elif res.client != n or res.round != plan.round:
            why = f"stale or misattributed upload (client {res.client}, round {res.round})"
        else:
            why = validate_update(res, state, plan.sketches[n])
        if why is None:
            updates.append(res)  # type: ignore[arg-type]
        else:
            failed.append({"client": n, "reason": why})
    method = make_method(cfg.fl.method)
    # --- aggregate: X += sum (p_n/q_n) Delta_n (line 12, eq. 6), or the method's own rule
    if updates:
        ids = np.array([u.client for u in updates], dtype=int)
        state = method.aggregate(state, updates, method.weights(fed, alloc, ids), fed)
    # --- simulated time: equal-finish split of W over the sampled clients (line 13, eq. 10);
    # a method's extra download (FLoRA's stacked module) joins each client's communication load
    download = method.download_mbit(plan.round, fed, alloc)[plan.sampled]
    T, share = allocate_bandwidth(t_cp[plan.sampled], t_cm[plan.sampled] + download, cfg.network.bandwidth_mbps)
    bits = cfg.network.upload_bits
    by_client = {u.client: u.nbytes(bits) for u in updates}
    record = {
        "round": plan.round,
        "round_sim_seconds": T,
        "sampled": plan.sampled.tolist(),
        "failed": failed,
        "uploaded_bytes": int(sum(by_client.values())),
        # aligned with "sampled": each client's upload (0 if it failed) and bandwidth b_n in Mbps (eq. 10)
        "client_bytes": [int(by_client.get(n, 0)) for n in plan.sampled.tolist()],
        "bandwidth_mbps": [float(b) for b in np.asarray(share, dtype=float).ravel()],
        "train_loss": float(np.mean([u.train_loss for u in updates])) if updates else None,
        "client_compute_seconds": float(sum(u.compute_seconds for u in updates)),
    }
    if download.any():
        record["download_mbit"] = float(download.sum())
    return state, record


def run_round(t: int, state: LoraState, engine: Any, fed: Federation, alloc: Allocation,
              t_cp: np.ndarray, t_cm: np.ndarray) -> tuple[LoraState, dict[str, Any]]:
    """One in-process round of Algorithm 1 (t counts from 1): plan, train each client, finish.

    With ``train.client_batch = C != 1`` (0 = all) and an engine that offers ``train_clients``,
    the sampled clients train in groups of up to C in one fused forward/backward per step.
    """
    plan = plan_round(t, fed, alloc, engine.module_names)
    results: dict[int, ClientUpdate | str] = {}
    C = fed.cfg.train.client_batch
    if C != 1 and hasattr(engine, "train_clients"):
        jobs = [(n, issued, plan.scales.get(n)) for n, issued in plan.sketches.items()]
        for j in range(0, len(jobs), C or len(jobs) or 1):
            chunk = jobs[j:j + (C or len(jobs))]
            try:
                results.update({u.client: u for u in engine.train_clients(state, t, chunk)})
            except Exception as e:  # noqa: BLE001 - a failed group fails its clients; the round goes on
                results.update({n: f"{type(e).__name__}: {e}" for n, _, _ in chunk})
        return finish_round(plan, state, results, fed, alloc, t_cp, t_cm)
    for n, issued in plan.sketches.items():
        try:
            results[n] = engine.train_client(state, n, t, issued, scale=plan.scales.get(n))
        except Exception as e:  # noqa: BLE001 - any client error is recorded and the round goes on
            results[n] = f"{type(e).__name__}: {e}"
    return finish_round(plan, state, results, fed, alloc, t_cp, t_cm)


def prepare(cfg: ExperimentConfig, engine: Any = None) -> tuple[Any, Federation, Allocation, np.ndarray, np.ndarray]:
    """Data, engine, client profiles and the strategy's allocation for ``cfg``."""
    from fedsketch.data import build_federated_data

    streams = Streams(cfg.seed)
    data = build_federated_data(cfg)
    if engine is None:
        from fedsketch.engine.runtime import TorchEngine

        engine = TorchEngine(cfg, data.train, data.test, data.parts, streams)
    payload = full_rank_payload_mbit(cfg, engine.num_values_full_rank())  # the rule `fedsketch plan` uses too
    profiles = profiles_from_config(cfg, payload_mbit=payload)
    fed = Federation(p=data.weights, profiles=profiles, cfg=cfg, streams=streams)
    alloc = resolve_allocation(fed)
    # planner.stability = "scale_lr" (PAPER.md §8.2): every client trains at train.lr * s
    engine.lr_scale = float(alloc.info.get("lr_scale", 1.0))
    t_cp, t_cm = sketch_times(profiles, alloc.k, cfg.lora.rank, cfg.network.compute_model)
    return engine, fed, alloc, t_cp, t_cm


@dataclass
class RunSession:
    """An open run folder plus everything the round loop needs (shared by all backends).

    Built by :func:`open_run`; each finished round goes through :func:`commit_round` and the
    run ends with :func:`close_run`. The in-process loop (:func:`run_experiment`) and the Flower
    ServerApp (``fedsketch.flower``) both use it, so the two write identical run folders.
    """

    cfg: ExperimentConfig
    engine: Any
    fed: Federation
    alloc: Allocation
    t_cp: np.ndarray
    t_cm: np.ndarray
    out: Path
    state: LoraState
    start: int  # rounds already completed (resume point)
    sim: float  # simulated seconds so far
    real0: float  # real seconds of earlier (resumed) sessions
    records: list[dict[str, Any]]
    wall0: float
    last: int  # last round this session will run
    consecutive_fail: int = 0
    finished: bool = False  # the run is over (a stop rule of commit_round fired; rec["stop"] says which)

    @property
    def ckpt(self) -> Path:
        return self.out / "checkpoint"


def open_run(cfg: ExperimentConfig, *, engine: Any = None, fresh: bool = False,
             stop_after: int | None = None) -> RunSession:
    """Prepare, write ``config.toml`` / ``run.json``, and resume from a checkpoint or evaluate round 0."""
    wall0 = time.perf_counter()
    engine, fed, alloc, t_cp, t_cm = prepare(cfg, engine)
    out = run_dir_for(cfg)
    found = None if fresh else checkpoint.find(out / "checkpoint")
    rs = checkpoint.load(found, cfg.hash(), cfg.to_dict()) if found is not None else None  # verify before writing anything
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", to_toml(cfg))
    atomic_write_json(out / "run.json", _run_info(cfg, fed, alloc, t_cp, t_cm))

    if rs is not None:
        state, start, sim, real0, records = rs.state, rs.round, rs.sim_seconds, rs.real_seconds, rs.records
    else:
        state, start, sim, real0, records = make_method(cfg.fl.method).initial_state(engine.initial_state()), 0, 0.0, 0.0, []
        ev = engine.evaluate(state).as_dict()
        records.append({"round": 0, "sim_seconds": 0.0, "real_seconds": time.perf_counter() - wall0,
                        "sampled": [], "failed": [], "uploaded_bytes": 0, "train_loss": None, **ev})
    R = cfg.fl.rounds
    stopped = bool(records[-1].get("stop")) or start == R  # finished earlier (resume of a finished run)
    last = start if stopped else R if stop_after is None else min(R, start + stop_after)
    sess = RunSession(cfg, engine, fed, alloc, t_cp, t_cm, out, state, start, sim, real0, records, wall0, last,
                      finished=stopped)
    for rec in reversed(records[1:]):  # restore the min_completion count on resume
        if not (rec["sampled"] and len(rec["failed"]) == len(rec["sampled"])):
            break
        sess.consecutive_fail += 1
    return sess


def commit_round(sess: RunSession, t: int, state: LoraState, rec: dict[str, Any]) -> dict[str, Any]:
    """Advance the clock, evaluate when due, append and write the record, checkpoint.

    The run ends (``sess.finished``, and ``rec["stop"]`` names why) after round ``fl.rounds``,
    once the simulated clock reaches ``fl.sim_budget_minutes`` (evaluated there), after the
    first evaluation with accuracy >= ``fl.stop_accuracy``, or after a diverged evaluation (test loss
    above ``fl.stop_divergence`` times the best so far, or NaN: :mod:`fedsketch.stopping`). Raises
    :class:`~fedsketch.errors.RunFailed` after ``fl.min_completion`` consecutive rounds in which every
    sampled client failed.
    """
    cfg = sess.cfg
    every, R, fl = cfg.eval.every, cfg.fl.rounds, cfg.fl
    sess.state = state
    sess.sim += rec["round_sim_seconds"]
    rec["sim_seconds"] = sess.sim
    over_budget = fl.sim_budget_minutes > 0 and sess.sim >= 60 * fl.sim_budget_minutes
    dt = cfg.eval.every_sim_seconds  # an evaluation grid in simulated time: equal resolution for every strategy
    last_eval = next((r["sim_seconds"] for r in reversed(sess.records) if r.get("accuracy") is not None), 0.0)
    if (every and t % every == 0) or t == R or over_budget or (dt > 0 and sess.sim - last_eval >= dt):
        rec.update(sess.engine.evaluate(state).as_dict())
    if fl.stop_accuracy > 0 and rec.get("accuracy") is not None and rec["accuracy"] >= fl.stop_accuracy:
        rec["stop"] = "stop_accuracy"
    elif rec.get("test_loss") is not None and is_diverged(rec["test_loss"], sess.records, fl.stop_divergence):
        rec["stop"] = "stop_divergence"  # fedsketch.stopping: > factor x the best loss so far, or NaN
    elif over_budget:
        rec["stop"] = "sim_budget_minutes"
    elif t == R:
        rec["stop"] = "rounds"
    sess.finished = "stop" in rec
    if sess.finished:
        sess.last = t
    rec["real_seconds"] = sess.real0 + time.perf_counter() - sess.wall0
    sess.records.append(rec)
    sess.consecutive_fail = sess.consecutive_fail + 1 if rec["sampled"] and len(rec["failed"]) == len(rec["sampled"]) else 0
    report.write_metrics(sess.out / "metrics.jsonl", sess.records)
    if cfg.output.checkpoint_every and (t % cfg.output.checkpoint_every == 0 or t == sess.last):
        checkpoint.save(sess.ckpt, checkpoint.RunState(t, state, sess.sim, rec["real_seconds"], sess.records, cfg.hash()))
    if cfg.fl.min_completion and sess.consecutive_fail >= cfg.fl.min_completion:
        raise RunFailed(f"{sess.consecutive_fail} consecutive rounds in which every sampled client failed "
                        f"(fl.min_completion={cfg.fl.min_completion}); last failures: {rec['failed']}")
    return rec


def close_run(sess: RunSession) -> RunResult:
    """Write the final metrics, and after the last round the adapter, the plot and ``report.html``."""
    cfg = sess.cfg
    report.write_metrics(sess.out / "metrics.jsonl", sess.records)
    if sess.finished:
        sess.engine.save_adapter(sess.state, sess.out / "adapter")
        if cfg.output.plot:
            report.plot_accuracy(sess.out / "accuracy_vs_time.png", sess.records,
                                 f"{cfg.data.task}: {cfg.fl.method}, sampling={cfg.fl.sampling}, ranks={cfg.fl.ranks}, seed={cfg.seed}")
            from fedsketch.html_report import write_run_report

            write_run_report(sess.out)
    return RunResult(run_dir=sess.out, records=sess.records, state=sess.state, allocation=sess.alloc)


def run_experiment(cfg: ExperimentConfig, *, engine: Any = None, fresh: bool = False,
                   stop_after: int | None = None,
                   on_round: Callable[[RunSession, dict[str, Any]], None] | None = None) -> RunResult:
    """Run (or resume) the experiment of ``cfg`` and write its run folder.

    Parameters
    ----------
    engine : optional
        A prepared engine (tests inject tiny ones); by default a :class:`TorchEngine`.
    fresh : bool
        Ignore an existing checkpoint and start over.
    stop_after : int, optional
        Stop after this many rounds (simulates an interruption; used by resume tests).
    on_round : callable(session, record), optional
        Called after each committed round (the CLI prints its progress line here).
    """
    sess = open_run(cfg, engine=engine, fresh=fresh, stop_after=stop_after)
    for t in range(sess.start + 1, sess.last + 1):
        state, rec = run_round(t, sess.state, sess.engine, sess.fed, sess.alloc, sess.t_cp, sess.t_cm)
        rec = commit_round(sess, t, state, rec)
        if on_round is not None:
            on_round(sess, rec)
        if sess.finished:
            break
    return close_run(sess)


def _run_info(cfg: ExperimentConfig, fed: Federation, alloc: Allocation, t_cp: np.ndarray,
              t_cm: np.ndarray) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "peft", "numpy", "scipy", "cvxpy", "flwr"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {"seed": cfg.seed, "config_hash": cfg.hash(), "versions": versions, "python": platform.python_version(),
            "machine": platform.platform(), "p": fed.p, "q": alloc.q, "k": alloc.k,
            "tau_cp": fed.profiles.tau_cp, "tau_cm": fed.profiles.tau_cm, "t_cp": t_cp, "t_cm": t_cm,
            "allocation_info": alloc.info}
