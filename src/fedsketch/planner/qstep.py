"""The q-step of Algorithm 2: minimise ``J(q, k)`` over ``q`` with the ranks ``k`` fixed.

Two solvers (PAPER.md §2.9, §7.2):

- :func:`q_step_reference` — the spec's rebuilt P3 (eq. 26): for a round-time budget ``T_bar``
  (the control variable of eq. 24) minimise ``sum_n c_n / q_n`` (whose argmin is that of the
  exact ``theta4 / D``) subject to ``T_hat(q) <= T_bar`` linearised at the current point
  (sequential convex approximation, gradient linearisation) and the Appendix C constraint,
  with cvxpy (Clarabel, falling back to SCS); ``T_bar`` is scanned on a geometric grid over
  ``(T_hat(q_min), T_hat(1)]`` and refined by golden section, every candidate scored with the
  exact ``J`` (eq. 21).
- :func:`q_step_fast` — L-BFGS-B on ``log(theta4 / D(q)) + log T_hat(q)`` over the box
  ``q_min <= q <= 1`` with the analytic gradient (``dD/dq_n = c_n / q_n^2``; eq. 15's gradient
  from :mod:`fedsketch.network.round_time`), O(N) per evaluation after one sort.

Both return the better of their solution and the warm start, so the alternating loop never
gets worse. Solver failures raise :class:`SolverError` carrying the solver status.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, minimize

from fedsketch.network.round_time import _emax_and_grad_sorted
from fedsketch.planner.bound import PlanProblem

#: cvxpy solvers tried in order by the reference q-step (spec §5: Clarabel sometimes fails near T_lo)
REFERENCE_SOLVERS = ("CLARABEL", "SCS")
_OK_STATUSES = ("optimal", "optimal_inaccurate")
#: golden ratio conjugate (1/phi) used by the golden-section refinement
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


class SolverError(RuntimeError):
    """A solver did not return a usable solution; ``status`` holds the solver's own status string(s)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(f"{message} (solver status: {status})")
        self.status = status


@dataclass
class QStepResult:
    """Outcome of a q-step.

    Attributes
    ----------
    q : array (N,)
        Participation probabilities, feasible for the problem's constraint.
    objective : float
        Exact ``J(q, k)`` (eq. 21).
    status : str
        Solver status (``"optimal"``, scipy's message, or ``"kept warm start"``).
    seconds : float
        Wall time of the step.
    info : dict
        Solver-specific counters (iterations, candidates, statuses of failed sub-solves).
    """

    q: np.ndarray
    objective: float
    status: str
    seconds: float
    info: dict = field(default_factory=dict)


