"""Config-level entry points of the planner (used by the CLI commands and the engine's strategies).

Builds a :class:`PlanProblem` from an :class:`~fedsketch.config.ExperimentConfig`: data weights
``p_n`` (injected, or from ``fedsketch.data.partition.partition_sizes``), client profiles
(:func:`fedsketch.network.profiles.profiles_from_config`, given the full-rank upload size the
caller computed from the model), the rank ``lora.rank``, the bandwidth
``network.bandwidth_mbps`` and theta (``planner.theta`` or ``planner.theta_file``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from fedsketch.network.profiles import ClientProfiles, profiles_from_config
from fedsketch.planner.baselines import Baseline
from fedsketch.planner.bound import PlanProblem, Theta
from fedsketch.planner.estimate import EstimationError, PilotObservation, load_pilots, load_theta_file, plan_region
from fedsketch.planner.solve import Plan, make_plan
from fedsketch.rng import Streams

WeightsFn = Callable[[object], np.ndarray]
#: name of the random stream of the randomised rank baselines
BASELINE_STREAM = "planner_baselines"


def resolve_theta(cfg) -> Theta:
    """theta from ``planner.theta`` (4 numbers) or ``planner.theta_file``; a clear error otherwise."""
    pl = cfg.planner
    if pl.theta:
        try:
            return Theta.from_sequence(pl.theta)
        except (TypeError, ValueError) as e:
            raise EstimationError(f"planner.theta: {e}") from None
    if pl.theta_file:
        return load_theta_file(pl.theta_file)
    raise EstimationError(
        "no theta: run `fedsketch estimate CONFIG --out theta.json` and set planner.theta_file='theta.json', "
        "or set planner.theta=[theta1, theta2, theta3, theta4]"
    )


def default_weights(cfg) -> np.ndarray:
    """Client dataset sizes of the real partition (``fedsketch.data.partition.partition_sizes``)."""
    try:
        from fedsketch.data.partition import partition_sizes
    except ImportError as e:  # pragma: no cover - depends on the checkout
        raise ValueError(f"data weights p_n: fedsketch.data.partition.partition_sizes is unavailable ({e})") from None
    try:
        return np.asarray(partition_sizes(cfg), dtype=float)
    except Exception as e:  # noqa: BLE001 - report any data problem as a planner input error
        raise ValueError(f"data weights p_n: could not build the client partition: {e}") from e


def problem_from_config(cfg, p: np.ndarray | None = None, profiles: ClientProfiles | None = None,
                        weights_fn: WeightsFn | None = None, theta: Theta | None = None,
                        payload_mbit: float | None = None,
                        pilots: Sequence[PilotObservation] | None = None) -> PlanProblem:
    """The P2 instance (eq. 21) described by ``cfg``.

    Parameters
    ----------
    cfg : ExperimentConfig
    p : array (N,), optional
        Data weights or sizes; else ``weights_fn(cfg)`` (default :func:`default_weights`).
    profiles : ClientProfiles, optional
        Else :func:`profiles_from_config` with ``payload_mbit``.
    theta : Theta, optional
        Else :func:`resolve_theta`.
    payload_mbit : float, optional
        Full-rank LoRA upload size (Mbit) for the seeded profile draw, as the run computes it
        (``fedsketch.engine.payload.config_payload_mbit``); unused when ``profiles`` is given.
    pilots : sequence of PilotObservation, optional
        The pilots whose region the plan must stay in (:func:`pilot_region`); default: those
        recorded in ``planner.theta_file``.
    """
    if p is None:
        p = (weights_fn or default_weights)(cfg)
    if profiles is None:
        profiles = profiles_from_config(cfg, payload_mbit=payload_mbit)
    pl = cfg.planner
    q_floor, k_min = pilot_region(cfg, p, pilots)
    return PlanProblem(profiles, np.asarray(p, dtype=float), int(cfg.lora.rank), float(cfg.network.bandwidth_mbps),
                       theta if theta is not None else resolve_theta(cfg), compute_model=cfg.network.compute_model,
                       feasibility=pl.feasibility, margin=pl.margin, q_floor=q_floor,
                       k_min=k_min, stability=pl.stability,
                       max_step_factor=float(pl.max_step_factor))


def pilot_region(cfg, p: np.ndarray | None = None,
                 pilots: Sequence[PilotObservation] | None = None) -> tuple[float, int]:
    """``(q_floor, k_min)`` of the plan: the config's, or raised so that plans stay in the pilots' region.

    PAPER.md §8.4: the fitted bound is not trusted outside the region the pilots measured. Unless
    ``planner.extrapolate``, :func:`fedsketch.planner.estimate.plan_region` keeps the config's bounds
    when the pilots' (X, Y) hull holds every allowed plan (the ``cover`` design under ``constrain``),
    and otherwise raises them to the smallest pilot ``q`` and ``k``. ``pilots`` default to those of
    ``planner.theta_file``; inline ``planner.theta`` has no pilots: no change. Without ``p`` only
    the box applies.
    """
    pl = cfg.planner
    r = int(cfg.lora.rank)
    q_floor, k_min = float(pl.q_min_floor), min(int(pl.k_min), r)
    if pl.extrapolate:
        return q_floor, k_min
    if pilots is None:
        if pl.theta or not pl.theta_file:
            return q_floor, k_min
        try:
            pilots = load_pilots(pl.theta_file)
        except EstimationError:
            return q_floor, k_min  # no pilots recorded in the file: nothing to restrict to
    if not pilots:
        return q_floor, k_min
    if p is not None:
        qf, km, _ = plan_region(pilots, p, r, stability=pl.stability, max_step_factor=float(pl.max_step_factor),
                                q_floor=q_floor, k_min=k_min)
        return qf, km
    homo = [o for o in pilots if o.X is None]  # homogeneous pilots define the box
    if not homo:
        return q_floor, k_min
    return max(q_floor, min(o.q for o in homo)), min(r, max(k_min, min(o.k for o in homo)))


def plan_problem(prob: PlanProblem, cfg) -> tuple[Plan, list[Baseline]]:
    """Solve ``prob`` with the ``planner`` settings of ``cfg``; baselines use a seeded stream."""
    pl = cfg.planner
    rng = Streams(cfg.seed).generator(BASELINE_STREAM)
    return make_plan(prob, rng, fixed_q=pl.baseline_q, k_starts=tuple(float(f) for f in pl.k_starts),
                     k_moves=pl.k_moves, q_solver=pl.q_solver, max_outer=pl.max_outer, rtol=pl.rtol,
                     multistart_max_n=int(pl.multistart_max_n))


def plan_from_config(cfg, p: np.ndarray | None = None, profiles: ClientProfiles | None = None,
                     weights_fn: WeightsFn | None = None,
                     payload_mbit: float | None = None) -> tuple[Plan, list[Baseline], PlanProblem]:
    """Build the problem from ``cfg`` and solve it (Algorithm 2 lines 5–22)."""
    prob = problem_from_config(cfg, p, profiles, weights_fn, payload_mbit=payload_mbit)
    plan, bls = plan_problem(prob, cfg)
    return plan, bls, prob


def plan_json(plan: Plan, bls: list[Baseline], prob: PlanProblem, include_vectors: bool = True) -> dict:
    """The JSON object of ``fedsketch plan --json``: q, k, rounds, round_time, total_time, baselines, ..."""
    d = plan.to_dict()
    d["baselines"] = {b.name: b.to_dict(include_vectors) for b in bls}
    d["feasibility"] = prob.feasibility
    d["stability"] = plan.stability
    d["theta"] = prob.theta.as_array().tolist()
    d["N"], d["r"], d["W"] = prob.N, prob.r, prob.W
    d["tau_cp"], d["tau_cm"] = prob.profiles.tau_cp.tolist(), prob.profiles.tau_cm.tolist()
    return d
