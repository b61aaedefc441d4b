"""The reference q-step (PAPER.md §2.9): the rebuilt P3 (eq. 26) by sequential convex approximation and cvxpy.

For a round-time budget ``T_bar`` (the control variable of eq. 24) minimise ``sum_n c_n / q_n`` (whose argmin
is that of the exact ``theta4 / D``) subject to ``T_hat(q) <= T_bar`` linearised at the current point (sequential
convex approximation, gradient linearisation) and the Appendix C constraint, with cvxpy (Clarabel, falling
back to SCS); ``T_bar`` is scanned on a geometric grid over ``(T_hat(q_min), T_hat(1)]`` and refined by golden
section, every candidate scored with the exact ``J`` (eq. 21). The result is the better of that solution and
the warm start, so the alternating loop never gets worse; failed solves raise :class:`SolverError` carrying
the solver status.
"""

from __future__ import annotations

import math
import time

import numpy as np

from fedsketch.planner.bound import PlanProblem
from fedsketch.planner.qstep_problem import FixedK, QStepResult, SolverError, best_candidate

#: cvxpy solvers tried in order by the reference q-step (spec §5: Clarabel sometimes fails near T_lo)
REFERENCE_SOLVERS = ("CLARABEL", "SCS")
_OK_STATUSES = ("optimal", "optimal_inaccurate")
#: golden ratio conjugate (1/phi) used by the golden-section refinement
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


class _P3:
    """Parametric cvxpy model of P3(T_bar) with the linearised round-time constraint (DPP)."""

    def __init__(self, fx: FixedK) -> None:
        import cvxpy as cp  # local: only the reference path needs cvxpy

        self.cp = cp
        n = fx.cs.size
        scale = float(fx.cs.max())  # objective scaling keeps the conic solver well conditioned
        self.q = cp.Variable(n)
        self.g = cp.Parameter(n, nonneg=True)  # gradient of T_hat at the linearisation point
        self.b = cp.Parameter()  # T_bar - T_hat(q~) + g . q~
        inv = cp.multiply(fx.cs / scale, cp.inv_pos(self.q))
        cons = [self.q >= fx.lb, self.q <= 1, self.g @ self.q <= self.b]
        if fx.prob.feasibility == "exact":
            cons.append(cp.sum(inv) <= (fx.t1 - fx.delta) / scale)  # D(q,k) >= delta (eq. 36)
        if fx.x_max < np.inf:  # stability = constrain: X(q) <= Phi_max / kappa_max - sum p(1-p) (§8.1)
            cons.append(cp.sum(cp.multiply(fx.p2, cp.inv_pos(self.q))) <= fx.x_max)
        self.problem = cp.Problem(cp.Minimize(cp.sum(inv)), cons)
        # cvxpy's compute_once decorator is annotated Callable[[T], R], which drops is_dcp's dpp parameter
        assert self.problem.is_dcp(dpp=True)  # type: ignore[call-arg]

    def solve(self, g: np.ndarray, b: float, solvers: tuple[str, ...]) -> tuple[np.ndarray | None, str]:
        self.g.value = np.maximum(g, 0.0)
        self.b.value = float(b)
        statuses = []
        for s in solvers:
            try:
                self.problem.solve(solver=s, warm_start=True)
                status = str(self.problem.status)
            except self.cp.error.SolverError as e:  # pragma: no cover - depends on solver internals
                status = f"error: {e}"
            statuses.append(f"{s}: {status}")
            if status in _OK_STATUSES and self.q.value is not None:
                return np.asarray(self.q.value, dtype=float), "; ".join(statuses)
        return None, "; ".join(statuses)