class _FixedK:
    """Quantities of P2 at fixed ranks, in ascending ``t_cp`` order (sorted once; eq. 15 needs it)."""

    def __init__(self, prob: PlanProblem, k: np.ndarray) -> None:
        self.prob = prob
        self.k = prob.check_k(k)
        t_cp, t_cm = prob.times(self.k)
        self.order = np.argsort(t_cp, kind="stable")  # (N,) sorted position -> client id
        self.ts = t_cp[self.order]  # (N,) sorted compute times
        self.ws = t_cm[self.order] / prob.W  # (N,) sorted upload seconds at full bandwidth
        self.cs = prob.c(self.k)[self.order]  # (N,) sorted c_n
        self.lb = prob.require_box(self.k)[self.order]  # (N,) sorted box lower bounds
        self.t1 = prob.theta.theta1
        self.delta = prob.delta

    def to_sorted(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=float)[self.order]

    def to_clients(self, x: np.ndarray) -> np.ndarray:
        q = np.empty_like(x)
        q[self.order] = x
        return q

    def D(self, x: np.ndarray) -> float:
        return float(self.t1 - np.sum(self.cs / x))

    def T_hat(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``T_hat`` (eq. 24) and its gradient, sorted order."""
        e, ge = _emax_and_grad_sorted(x, self.ts)
        return e + float(np.dot(x, self.ws)), ge + self.ws

    def J(self, x: np.ndarray) -> float:
        d = self.D(x)
        if d <= 0:
            return np.inf
        return self.prob.theta.theta4 / d * self.T_hat(x)[0]

    def log_obj(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``-log D + log T_hat`` (= ``log J - log theta4``) and its gradient.

        Below ``D_guard = max(delta, tiny)`` ``-log D`` is continued by its second-order Taylor
        polynomial, so the function stays finite and C^1 for the line search; the solution is
        checked against ``D >= delta`` afterwards.
        """
        d = self.D(x)
        gd = self.cs / (x * x)  # dD/dq, (N,)
        guard = max(self.delta, np.finfo(float).eps * self.t1)
        if d >= guard:
            f_d, df_d = -math.log(d), -1.0 / d
        else:
            u = d - guard
            f_d = -math.log(guard) - u / guard + u * u / (2 * guard * guard)
            df_d = -1.0 / guard + u / (guard * guard)
        t, gt = self.T_hat(x)
        return f_d + math.log(t), df_d * gd + gt / t

    def repair(self, x: np.ndarray) -> np.ndarray:
        """Move ``x`` towards 1 along ``x + s (1 - x)`` until ``D >= delta`` (bisection on s)."""
        if self.D(x) >= self.delta:
            return x
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if self.D(x + mid * (1 - x)) >= self.delta:
                hi = mid
            else:
                lo = mid
        return x + hi * (1 - x)

    def feasible(self, x: np.ndarray) -> bool:
        return bool(np.all(x >= self.lb * (1 - 1e-12)) and np.all(x <= 1) and self.D(x) >= self.delta * (1 - 1e-12))


def projected_lbfgs(fun, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, memory: int = 10, maxiter: int = 1000,
                    ftol: float = 1e-14, gtol: float = 1e-10, armijo: float = 1e-4, backtrack: float = 0.5,
                    max_backtracks: int = 60) -> tuple[np.ndarray, float, int, int, str]:
    """Projected L-BFGS for ``min f(x)`` s.t. ``lo <= x <= hi`` (all arrays of shape (N,)).

    Each iteration fixes the variables at a bound whose gradient pushes outwards, builds the
    L-BFGS direction (two-loop recursion, ``memory`` pairs) on the free ones, and backtracks
    along the projected path until Armijo's condition holds. Costs O(memory * N) numpy work
    per iteration; scipy's L-BFGS-B needs ~7 ms per iteration at N = 5000 here, this ~0.1 ms.

    Returns
    -------
    x, f, iterations, function evaluations, status message
    """
    x = np.clip(x0, lo, hi)
    f, g = fun(x)
    S, Y = [], []
    status = "max iterations"
    nfev = 1
    it = 0
    for it in range(1, maxiter + 1):
        pg = x - np.clip(x - g, lo, hi)
        if np.max(np.abs(pg)) <= gtol:
            status = "projected gradient below gtol"
            break
        free = ~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))
        d = np.where(free, -g, 0.0)
        # two-loop recursion restricted to the free variables
        alphas = []
        for s, y in zip(reversed(S), reversed(Y)):
            sf, yf = s * free, y * free
            sy = float(sf @ yf)
            if sy <= 0:
                alphas.append((0.0, 0.0, sf, yf)); continue
            a = float(sf @ d) / sy
            d -= a * yf
            alphas.append((a, sy, sf, yf))
        if S:
            sf, yf = S[-1] * free, Y[-1] * free
            yy = float(yf @ yf)
            if yy > 0 and float(sf @ yf) > 0:
                d *= float(sf @ yf) / yy
        else:
            d /= max(1.0, float(np.max(np.abs(d))))
        for a, sy, sf, yf in reversed(alphas):
            if sy > 0:
                b = float(yf @ d) / sy
                d += (a - b) * sf
        if float(g @ d) >= 0:  # not a descent direction: reset the memory
            S.clear(); Y.clear()
            d = np.where(free, -g, 0.0)
            d /= max(1.0, float(np.max(np.abs(d))))
        t = 1.0
        for _ in range(max_backtracks):
            xn = np.clip(x + t * d, lo, hi)
            fn, gn = fun(xn); nfev += 1
            if np.isfinite(fn) and fn <= f + armijo * float(g @ (xn - x)):
                break
            t *= backtrack
        else:
            status = "line search failed"
            break
        s, y = xn - x, gn - g
        if float(s @ y) > 1e-12 * float(np.linalg.norm(s) * np.linalg.norm(y)):
            S.append(s); Y.append(y)
            if len(S) > memory:
                S.pop(0); Y.pop(0)
        done = (f - fn) <= ftol * max(abs(f), abs(fn), 1.0)
        x, f, g = xn, fn, gn
        if done:
            status = "relative reduction of f below ftol"
            break
    return x, f, it, nfev, status


def _pick(fx: _FixedK, cands: list[tuple[np.ndarray, str]]) -> tuple[np.ndarray, float, str]:
    best = (None, np.inf, "no feasible candidate")
    for x, status in cands:
        if x is None or not fx.feasible(x):
            continue
        j = fx.J(x)
        if j < best[1]:
            best = (x, j, status)
    return best


