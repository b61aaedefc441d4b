"""Entry points of the planner on its own settings (the ``[planner]`` section) and plain values.

:func:`build_problem` assembles the P2 instance (eq. 21) from client profiles, data weights ``p_n``,
the rank ``r``, the bandwidth ``W`` and theta (``planner.theta`` or ``planner.theta_file``,
:func:`resolve_theta`), with the plan kept inside the pilots' region (:func:`pilot_region`);
:func:`plan_problem` solves it. The translation from a whole experiment config (which profiles,
which weights, which payload) is the builder's: :func:`fedsketch.runner.build.problem_from_config`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedsketch.config import PlannerConfig
from fedsketch.config.readers import ReadError
from fedsketch.network.profiles import ClientProfiles
from fedsketch.network.round_time import (
    DEFAULT_MC_SAMPLES,
    ENUMERATE_MAX_CLIENTS,
    RoundTimeEstimate,
    expected_round_time,
)
from fedsketch.planner.baselines import Baseline
from fedsketch.planner.bound import PlanProblem, Theta
from fedsketch.planner.estimate import EstimationError, PilotObservation, load_pilots, load_theta_file
from fedsketch.planner.pilot_design import plan_region
from fedsketch.planner.solve import Plan, make_plan

#: name of the random stream of the randomised rank baselines
BASELINE_STREAM = "planner_baselines"
#: name of the random stream of the sampled rounds behind :func:`sampled_round_time`
ROUND_TIME_STREAM = "plan_round_time"
#: participation masks x clients that :func:`sampled_round_time` may evaluate (about 0.5 s on one core)
SAMPLED_ROUND_TIME_BUDGET = 10_000_000


def resolve_theta(pl: PlannerConfig) -> Theta:
    """theta from ``planner.theta`` (4 numbers) or ``planner.theta_file``; a clear error otherwise."""
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


def build_problem(
    pl: PlannerConfig,
    profiles: ClientProfiles,
    p: np.ndarray,
    r: int,
    bandwidth_mbps: float,
    compute_model: str,
    theta: Theta | None = None,
    pilots: Sequence[PilotObservation] | None = None,
) -> PlanProblem:
    """The P2 instance (eq. 21) of these clients under the ``[planner]`` settings ``pl``.

    Parameters
    ----------
    pl : PlannerConfig
    profiles : ClientProfiles
        tau_cp, tau_cm, tau_0 of the N clients.
    p : array (N,)
        Data weights or sizes (normalised by :class:`PlanProblem`).
    r : int
        LoRA rank.
    bandwidth_mbps : float
        Total bandwidth W (eq. 11).
    compute_model : str
        ``network.compute_model``: how t_cp scales with k (eq. 12).
    theta : Theta, optional
        Else :func:`resolve_theta`.
    pilots : sequence of PilotObservation, optional
        The pilots whose region the plan must stay in (:func:`pilot_region`); default: those
        recorded in ``planner.theta_file``.
    """
    q_floor, k_min = pilot_region(pl, r, p, pilots)
    return PlanProblem(
        profiles,
        np.asarray(p, dtype=float),
        int(r),
        float(bandwidth_mbps),
        theta if theta is not None else resolve_theta(pl),
        compute_model=compute_model,
        feasibility=pl.feasibility,
        margin=pl.margin,
        q_floor=q_floor,
        k_min=k_min,
        stability=pl.stability,
        max_step_factor=float(pl.max_step_factor),
    )


def pilot_region(
    pl: PlannerConfig, r: int, p: np.ndarray | None = None, pilots: Sequence[PilotObservation] | None = None
) -> tuple[float, int]:
    """``(q_floor, k_min)`` of the plan: the config's, or raised so that plans stay in the pilots' region.

    PAPER.md §8.4: the fitted bound is not trusted outside the region the pilots measured. Unless
    ``planner.extrapolate``, :func:`fedsketch.planner.pilot_design.plan_region` keeps the config's bounds
    when the pilots' (X, Y) hull holds every allowed plan (the ``cover`` design under ``constrain``),
    and otherwise raises them to the smallest pilot ``q`` and ``k``. ``pilots`` default to those of
    ``planner.theta_file``; inline ``planner.theta`` has no pilots: no change. Without ``p`` only
    the box applies.
    """
    r = int(r)
    q_floor, k_min = float(pl.q_min_floor), min(int(pl.k_min), r)
    if pl.extrapolate:
        return q_floor, k_min
    if pilots is None:
        if pl.theta or not pl.theta_file:
            return q_floor, k_min
        try:
            pilots = load_pilots(pl.theta_file)
        except ReadError:  # no pilots recorded in the file: nothing to restrict to (preflight names bad ones)
            return q_floor, k_min
    if not pilots:
        return q_floor, k_min
    if p is not None:
        qf, km, _ = plan_region(
            pilots,
            p,
            r,
            stability=pl.stability,
            max_step_factor=float(pl.max_step_factor),
            q_floor=q_floor,
            k_min=k_min,
        )
        return qf, km
    homo = [o for o in pilots if o.X is None]  # homogeneous pilots define the box
    if not homo:
        return q_floor, k_min
    return max(q_floor, min(o.q for o in homo)), min(r, max(k_min, min(o.k for o in homo)))


def plan_problem(prob: PlanProblem, pl: PlannerConfig, rng: np.random.Generator) -> tuple[Plan, list[Baseline]]:
    """Solve ``prob`` with the ``[planner]`` settings ``pl`` (Algorithm 2 lines 5–22); the randomised
    rank baselines draw from ``rng`` (the run's :data:`BASELINE_STREAM`)."""
    return make_plan(
        prob,
        rng,
        fixed_q=pl.baseline_q,
        k_starts=tuple(float(f) for f in pl.k_starts),
        k_moves=pl.k_moves,
        q_solver=pl.q_solver,
        max_outer=pl.max_outer,
        rtol=pl.rtol,
        multistart_max_n=int(pl.multistart_max_n),
    )


def sampled_round_time(
    prob: PlanProblem, q: np.ndarray, k: np.ndarray, rng: np.random.Generator
) -> RoundTimeEstimate | None:
    """``E[T]`` at ``(q, k)`` from eq. 10 itself: exact over all masks for N <= 12, else the mean over
    sampled participation masks (at most 4,000, within :data:`SAMPLED_ROUND_TIME_BUDGET`), with its
    standard error; ``None`` when even 100 masks exceed the budget (N > 100,000).

    The planner's round time is the Theorem 2 bound (eqs. 14, 17, 20), which is above ``E[T]``. The
    eq. 11 root is no estimate of ``E[T]`` when ``q`` is small: its root exceeds the compute time of
    every client with ``q_n > 0``, however rarely that client is sampled.
    """
    t_cp, t_cm = prob.times(np.asarray(k))
    samples = min(DEFAULT_MC_SAMPLES, SAMPLED_ROUND_TIME_BUDGET // max(prob.N, 1))
    if prob.N > ENUMERATE_MAX_CLIENTS and samples < 100:
        return None
    return expected_round_time(np.asarray(q, dtype=float), t_cp, t_cm, prob.W, method="auto", rng=rng, samples=samples)


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
