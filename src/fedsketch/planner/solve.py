"""Alternating minimisation of P2 (Algorithm 2 lines 5–22; PAPER.md §2.9, §3, §7.4).

From the joint best-response start (:mod:`fedsketch.planner.meanfield`) and, up to
``multistart_max_n`` clients, from each start ``k^0`` (multi-start, fractions of r), alternate a q-step
(eq. 26, reference or fast solver) and a greedy k-step until ``k`` stops changing or ``J`` improves by
less than ``rtol`` relatively. Both steps never increase ``J``. Above ``multistart_max_n`` clients the
discrete choices that couple all clients, the rank floor of ``constrain`` (§8.1) and the learning-rate
scale ``s`` of ``scale_lr`` (§8.2), are made on a systematic subsample (:func:`subsample_problem`), and
the plan on all N clients is one best-response or subsample start, one q-step and one k-step.
:func:`make_plan` then scores the Fig. 2–3 baselines with the same model and, should a feasible
baseline beat the plan, re-runs the alternation from it, so the returned plan is never worse than any
feasible baseline.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from fedsketch.network import ClientProfiles
from fedsketch.planner.baselines import DEFAULT_FIXED_Q, Baseline, baseline_points, baselines
from fedsketch.planner.bound import PlanProblem, Theta
from fedsketch.planner.kstep import k_step
from fedsketch.planner.meanfield import best_response_start
from fedsketch.planner.qstep import q_step
from fedsketch.planner.qstep_problem import FixedK

#: default multi-start ranks k^0 as fractions of r (spec §7.4)
DEFAULT_K_STARTS = (1.0, 0.5, 0.25)
#: largest N at which the k_starts multi-start runs next to the best-response start
DEFAULT_MULTISTART_MAX_N = 20_000
#: clients of the systematic subsample that makes the large-N path's discrete choices (rank floor, s)
DEFAULT_SUBSAMPLE_N = 2_000


class _SolveOptions(TypedDict):
    """The :func:`solve` keywords that its large-N path passes on to the solves of a subsample."""

    k_starts: Sequence[float]
    k_moves: str
    q_solver: str
    max_outer: int
    rtol: float
    q_kwargs: dict
    multistart_max_n: int


def subsample_problem(prob: PlanProblem, m: int) -> tuple[PlanProblem, np.ndarray]:
    """The same P2 on ``m`` of the ``N`` clients: a systematic sample in ``tau_cp`` order (deterministic).

    ``p`` is renormalised over the sample. P2 at this size is the same problem in the mean-field
    sense: with ``q' = q N / m`` the sums ``X(q) = sum p^2 / q``, ``sum q t_cm`` and the survival
    ``prod (1 - q)`` above every time keep their expected values, so the planned ``J``, rank floor,
    ``Phi`` and ``s`` barely move with N (``bench/planner.py``: J = 2989, 2975, 2982 at N = 5000,
    50,000, 10^6 under ``constrain``). Used only to choose the discrete quantities of the large-N
    path; the plan itself is solved on all N clients.

    Returns
    -------
    problem, idx
        The subsampled problem and the client ids it keeps, shape (m,).
    """
    n = prob.N
    m = int(min(max(m, 1), n))
    order = np.argsort(prob.profiles.tau_cp, kind="stable")
    idx = order[np.unique(np.round(np.linspace(0, n - 1, m)).astype(np.int64))]  # (m,)
    prof = prob.profiles
    sub_prof = ClientProfiles(prof.tau_cp[idx], prof.tau_cm[idx], prof.tau_0[idx])
    return dataclasses.replace(prob, profiles=sub_prof, p=prob.p[idx]), idx


@dataclass
class Plan:
    """The planner's answer.

    Attributes
    ----------
    q : array (N,)
        Participation probabilities ``q_n``.
    k : int array (N,)
        Sketch ranks ``k_n``.
    rounds : float
        Predicted rounds ``theta4 / D(q,k)`` (eq. 21) to reach the estimation loss.
    round_time : float
        Planned expected round time, the Theorem 2 bound ``T_hat`` (eq. 20), seconds.
    total_time : float
        ``rounds * round_time`` = the objective ``J`` (eq. 21), seconds.
    objective : float
        Same as ``total_time``.
    round_time_approx : float
        Eq. 11 root at ``(q, k)``: close to ``E[T]`` when every ``q_n`` is large, high when ``q`` is small
        (it exceeds the compute time of every client with ``q_n > 0``); ``fedsketch plan`` reports ``E[T]`` itself.
    diagnostics : dict
        Solver, feasibility form, per-start objectives, iterations, timings.
    stability : dict
        PAPER.md §8.3: ``step_factor`` Phi = kappa_max Omega, ``lr_scale`` s (``scale_lr``; the
        run trains at ``train.lr * s``), ``binding`` (whether ``max_step_factor`` binds), the form
        ``stability`` and ``max_step_factor``, ``omega``, ``kappa_max``.
    """

    q: np.ndarray
    k: np.ndarray
    rounds: float
    round_time: float
    total_time: float
    objective: float
    round_time_approx: float
    diagnostics: dict = field(default_factory=dict)
    stability: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "q": [float(x) for x in self.q],
            "k": [int(x) for x in self.k],
            "rounds": float(self.rounds),
            "round_time": float(self.round_time),
            "total_time": float(self.total_time),
            "objective": float(self.objective),
            "round_time_approx": float(self.round_time_approx),
            "step_factor": float(self.stability.get("step_factor", np.nan)),
            "lr_scale": float(self.stability.get("lr_scale", 1.0)),
            "stability_binding": bool(self.stability.get("binding", False)),
            "diagnostics": self.diagnostics,
        }


def _alternate(
    prob: PlanProblem,
    k0: np.ndarray,
    q0: np.ndarray | None,
    *,
    q_solver: str,
    k_moves: str,
    max_outer: int,
    rtol: float,
    q_kwargs: dict,
) -> tuple[np.ndarray, np.ndarray, float, dict]:
    k = prob.feasible_k_start(k0)
    if q0 is not None:
        q0 = np.maximum(np.asarray(q0, dtype=float), prob.q_lower(k))
        q0 = np.minimum(q0, 1.0)
    qs = q_step(prob, k, q0, solver=q_solver, **q_kwargs)
    q, J = qs.q, qs.objective
    history, statuses, q_seconds = [J], [qs.status], qs.seconds
    it = 0  # outer iterations started (returned)
    for _ in range(max_outer):
        it += 1
        ks = k_step(prob, q, k, moves=k_moves)
        if not np.any(ks.k != k):  # no rank moved: the q-step would start where it stopped
            history.append(J)
            break
        inner = {"start_from_ones": False, **q_kwargs} if q_solver == "fast" else q_kwargs
        qs = q_step(prob, ks.k, q, solver=q_solver, **inner)
        q_seconds += qs.seconds
        statuses.append(qs.status)
        changed = bool(np.any(ks.k != k))
        J_new = qs.objective
        improvement = (J - J_new) / J if np.isfinite(J) else np.inf
        if J_new <= J:
            k, q, J = ks.k, qs.q, J_new
        history.append(J)
        if not changed or improvement < rtol:
            break
    return (
        q,
        k,
        J,
        {"outer_iterations": it, "history": history, "q_step_seconds": q_seconds, "last_q_status": statuses[-1]},
    )


def solve(
    prob: PlanProblem,
    *,
    k_starts: Sequence[float] = DEFAULT_K_STARTS,
    k_moves: str = "both",
    q_solver: str = "fast",
    max_outer: int = 20,
    rtol: float = 1e-6,
    extra_starts: Sequence[tuple[np.ndarray | None, np.ndarray]] = (),
    q_kwargs: dict | None = None,
    best_response: bool = True,
    multistart_max_n: int = DEFAULT_MULTISTART_MAX_N,
    subsample_n: int = DEFAULT_SUBSAMPLE_N,
    k_floor: int | None = None,
) -> Plan:
    """Algorithm 2's alternating minimisation with multi-start (spec §7.4).

    Parameters
    ----------
    prob : PlanProblem
    k_starts : sequence of float
        Starting ranks ``k^0 = max(1, round(f r))`` for each fraction ``f`` (each raised
        client-wise until the Appendix C box is non-empty).
    k_moves : {"decrease", "both"}
        k-step moves.
    q_solver : {"fast", "reference"}
        q-step solver (:mod:`fedsketch.planner.qstep`).
    max_outer : int
        Alternating iterations per start.
    rtol : float
        Stop when the relative improvement of ``J`` drops below this.
    extra_starts : sequence of (q0 or None, k0)
        Additional starting points (e.g. baselines).
    q_kwargs : dict, optional
        Passed to the q-step solver.
    best_response : bool
        Also start from the joint best-response point of :mod:`fedsketch.planner.meanfield`
        (prices ``1/T``, ``1/D``; O(r N) per iteration). On the recorded instances of
        ``tests/planner/data/solver_oracle.json`` it alone beats the ``k_starts`` multi-start by
        5-26 % in J (``tests/planner/test_scale.py``).
    multistart_max_n : int
        Run the ``k_starts`` multi-start only while ``N <= multistart_max_n``; above it (and when
        ``best_response`` is on) only the best-response start is polished, which keeps the
        planner linear in N (N = 1,000,000 in seconds, ``bench/planner.py``).
    subsample_n : int
        Large-N path (``N > multistart_max_n``) under ``constrain``: the rank floor of the
        best-response start is the smallest rank of the plan for ``subsample_n`` clients
        (:func:`subsample_problem`, solved by this function's small-N path) instead of one
        best-response start per floor; under ``scale_lr`` the subsample's plan also fixes ``s``
        (:func:`_solve_scale_lr_large`). Either way each step on all N clients runs once.
    k_floor : int, optional
        Large-N ``constrain`` path: use this rank floor instead of the subsample's.

    Returns
    -------
    Plan
    """
    prob.require_reachable()
    t0 = time.perf_counter()
    q_kwargs = dict(q_kwargs or {})
    large = best_response and prob.N > multistart_max_n and subsample_n < prob.N and not extra_starts
    # the subsample is solved by the small-N path, multi-start included
    common: _SolveOptions = {
        "k_starts": k_starts,
        "k_moves": k_moves,
        "q_solver": q_solver,
        "max_outer": max_outer,
        "rtol": rtol,
        "q_kwargs": q_kwargs,
        "multistart_max_n": max(multistart_max_n, subsample_n),
    }
    if large and prob.stability == "scale_lr" and q_solver == "fast":
        return _solve_scale_lr_large(prob, subsample_n, common, t0)
    starts: list[tuple[str, np.ndarray | None, np.ndarray]] = []
    br_info = None
    sub_info = None
    br_q0 = None
    lam0s: dict[str, float] = {}
    if best_response:
        tb = time.perf_counter()
        floors: Sequence[int | None] = [None]
        if prob.stability == "constrain":  # kappa_max couples all clients: one start per rank floor (§8.1)
            floors = sorted(
                {int(round(x)) for x in np.linspace(prob.k_stable, prob.r, min(5, prob.r - prob.k_stable + 1))}
            )
        if large:  # large N: the subsample picks the floor (and, at uniform ranks, the whole start)
            sub_prob = subsample_problem(prob, subsample_n)[0]
            sub = solve(sub_prob, **common)
            if prob.stability == "constrain":
                floors = [max(prob.k_stable, int(sub.k.min()) if k_floor is None else int(k_floor))]
            # the subsample's expected cohort, spread evenly, starts the best response near its prices
            br_q0 = np.full(prob.N, min(1.0, float(sub.q.sum()) / prob.N))
            sub_info = {
                "N": sub.diagnostics["N"],
                "k_floor": int(floors[0] or sub.k.min()),
                "J": sub.objective,
                "seconds": sub.diagnostics["solve_seconds"],
            }
            k_lift = int(sub.k.min())
            if int(sub.k.max()) == k_lift and (prob.stability != "constrain" or k_lift == floors[0]):
                # uniform ranks: no rank to choose per client, so the best response would only move q;
                # the q-step starts from the spread cohort at the subsample's dual price instead
                floors = []
                lam = _dual_price(sub_prob, sub.q, sub.k) if prob.stability == "constrain" else 0.0
                lam0s["subsample_lift"] = lam
                starts.append(("subsample_lift", br_q0, np.full(prob.N, k_lift, dtype=np.int64)))
                sub_info["lambda"] = lam
        br_starts = []
        for fl in floors:
            q_br, k_br, info = best_response_start(prob, k_floor=fl, q0=br_q0)
            name = "best_response" if fl is None else f"best_response@k>={fl}"
            br_starts.append((info["history"][-1], name, q_br, k_br))
            lam0s[name] = info.get("lambda", 0.0)
            if br_info is None or info["history"][-1] < br_info["history"][-1]:
                br_info = info
        br_starts.sort(key=lambda t: t[0])
        if prob.N > multistart_max_n:  # large N: polish only the best floor (its J ranks the polished ones)
            br_starts = br_starts[:1]
        starts += [(name, q_br, k_br) for _, name, q_br, k_br in br_starts]
        if br_info is not None:
            br_info["seconds"] = time.perf_counter() - tb
    for f in k_starts:
        if not (0 < f <= 1):
            raise ValueError(f"k_starts must be fractions of r in (0, 1], got {f!r}")
        if best_response and prob.N > multistart_max_n:
            continue
        starts.append((f"k0={f:g}r", None, np.full(prob.N, max(prob.k_min, int(round(f * prob.r))), dtype=np.int64)))
    for i, (q0, k0) in enumerate(extra_starts):
        starts.append((f"extra{i}", q0, np.asarray(k0, dtype=np.int64)))
    if not starts:
        raise ValueError("solve needs at least one start (k_starts or extra_starts)")
    best: tuple[np.ndarray, np.ndarray, float, str] | None = None
    per_start = {}
    for name, q0, k0 in starts:
        qk = q_kwargs
        if (name.startswith("best_response") or name == "subsample_lift") and q_solver == "fast":
            qk = {"start_from_ones": False, "lam0": lam0s.get(name) or None, **q_kwargs}  # already a good q
        q, k, J, info = _alternate(
            prob, k0, q0, q_solver=q_solver, k_moves=k_moves, max_outer=max_outer, rtol=rtol, q_kwargs=qk
        )
        per_start[name] = {"objective": J, **{kk: v for kk, v in info.items() if kk != "history"}}
        if best is None or J < best[2]:
            best = (q, k, J, name)
    assert best is not None  # starts is not empty
    q, k, J, name = best
    viol = prob.violations(q, k)
    if viol:  # pragma: no cover - both steps keep feasibility; guard against silent failure
        raise RuntimeError(f"planner produced an infeasible point: {viol[:3]}")
    diag = {
        "q_solver": q_solver,
        "feasibility": prob.feasibility,
        "k_moves": k_moves,
        "best_start": name,
        "starts": per_start,
        "solve_seconds": time.perf_counter() - t0,
        "N": prob.N,
        "r": prob.r,
        "compute_model": prob.compute_model,
        "D": prob.D(q, k),
        "theta": prob.theta.as_array().tolist(),
    }
    if br_info is not None:
        diag["best_response"] = {
            "iterations": br_info["iterations"],
            "J": br_info["history"][-1],
            "seconds": br_info["seconds"],
        }
    if sub_info is not None:
        diag["subsample"] = sub_info
    rounds = prob.rounds(q, k)
    rt = prob.round_time(q, k)
    return Plan(q, k, rounds, rt, rounds * rt, J, prob.round_time_approx(q, k), diag, prob.stability_report(q, k))


def _dual_price(prob: PlanProblem, q: np.ndarray, k: np.ndarray) -> float:
    """Least-squares dual price of ``X(q) <= x_max`` (§8.1) at a solved plan: the ``lam`` with
    ``grad_y log J + lam grad_y X ~ 0`` over the clients strictly inside their box (``y = log q``).
    ``X`` and the per-client gradients scale alike with N, so the price carries over to the full
    problem (the warm ``lam0`` of :func:`fedsketch.planner.qstep_fast.q_step_fast`)."""
    fx = FixedK(prob, k)
    return fx.price(fx.to_sorted(q))


def _solve_scale_lr_large(prob: PlanProblem, subsample_n: int, common: _SolveOptions, t0: float) -> Plan:
    """``scale_lr`` (PAPER.md §8.2) at large N: ``s`` and the rank floor from a subsample, then one
    constrained P2 on all N clients.

    For a fixed ``s``, §8.2's ``J = (theta4 / s) / (theta1 - s V) T`` restricted to
    ``Phi(q, k) <= Phi_max / s`` (so that the true ``s(q, k) >= s``) is P2 with
    ``theta' = (theta1, s theta2, s theta3, theta4 / s)`` under ``constrain`` at
    ``max_step_factor = Phi_max / s`` (§8.1): the q-step's 1-D search over ``s`` is done on the
    :func:`subsample_problem` (whose ``s`` matches the full problem's to 1e-3: 0.2326 at N = 500,
    0.2323 at N = 5000, ``tests/planner/data/solver_oracle_stability.json``), and the full
    problem is solved once at that ``s``. The result is made feasible for the true problem
    (box and ``D >= delta`` at the true ``theta``), polished by one k-step of the true
    objective, and scored with it (:meth:`PlanProblem.objective`).
    """
    sub = solve(subsample_problem(prob, subsample_n)[0], **common)
    s = float(sub.stability["lr_scale"])
    floor = int(sub.k.min())
    th = prob.theta
    surrogate = dataclasses.replace(
        prob,
        theta=Theta(th.theta1, s * th.theta2, s * th.theta3, th.theta4 / s),
        stability="constrain",
        max_step_factor=prob.max_step_factor / s,
    )
    sur_options: _SolveOptions = {**common, "multistart_max_n": 0}
    sur = solve(surrogate, **sur_options, subsample_n=subsample_n, k_floor=max(floor, surrogate.k_stable))
    k = sur.k
    fx = FixedK(prob, k)
    q = fx.to_clients(fx.repair(np.maximum(fx.to_sorted(sur.q), fx.lb)))  # true box and D >= delta
    ks = k_step(prob, q, k, moves=common["k_moves"])
    if ks.objective < prob.objective(q, k):
        k = ks.k
    J = prob.objective(q, k)
    viol = prob.violations(q, k)
    if viol:  # pragma: no cover - repair and the k-step keep feasibility
        raise RuntimeError(f"planner produced an infeasible point: {viol[:3]}")
    diag = {
        "q_solver": common["q_solver"],
        "feasibility": prob.feasibility,
        "k_moves": common["k_moves"],
        "best_start": "scale_lr_large",
        "starts": {"surrogate": sur.diagnostics["starts"]},
        "solve_seconds": time.perf_counter() - t0,
        "N": prob.N,
        "r": prob.r,
        "compute_model": prob.compute_model,
        "D": prob.D(q, k),
        "theta": th.as_array().tolist(),
        "subsample": {
            "N": sub.diagnostics["N"],
            "lr_scale": s,
            "k_floor": floor,
            "J": sub.objective,
            "seconds": sub.diagnostics["solve_seconds"],
        },
        "surrogate": {
            "J": sur.objective,
            "theta": surrogate.theta.as_array().tolist(),
            "max_step_factor": surrogate.max_step_factor,
            "seconds": sur.diagnostics["solve_seconds"],
        },
    }
    rounds = prob.rounds(q, k)
    rt = prob.round_time(q, k)
    return Plan(q, k, rounds, rt, rounds * rt, J, prob.round_time_approx(q, k), diag, prob.stability_report(q, k))


def make_plan(
    prob: PlanProblem,
    rng: np.random.Generator,
    *,
    fixed_q: float = DEFAULT_FIXED_Q,
    max_polish: int = 3,
    **solve_kwargs,
) -> tuple[Plan, list[Baseline]]:
    """Solve, score the baselines, and re-solve from any feasible baseline that beats the plan.

    Parameters
    ----------
    prob : PlanProblem
    rng : numpy Generator
        For the random rank baselines (pass ``Streams(seed).generator("planner_baselines")``).
    fixed_q : float
        q of the ``fixed`` and rank baselines.
    max_polish : int
        At most this many re-solves from a better baseline.
    **solve_kwargs
        Passed to :func:`solve`.

    Returns
    -------
    plan, baselines
    """
    bl_state = rng.bit_generator.state
    points = None
    plan = solve(prob, **solve_kwargs)
    polished = 0
    for _ in range(max_polish):
        rng.bit_generator.state = bl_state  # the same random baselines every time
        points = baseline_points(prob, plan.q, rng, fixed_q)
        rng.bit_generator.state = bl_state
        scored = baselines(prob, plan.q, rng, fixed_q)
        beat = [(b.total_time, i) for i, b in enumerate(scored) if b.feasible and b.total_time < plan.objective]
        if not beat:
            break
        _, i = min(beat)
        extra = solve(
            prob,
            **{**solve_kwargs, "k_starts": (), "best_response": False, "extra_starts": [(points[i][2], points[i][3])]},
        )
        polished += 1
        if extra.objective < plan.objective:
            extra.diagnostics["polished_from_baseline"] = points[i][0]
            extra.diagnostics["starts"] = {**plan.diagnostics["starts"], **extra.diagnostics["starts"]}
            plan = extra
    rng.bit_generator.state = bl_state
    scored = baselines(prob, plan.q, rng, fixed_q)
    plan.diagnostics["polish_solves"] = polished
    return plan, scored