def q_step_fast(
    prob: PlanProblem,
    k: np.ndarray,
    q0: np.ndarray | None = None,
    *,
    maxiter: int = 5000,
    ftol: float = 1e-14,
    gtol: float = 1e-10,
    maxcor: int = 10,
    backend: str = "projected",
    start_from_ones: bool = True,
) -> QStepResult:
    """Fast q-step: L-BFGS-B on ``log J`` over the Appendix C box (spec §7.2), in ``y = log q``.

    Parameters
    ----------
    prob : PlanProblem
    k : int array (N,)
        Fixed sketch ranks.
    q0 : array (N,), optional
        Warm start (e.g. the previous q); L-BFGS-B also starts from ``q = 1``.
    maxiter, ftol, gtol, maxcor
        Quasi-Newton controls (``maxcor`` = number of stored correction pairs).
    backend : {"projected", "scipy"}
        ``"projected"``: :func:`projected_lbfgs` (default, ~5x faster at N = 5000);
        ``"scipy"``: ``scipy.optimize.minimize(method="L-BFGS-B")``. Both reach the same J.
    start_from_ones : bool
        Also start from ``q = 1`` (always done when ``q0`` is None).

    Returns
    -------
    QStepResult
    """
    t0 = time.perf_counter()
    fx = _FixedK(prob, k)
    starts = [np.ones_like(fx.lb)] if (start_from_ones or q0 is None) else []
    if q0 is not None:
        starts.append(np.clip(fx.to_sorted(prob.check_q(q0)), fx.lb, 1.0))
    cands: list[tuple[np.ndarray, str]] = [(s, "kept warm start") for s in starts]
    iters, statuses = [], []

    def fun(y: np.ndarray) -> tuple[float, np.ndarray]:
        # y = log q: the curvature of -log D ~ c/q^3 is flattened, which cuts iterations ~20x
        q = np.exp(y)
        f, g = fx.log_obj(q)
        return f, g * q

    lo, hi = np.log(fx.lb), np.zeros_like(fx.lb)
    if backend not in ("projected", "scipy"):
        raise ValueError(f"backend must be 'projected' or 'scipy', got {backend!r}")
    for x0 in starts:
        if backend == "scipy":
            res = minimize(fun, np.log(x0), jac=True, method="L-BFGS-B", bounds=Bounds(lo, hi),
                           options={"maxiter": maxiter, "ftol": ftol, "gtol": gtol, "maxcor": maxcor})
            y, nit, msg = res.x, int(res.nit), "L-BFGS-B: " + str(res.message)
        else:
            y, _, nit, _, msg = projected_lbfgs(fun, np.log(x0), lo, hi, memory=maxcor, maxiter=maxiter,
                                                ftol=ftol, gtol=gtol)
            msg = "projected L-BFGS: " + msg
        x = fx.repair(np.clip(np.exp(y), fx.lb, 1.0))
        iters.append(nit)
        statuses.append(msg)
        cands.append((x, msg))
    x, j, status = _pick(fx, cands)
    if x is None:
        raise SolverError("fast q-step found no feasible q", "; ".join(statuses))
    return QStepResult(fx.to_clients(x), float(j), status, time.perf_counter() - t0,
                       {"solver": backend + " L-BFGS", "iterations": iters, "statuses": statuses})


# --------------------------------------------------------------------------- reference (P3 + SCA + cvxpy)

class _P3:
    """Parametric cvxpy model of P3(T_bar) with the linearised round-time constraint (DPP)."""

    def __init__(self, fx: _FixedK) -> None:
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
        self.problem = cp.Problem(cp.Minimize(cp.sum(inv)), cons)
        assert self.problem.is_dcp(dpp=True)

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
    fx = _FixedK(prob, k)
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
            warm_a = sols[i - 1] if i > 0 and sols[i - 1] is not None else lb_pt
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
    x, j, status = _pick(fx, cands)
    if x is None or (failures and len(failures) >= len(scored) and len(scored) > 0):
        raise SolverError("reference q-step: every P3 solve failed", "; ".join(failures[:5]) or status)
    return QStepResult(fx.to_clients(x), float(j), status, time.perf_counter() - t0,
                       {"solver": "line search + SCA + cvxpy", "candidates": len(scored), "cvxpy_solves": n_solves,
                        "failures": failures[:20], "T_lo": t_lo, "T_hi": t_hi})


def q_step(prob: PlanProblem, k: np.ndarray, q0: np.ndarray | None = None, solver: str = "fast",
           **kwargs) -> QStepResult:
    """Dispatch to :func:`q_step_fast` (``solver="fast"``) or :func:`q_step_reference` (``"reference"``)."""
    if solver == "fast":
        return q_step_fast(prob, k, q0, **kwargs)
    if solver == "reference":
        return q_step_reference(prob, k, q0, **kwargs)
    raise ValueError(f"q_solver must be 'fast' or 'reference', got {solver!r}")
