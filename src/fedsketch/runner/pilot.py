"""Pilot runs for the parameter estimation of Algorithm 2 (PAPER.md §2.8, eq. 22, lines 1–4).

A pilot runs Algorithm 1 with every client at the same ``(q, k)`` and counts the rounds until
the *global training loss* first drops to the estimation loss ``F_s``. The global training loss
is measured on a fixed probe set of training examples drawn across clients in proportion to
their data weights (stream ``probe``), so every pilot is judged on the same examples.
``planner.pilot_loss = 0`` sets ``F_s`` to 90 % of the probe loss at ``X_0``. ``R_i`` is real-valued:
the crossing of ``F_s`` interpolated linearly between the two rounds around it (§8.4).

A pilot is a :class:`~fedsketch.runner.run.Run` with a fixed allocation, no run folder, and the
probe loss as its evaluation (a probe callback that stops the run at ``F_s``). Every finished
replicate (one ``(q, k, seed)``) is written at once to :func:`pilot_cache_path`, so an interrupted
``fedsketch estimate`` resumes where it stopped with the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedsketch.config import EXECUTION_KEYS, ExperimentConfig, PlannerConfig, TrainConfig
from fedsketch.engine import lora
from fedsketch.engine.tokens import collate
from fedsketch.io import atomic_write_json
from fedsketch.rng import Streams
from fedsketch.runner.build import prepare
from fedsketch.runner.executor import InProcessExecutor
from fedsketch.runner.run import Run, Schedule
from fedsketch.sketch import LoraState
from fedsketch.strategies import Allocation
from fedsketch.strategies.methods import MethodContext, build_method

PROBE_SIZE = 32  # examples in the probe set of the global training loss
DEFAULT_FRACTION = 0.9  # F_s = 90 % of the initial probe loss when planner.pilot_loss = 0
log = logging.getLogger(__name__)


def crossing(t: int, prev: float, loss: float, target: float) -> float:
    """Real-valued round at which the probe loss crosses ``target`` (PAPER.md §8.4): linear
    interpolation between round ``t - 1`` (loss ``prev > target``) and round ``t`` (``loss <= target``)."""
    if prev <= loss:  # no decrease between the two rounds: the crossing is at t
        return float(t)
    return float(t - 1) + (prev - target) / (prev - loss)


def _pilot_config(cfg: ExperimentConfig) -> ExperimentConfig:
    # Pilots are Algorithm 1 (spec §2.8) whatever the config's strategy: no planner, no other method.
    return cfg.replace(
        fl=dataclasses.replace(cfg.fl, method="independent", sampling="full", ranks="full", match_planned_cohort=False)
    )


#: the planner keys a pilot replicate depends on; the others (design, seeds count, signs, stability, ...)
#: choose which pilots run or what is done with them, and the cache key holds q, k and the seed itself
PILOT_KEYS: tuple[str, ...] = ("pilot_loss", "pilot_max_rounds")


def pilot_cache_path(cfg: ExperimentConfig) -> Path:
    """``<output.dir>/pilots-<hash>.json``: the finished pilot replicates of ``cfg``'s experiment. The
    hash leaves out what a replicate does not depend on: the execution settings
    (``config.EXECUTION_KEYS``; a pilot run at another thread count is reused, as ``fedsketch compare``
    reuses runs) and the planner keys other than :data:`PILOT_KEYS` (a refit with other sign rules or
    a longer design reuses the pilots it shares)."""
    train = dataclasses.replace(cfg.train, **{k: getattr(TrainConfig(), k) for k in EXECUTION_KEYS})
    planner = dataclasses.replace(PlannerConfig(), **{k: getattr(cfg.planner, k) for k in PILOT_KEYS})
    return Path(cfg.output.dir) / f"pilots-{_pilot_config(cfg).replace(train=train, planner=planner).hash()}.json"


def _load_cache(path: Path, initial: float) -> dict[str, float | None]:
    """The replicates in ``path`` if it was written for this initial probe loss, else none (logged)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        stored, reps = float(data["initial_loss"]), dict(data["replicates"])
    except (ValueError, KeyError, TypeError) as e:
        log.warning("%s: unreadable pilot cache (%s); its pilots run again", path, e)
        return {}
    if not np.isclose(stored, initial, rtol=1e-4, atol=0.0):  # fp32 rounding at another thread count passes
        log.warning(
            "%s: written for initial probe loss %.6g, not %.6g (model or data changed); its pilots run again",
            path,
            stored,
            initial,
        )
        return {}
    return reps