def q_step_reference(
    prob: PlanProblem,
    k: np.ndarray,
    q0: np.ndarray | None = None,
    *,
    grid_points: int = 30,
    golden_steps: int = 25,
    sca_iters: int = 20,
    sca_tol: float = 1e-7,
    solvers: tuple[str, ...] = REFERENCE_SOLVERS,
    time_limit: float | None = None,
) -> QStepResult:
    """Reference q-step: line search over ``T_bar`` with P3 solved by SCA + cvxpy (spec §2.9).

    Parameters
    ----------
    prob : PlanProblem
    k : int array (N,)
        Fixed ranks.
    q0 : array (N,), optional
        Current q; kept if nothing better is found (monotone alternating loop).
    grid_points : int
        Geometric grid of ``T_bar`` over ``(T_hat(q_min), T_hat(1)]`` (spec: 30).
    golden_steps : int
        Golden-section steps around the best grid point (spec: 25).
    sca_iters, sca_tol : int, float
        At most ``sca_iters`` linearisations per ``T_bar``; stop when ``||dq||_inf < sca_tol``.
    solvers : tuple of str
        cvxpy solvers, tried in order.
    time_limit : float, optional
        Abort with :class:`SolverError` (status ``"time limit"``) after this many seconds.

    Returns
    -------
    QStepResult
        ``info`` lists every ``(T_bar, J)`` candidate and the statuses of failed sub-solves.
    """
    t0 = time.perf_counter()
    if prob.stability == "scale_lr":
        raise ValueError(
            "planner.q_solver = 'reference' solves P3 (eq. 26) for stability 'none' or 'constrain'; "
            "use q_solver = 'fast' with stability = 'scale_lr'"
        )
    fx = FixedK(prob, k)
    p3 = _P3(fx)
    failures: list[str] = []
    scored: list[tuple[float, float]] = []
    n_solves = 0

    def check_time() -> None:
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            raise SolverError(f"reference q-step exceeded its time limit of {time_limit:g} s", "time limit")

    def solve_tbar(t_bar: float, warm: np.ndarray) -> np.ndarray | None:
        nonlocal n_solves
        x = warm.copy()
        for _ in range(sca_iters):
            check_time()
            t, g = fx.T_hat(x)
            sol, status = p3.solve(g, t_bar - t + float(np.dot(g, x)), solvers)
            n_solves += 1
            if sol is None:
                failures.append(f"T_bar={t_bar:.6g}: {status}")
                return None
            x_new = np.clip(sol, fx.lb, 1.0)
            step = float(np.max(np.abs(x_new - x)))
            x = x_new
            if step < sca_tol:
                break
        return fx.repair(x)

    lb_pt = fx.repair(fx.lb.copy())
    t_lo, t_hi = fx.T_hat(lb_pt)[0], fx.T_hat(np.ones_like(fx.lb))[0]
    cands: list[tuple[np.ndarray, str]] = [(np.ones_like(fx.lb), "q = 1"), (lb_pt, "q = q_min")]
    if q0 is not None:
        cands.append((np.clip(fx.to_sorted(prob.check_q(q0)), fx.lb, 1.0), "kept warm start"))
    if t_hi > t_lo * (1 + 1e-12):
        grid = t_lo * (t_hi / t_lo) ** (np.arange(1, grid_points + 1) / grid_points)  # (G,) geometric
        sols: list[np.ndarray | None] = []
        js: list[float] = []
        warm = lb_pt
        for t_bar in grid:
            x = solve_tbar(float(t_bar), warm)
            sols.append(x)
            j = fx.J(x) if x is not None and fx.feasible(x) else np.inf
            js.append(j)
            scored.append((float(t_bar), j))
            if x is not None:
                cands.append((x, "optimal"))
                warm = x  # feasible for the next (larger) T_bar
        if np.isfinite(np.min(js)):
            i = int(np.argmin(js))
            a = float(grid[i - 1]) if i > 0 else t_lo
            b = float(grid[i + 1]) if i + 1 < len(grid) else t_hi
            prev = sols[i - 1] if i > 0 else None
            warm_a = prev if prev is not None else lb_pt
            cache: dict[float, float] = {}

            def score(t_bar: float) -> float:
                if t_bar not in cache:
                    x = solve_tbar(t_bar, warm_a)
                    j = fx.J(x) if x is not None and fx.feasible(x) else np.inf
                    if x is not None:
                        cands.append((x, "optimal"))
                    cache[t_bar] = j
                    scored.append((t_bar, j))
                return cache[t_bar]

            c, d = b - _INV_PHI * (b - a), a + _INV_PHI * (b - a)
            for _ in range(golden_steps):
                if score(c) <= score(d):
                    b, d = d, c
                    c = b - _INV_PHI * (b - a)
                else:
                    a, c = c, d
                    d = a + _INV_PHI * (b - a)
        elif not failures:  # pragma: no cover - every candidate infeasible without a solver failure
            failures.append("no grid candidate was feasible")
    x, j, status = best_candidate(fx, cands)
    if x is None or (failures and len(failures) >= len(scored) and len(scored) > 0):
        raise SolverError("reference q-step: every P3 solve failed", "; ".join(failures[:5]) or status)
    return QStepResult(
        fx.to_clients(x),
        float(j),
        status,
        time.perf_counter() - t0,
        {
            "solver": "line search + SCA + cvxpy",
            "candidates": len(scored),
            "cvxpy_solves": n_solves,
            "failures": failures[:20],
            "T_lo": t_lo,
            "T_hi": t_hi,
        },
    )
