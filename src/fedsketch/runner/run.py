"""The federated round loop of Algorithm 1 (PAPER.md §3) as one object.

A :class:`Run` is built once per run by :func:`fedsketch.runner.build.build_run` and holds plain,
resolved values: the method (built once), the allocation (q, k), the client times (t_cp, t_cm), r,
the random streams, the :class:`Schedule` and the :class:`Uplink`. Per round (:meth:`Run.round`): sample
clients (eq. 6 coins) -> draw sketches (eq. 3) -> train on the clients (eqs. 7-8, a :class:`ClientExecutor`)
-> validate the uploads -> aggregate (eq. 6) -> simulated round time by the equal-finish bandwidth split
(eqs. 10, 18-19) -> evaluate -> record (a :class:`~fedsketch.records.RoundRecord`) and checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsketch import checkpoint, report
from fedsketch.aggregate import validate_update
from fedsketch.errors import RunFailed
from fedsketch.network import allocate_bandwidth
from fedsketch.records import METRICS_FILE, Failure, RoundRecord, evaluations, run_finished, write_metrics
from fedsketch.rng import Streams
from fedsketch.runner.executor import ClientExecutor, Engine, RoundPlan
from fedsketch.sketch import ClientUpdate, LoraState
from fedsketch.stopping import is_diverged
from fedsketch.strategies import Allocation
from fedsketch.strategies.methods import Method


@dataclass
class RunResult:
    run_dir: Path | None
    records: list[RoundRecord]
    state: LoraState
    allocation: Allocation

    @property
    def evaluations(self) -> list[RoundRecord]:
        return evaluations(self.records)


@dataclass(frozen=True)
class Schedule:
    """How many rounds, when to evaluate, when to stop early, when to checkpoint: plain values from
    ``fl``, ``eval`` and ``output``."""

    rounds: int  # fl.rounds
    eval_every: int = 0  # eval.every (rounds; 0 = off)
    eval_every_sim_seconds: float = 0.0  # eval.every_sim_seconds (0 = off)
    sim_budget_minutes: float = 0.0  # fl.sim_budget_minutes (0 = off)
    stop_accuracy: float = 0.0  # fl.stop_accuracy (0 = off)
    stop_divergence: float = 0.0  # fl.stop_divergence (0 = off)
    min_completion: int = 0  # fl.min_completion (0 = off)
    checkpoint_every: int = 0  # output.checkpoint_every (0 = never)


@dataclass(frozen=True)
class Uplink:
    """The shared uplink of eq. 10: plain values from ``network``."""

    bandwidth_mbps: float = 1.0  # network.bandwidth_mbps, W of eq. 10
    upload_bits: int = 32  # network.upload_bits, bits per uploaded value


@dataclass(frozen=True)
class RunFolder:
    """The run folder and what goes into it besides the records."""

    path: Path
    config_hash: str
    plot_title: str | None = None  # None: no accuracy plot and no report.html


def stop_reason(
    rec: RoundRecord, earlier: list[RoundRecord], t: int, over_budget: bool, schedule: Schedule
) -> str | None:
    """Why the run ends after round ``t`` (first rule that fires), or None.

    In order: accuracy reached ``fl.stop_accuracy``; the evaluation diverged (test loss above
    ``fl.stop_divergence`` times the best so far, or NaN: :mod:`fedsketch.stopping`); the simulated
    clock reached ``fl.sim_budget_minutes``; round ``fl.rounds`` is done.
    """
    if schedule.stop_accuracy > 0 and rec.accuracy is not None and rec.accuracy >= schedule.stop_accuracy:
        return "stop_accuracy"
    if rec.test_loss is not None and is_diverged(rec.test_loss, earlier, schedule.stop_divergence):
        return "stop_divergence"
    if over_budget:
        return "sim_budget_minutes"
    return "rounds" if t == schedule.rounds else None


class Run:
    """One run of Algorithm 1: state, clock and records, advanced by :meth:`round`.

    ``probe(t, state) -> dict``, when given, replaces the scheduled engine evaluation (pilot runs);
    its keys go into the round's record (:meth:`RoundRecord.update`), and a ``"stop"`` key ends the
    run. ``folder=None`` writes nothing.
    ``resumed`` is a :class:`fedsketch.checkpoint.RunState` to continue from; otherwise the run
    starts from ``x0`` (default: the method's initial state from the engine's LoRA factors).
    ``lr`` is every client's local SGD learning rate, carried by each round's plan (None: the
    engine's ``train.lr``; :func:`fedsketch.runner.build.client_lr`).
    """

    def __init__(
        self,
        *,
        method: Method,
        alloc: Allocation,
        t_cp: np.ndarray,
        t_cm: np.ndarray,
        r: int,
        streams: Streams,
        schedule: Schedule,
        engine: Engine,
        executor: ClientExecutor,
        uplink: Uplink | None = None,
        folder: RunFolder | None = None,
        probe: Callable[[int, LoraState], dict[str, Any]] | None = None,
        resumed: checkpoint.RunState | None = None,
        x0: LoraState | None = None,
        wall0: float | None = None,
        lr: float | None = None,
    ) -> None:
        self.method, self.alloc, self.t_cp, self.t_cm, self.r, self.streams = method, alloc, t_cp, t_cm, r, streams
        self.schedule, self.uplink, self.engine, self.executor = schedule, uplink or Uplink(), engine, executor
        self.folder, self.probe = folder, probe
        self.wall0 = time.perf_counter() if wall0 is None else wall0
        self.lr = lr
        self.records: list[RoundRecord]
        if resumed is not None:
            rs = resumed
            self.state, self.start, self.sim, self.real0 = rs.state, rs.round, rs.sim_seconds, rs.real_seconds
            self.records = [RoundRecord.from_dict(d) for d in rs.records]
        else:
            x0 = method.initial_state(engine.initial_state()) if x0 is None else x0
            self.state, self.start, self.sim, self.real0 = x0, 0, 0.0, 0.0
            ev = probe(0, self.state) if probe is not None else engine.evaluate(self.state).as_dict()
            rec0 = RoundRecord(round=0, sim_seconds=0.0, real_seconds=time.perf_counter() - self.wall0)
            rec0.update(ev)
            self.records = [rec0]
        self.finished = run_finished(self.records, schedule.rounds)  # a resumed run may be over
        self.last = self.start if self.finished else schedule.rounds  # last round this session runs
        self.consecutive_fail = 0
        for rec in reversed(self.records[1:]):  # restore the min_completion count on resume
            if not rec.all_failed:
                break
            self.consecutive_fail += 1

    # ------------------------------------------------------------------ the round

    def round(self, t: int) -> RoundRecord:
        """Round ``t`` (from 1) of Algorithm 1; returns its record (``rec.stop`` set if the run ends)."""
        plan = self.plan(t)  # sample (line 5) + sketch (line 2)
        results = self.executor.execute(t, self.state, plan)  # train (lines 6-10)
        updates, failed = self.validate(plan, results)
        self.aggregate(updates)  # line 12, eq. 6
        rec = self.account(plan, updates, failed)  # line 13, eq. 10
        self.evaluate(t, rec)
        stop = rec.stop or stop_reason(rec, self.records, t, self.over_budget, self.schedule)
        if stop:
            rec.stop = stop
        self.record(t, rec)  # + checkpoint
        return rec

    def plan(self, t: int) -> RoundPlan:
        """Who trains (Algorithm 1 line 5) and one sketch and LoRA scale per sampled client (line 2)."""
        sampled, k = self.method.sample(t), self.alloc.k
        return RoundPlan(
            round=t,
            sampled=sampled,
            sketches={int(n): self.method.sketch(t, int(n), int(k[n]), self.engine.module_names) for n in sampled},
            scales={int(n): self.method.client_scale(int(k[n])) for n in sampled},
            q={int(n): float(self.alloc.q[n]) for n in sampled},
            lr={} if self.lr is None else {int(n): self.lr for n in sampled},
        )

    def validate(
        self, plan: RoundPlan, results: dict[int, ClientUpdate | str]
    ) -> tuple[list[ClientUpdate], list[Failure]]:
        """Accepted uploads, and ``{client, reason}`` for every sampled client that failed."""
        updates: list[ClientUpdate] = []
        failed: list[Failure] = []
        for n in plan.sampled.tolist():
            res = results.get(n, "no reply")
            why: str | None
            if isinstance(res, str):
                why = res
            elif res.client != n or res.round != plan.round:
                why = f"stale or misattributed upload (client {res.client}, round {res.round})"
            else:
                why = validate_update(res, self.state, plan.sketches[n])
            if why is None and not isinstance(res, str):
                updates.append(res)
            elif why is not None:
                failed.append({"client": n, "reason": why})
        return updates, failed

    def aggregate(self, updates: list[ClientUpdate]) -> None:
        """X += sum (p_n/q_n) Delta_n (eq. 6), or the method's own rule."""
        if updates:
            ids = np.array([u.client for u in updates], dtype=int)
            self.state = self.method.aggregate(self.state, updates, self.method.weights(ids))

    def account(self, plan: RoundPlan, updates: list[ClientUpdate], failed: list[Failure]) -> RoundRecord:
        """The round's record before evaluation: its time by the equal-finish split of W over the sampled
        clients (eq. 10), which advances the simulated clock, the bytes uploaded and the training loss. A
        method's extra download (FLoRA's stacked module) joins each client's communication load."""
        download = self.method.download_mbit(plan.round)[plan.sampled]
        T, share = allocate_bandwidth(
            self.t_cp[plan.sampled], self.t_cm[plan.sampled] + download, self.uplink.bandwidth_mbps
        )
        by_client = {u.client: u.nbytes(self.uplink.upload_bits) for u in updates}
        self.sim += T
        return RoundRecord(
            round=plan.round,
            sim_seconds=self.sim,
            round_sim_seconds=T,
            sampled=plan.sampled.tolist(),
            failed=failed,
            uploaded_bytes=int(sum(by_client.values())),
            client_bytes=[int(by_client.get(n, 0)) for n in plan.sampled.tolist()],
            bandwidth_mbps=[float(b) for b in np.asarray(share, dtype=float).ravel()],
            train_loss=float(np.mean([u.train_loss for u in updates])) if updates else None,
            client_compute_seconds=float(sum(u.compute_seconds for u in updates)),
            download_mbit=float(download.sum()) if download.any() else None,
        )

    @property
    def over_budget(self) -> bool:
        return self.schedule.sim_budget_minutes > 0 and self.sim >= 60 * self.schedule.sim_budget_minutes

    def evaluate(self, t: int, rec: RoundRecord) -> None:
        """Evaluate when due: every ``eval.every`` rounds, on the ``eval.every_sim_seconds`` grid of
        simulated time, at the last round and when the budget is spent (or the probe, every round)."""
        if self.probe is not None:
            rec.update(self.probe(t, self.state))
            return
        dt, every = self.schedule.eval_every_sim_seconds, self.schedule.eval_every
        last_eval = next((r.sim_seconds for r in reversed(self.records) if r.evaluated), 0.0)
        if (
            (every and t % every == 0)
            or t == self.schedule.rounds
            or self.over_budget
            or (dt > 0 and self.sim - last_eval >= dt)
        ):
            rec.update(self.engine.evaluate(self.state).as_dict())

    def record(self, t: int, rec: RoundRecord) -> None:
        """Append and write the record, checkpoint; then raise :class:`RunFailed` when every sampled client
        of the round (two or more) failed with the same error (the next rounds would fail alike: the run
        stops at once, :attr:`RoundRecord.common_failure`), or after ``fl.min_completion`` consecutive
        rounds in which every sampled client failed."""
        self.finished = rec.stop is not None
        if self.finished:
            self.last = t
        rec.real_seconds = self.real0 + time.perf_counter() - self.wall0
        self.records.append(rec)
        self.consecutive_fail = self.consecutive_fail + 1 if rec.all_failed else 0
        f, every = self.folder, self.schedule.checkpoint_every
        if f is not None:
            write_metrics(f.path / METRICS_FILE, self.records)
            if every and (t % every == 0 or t == self.last):
                checkpoint.save(
                    f.path / "checkpoint",
                    checkpoint.RunState(
                        t, self.state, self.sim, rec.real_seconds, [r.to_dict() for r in self.records], f.config_hash
                    ),
                )
        same = rec.common_failure
        if same is not None:
            raise RunFailed(f"every sampled client of round {t} failed with the same error: {same}")
        if self.schedule.min_completion and self.consecutive_fail >= self.schedule.min_completion:
            raise RunFailed(
                f"{self.consecutive_fail} consecutive rounds in which every sampled client failed "
                f"(fl.min_completion={self.schedule.min_completion}); last failures: {rec.failed}"
            )

    # ------------------------------------------------------------------ the loop

    def run(
        self, stop_after: int | None = None, on_round: Callable[[Run, RoundRecord], None] | None = None
    ) -> RunResult:
        """Rounds ``start + 1 ..`` until a stop rule fires (or ``stop_after`` rounds: an interruption)."""
        if stop_after is not None and not self.finished:
            self.last = min(self.schedule.rounds, self.start + stop_after)
        for t in range(self.start + 1, self.last + 1):
            rec = self.round(t)
            if on_round is not None:
                on_round(self, rec)
            if self.finished:
                break
        return self.close()

    def close(self) -> RunResult:
        """Write the final metrics, and after the last round the adapter, the plot and ``report.html``."""
        f = self.folder
        if f is not None:
            write_metrics(f.path / METRICS_FILE, self.records)
            if self.finished:
                self.engine.save_adapter(self.state, f.path / "adapter")
                if f.plot_title is not None:
                    report.plot_accuracy(f.path / "accuracy_vs_time.png", self.records, f.plot_title)
                    from fedsketch.html_report import write_run_report

                    write_run_report(f.path)
        return RunResult(
            run_dir=None if f is None else f.path, records=self.records, state=self.state, allocation=self.alloc
        )