def make_pilot_runner(
    cfg: ExperimentConfig, cache: Path | None = None, progress: Callable[[str], None] | None = None
) -> Callable[[float, int], float | None]:
    """Load data and model once; return ``run_pilot(q, k) -> rounds to reach F_s`` (None if never),
    averaged over ``planner.pilot_seeds`` repetitions. With ``cache`` (:func:`pilot_cache_path`), each
    finished replicate is written there atomically and one found there is not run again;
    ``run_pilot.reused`` counts those. ``progress`` gets a line as each replicate ends."""
    cfg = _pilot_config(cfg)
    engine, fed, _, _, _ = prepare(cfg)
    r = cfg.lora.rank
    rng = fed.streams.generator("probe")
    clients = rng.choice(fed.num_clients, size=PROBE_SIZE, p=fed.p)
    probe_set = [engine.client_data[n][int(rng.integers(len(engine.client_data[n])))] for n in clients]

    @torch.no_grad()
    def probe_loss(state: LoraState) -> float:
        lora.set_state(engine.modules, state)
        lora.set_scaling(engine.modules, engine.scaling)
        engine.model.eval()
        batch = {k: v.to(engine.device) for k, v in collate(probe_set, engine.tok.pad_token_id).items()}
        return float(engine.loss(batch))  # train.logits: the head at scored positions, or everywhere

    x0 = engine.initial_state()
    initial = probe_loss(x0)
    target = cfg.planner.pilot_loss or DEFAULT_FRACTION * initial

    def rounds_to_target(q: float | np.ndarray, k: int | np.ndarray, seed: int) -> float | None:
        # repetition `seed` redraws coins, sketches and mini-batches; the partition stays the same
        streams = Streams(cfg.seed) if seed == 0 else Streams(int(Streams(cfg.seed).integer_seed("pilot_seed", seed)))
        engine.streams = streams
        alloc = Allocation(
            q=np.broadcast_to(np.asarray(q, dtype=float), (fed.num_clients,)).copy(),
            k=np.broadcast_to(np.asarray(k), (fed.num_clients,)).copy(),
        ).check(r)
        t_cp = t_cm = np.ones(fed.num_clients)  # time is irrelevant here: pilots count rounds

        def probe(t: int, state: LoraState) -> dict:
            if t == 0:
                return {"probe_loss": initial}
            loss = probe_loss(state)
            log.info(
                "pilot q=%s k=%s seed %d round %d: probe loss %.4f (target %.4f)",
                np.mean(q),
                np.mean(k),
                seed,
                t,
                loss,
                target,
            )
            return {"probe_loss": loss, **({"stop": "pilot_loss"} if loss <= target else {})}

        method = build_method(
            "independent",
            MethodContext(p=fed.p, q=alloc.q, k=alloc.k, r=r, streams=streams, server_lr=cfg.fl.server_lr),
        )
        run = Run(
            method=method,
            alloc=alloc,
            t_cp=t_cp,
            t_cm=t_cm,
            r=r,
            streams=streams,
            schedule=Schedule(rounds=cfg.planner.pilot_max_rounds),
            engine=engine,
            executor=InProcessExecutor(engine, cfg.train.client_batch, cfg.train.workers),
            probe=probe,
            x0=x0,
            lr=cfg.train.lr,  # pilots measure rounds at the configured rate (the bound scales them by s)
        )
        recs = run.run().records
        if recs[-1].stop != "pilot_loss":
            return None
        return crossing(recs[-1].round, recs[-2].extra["probe_loss"], recs[-1].extra["probe_loss"], target)

    done = _load_cache(cache, initial) if cache is not None else {}

    def replicate(q: float | np.ndarray, k: int | np.ndarray, seed: int) -> float | None:
        key = json.dumps(
            {"q": np.atleast_1d(q).astype(float).tolist(), "k": np.atleast_1d(k).astype(int).tolist(), "seed": seed}
        )
        reused = key in done
        if reused:
            run_pilot.reused += 1  # type: ignore[attr-defined]
        else:
            done[key] = rounds_to_target(q, k, seed)
            if cache is not None:
                atomic_write_json(cache, {"initial_loss": initial, "target_loss": target, "replicates": done})
        where = f"q={q:g} k={k}" if np.ndim(q) == 0 else f"plan (mean q {np.mean(q):.3g}, k {np.min(k)}-{np.max(k)})"
        msg = (
            f"pilot {where} seed {seed}: "
            + ("never reached" if done[key] is None else f"{done[key]:.3f} rounds")
            + f" to probe loss {target:.4g}"
            + (f" (from {cache})" if reused else "")
        )
        log.info(msg)
        if progress is not None:
            progress(msg)
        return done[key]

    def run_pilot(q: float | np.ndarray, k: int | np.ndarray) -> float | None:
        """Mean rounds over ``planner.pilot_seeds`` repetitions (None if any never reaches F_s);
        the per-seed rounds are left in ``run_pilot.last_replicates`` (bootstrap, PAPER.md §8.4)."""
        try:
            rounds = [replicate(q, k, s) for s in range(cfg.planner.pilot_seeds)]
        finally:
            engine.streams = fed.streams
        run_pilot.last_replicates = tuple(rounds)  # type: ignore[attr-defined]
        reached = [r for r in rounds if r is not None]
        return None if len(reached) < len(rounds) else float(np.mean(reached))

    def run_plan(q: np.ndarray, k: np.ndarray) -> float | None:
        """A verification pilot at a plan's per-client ``q_n, k_n`` (refinement, PAPER.md §8.4)."""
        return run_pilot(q, k)

    run_pilot.reused, run_pilot.cache = 0, cache  # type: ignore[attr-defined]
    run_pilot.run_plan = run_plan  # type: ignore[attr-defined]
    run_pilot.initial_loss = initial  # type: ignore[attr-defined]
    run_pilot.target_loss = target  # type: ignore[attr-defined]
    return run_pilot
