"""The fast q-step (PAPER.md §7.2): minimise ``log J`` (eq. 21) over ``q`` at fixed ranks with L-BFGS.

The objective is ``log(theta4 / D(q)) + log T_hat(q)`` over the Appendix C box ``q_min <= q <= 1``, in
``y = log q``, with the analytic gradient (``dD/dq_n = c_n / q_n^2``; eq. 15's gradient from
:mod:`fedsketch.network.round_time`), O(N) per evaluation after one sort (:class:`FixedK`). The stability
forms of PAPER.md §8 add two searches on top of the box solve:

- ``constrain`` (§8.1): ``kappa_max(k) Omega(q) <= Phi_max`` is met by a root search on its dual price
  (:func:`stability_dual_bisection`);
- ``scale_lr`` (§8.2): a 1-D search over the learning-rate scale ``s`` (:func:`lr_scale_scan`).

The result is the better of the solution and the warm start, so the alternating loop never gets worse.
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.optimize import Bounds, minimize

from fedsketch.planner.bound import PlanProblem
from fedsketch.planner.lbfgs import projected_lbfgs
from fedsketch.planner.qstep_problem import FixedK, QStepResult, SolverError, best_candidate

#: golden ratio conjugate (1/phi) used by the golden-section refinement
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0
#: L-BFGS implementations of :class:`LogQSolver`
BACKENDS = ("projected", "scipy")


class LogQSolver:
    """Minimiser of ``log J - log theta4`` in ``y = log q`` over the box ``log q_min <= y <= 0``.

    ``solver(x0)`` runs one L-BFGS solve from the sorted start ``x0`` at ``fx``'s current dual price
    ``fx.lam`` (§8.1) and fixed scale ``fx.s_fixed`` (§8.2), and returns the solution as sorted ``q``
    clipped to the box. Every solve's iteration count and status are appended to ``iters`` and
    ``statuses``. In ``y = log q`` the curvature of ``-log D ~ c / q^3`` is flattened, and the
    diagonal preconditioner ``(c_n/q_n)/D + q_n T'_n/T`` (:meth:`precond`) is the Hessian diagonal of
    ``log J`` in ``y`` up to O(1/N) terms.

    Parameters
    ----------
    fx : FixedK
    backend : {"projected", "scipy"}
        :func:`fedsketch.planner.lbfgs.projected_lbfgs` or ``scipy.optimize.minimize(method="L-BFGS-B")``.
    maxiter, ftol, gtol, maxcor
        Quasi-Newton controls (``maxcor`` = number of stored correction pairs).
    precondition : bool
        Use :meth:`precond` (projected backend only).
    """

    def __init__(
        self, fx: FixedK, *, backend: str, maxiter: int, ftol: float, gtol: float, maxcor: int, precondition: bool
    ) -> None:
        self.fx = fx
        self.lo, self.hi = np.log(fx.lb), np.zeros_like(fx.lb)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'projected' or 'scipy', got {backend!r}")
        self.backend = backend
        self.maxiter, self.ftol, self.gtol, self.maxcor = maxiter, ftol, gtol, maxcor
        self.precondition = precondition
        self.iters: list[int] = []
        self.statuses: list[str] = []
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (y, Hessian diagonal) of the last evaluation

    def objective(self, y: np.ndarray) -> tuple[float, np.ndarray]:
        """``log J - log theta4`` at ``q = exp(y)`` (:meth:`FixedK.log_obj`) and its gradient in ``y``."""
        q = np.exp(y)
        f, g, a, b = self.fx.log_obj(q, with_diag=True)
        self._last = (y, a + b)
        return f, g * q

    def precond(self, y: np.ndarray) -> np.ndarray:
        """Diagonal of the Hessian of :meth:`objective` up to terms O(1/N) relative: ``(c_n/q_n)/D + q_n T'_n/T``."""
        if self._last is None or self._last[0] is not y:
            self.objective(y)
        assert self._last is not None  # objective() has just set it
        h = self._last[1]
        hmax = float(h.max()) if h.size else 0.0
        return np.maximum(h, 1e-12 * hmax) if hmax > 0 else np.ones_like(h)

    def __call__(self, x0: np.ndarray) -> np.ndarray:
        if self.backend == "scipy":
            res = minimize(
                self.objective,
                np.log(x0),
                jac=True,
                method="L-BFGS-B",
                bounds=Bounds(self.lo, self.hi),
                options={"maxiter": self.maxiter, "ftol": self.ftol, "gtol": self.gtol, "maxcor": self.maxcor},
            )
            y, nit, msg = res.x, int(res.nit), "L-BFGS-B: " + str(res.message)
        else:
            y, _, nit, _, msg = projected_lbfgs(
                self.objective,
                np.log(x0),
                self.lo,
                self.hi,
                memory=self.maxcor,
                maxiter=self.maxiter,
                ftol=self.ftol,
                gtol=self.gtol,
                precond=self.precond if self.precondition else None,
            )
            msg = "projected L-BFGS: " + msg
        self.iters.append(nit)
        self.statuses.append(msg)
        self._last = None
        return np.clip(np.exp(y), self.fx.lb, 1.0)


def stability_dual_bisection(
    fx: FixedK, solve: LogQSolver, warm: np.ndarray, *, lam_start: float | None, first_step: float, rtol: float
) -> tuple[np.ndarray | None, float | None]:
    """Minimise ``log J`` subject to the stability constraint of PAPER.md §8.1 through its dual price.

    At fixed ranks §8.1's ``kappa_max(k) Omega(q) <= Phi_max``, with ``Omega(q) = sum_n p_n (1 - p_n) + X(q)``
    and ``X(q) = sum_n p_n^2 / q_n``, reads

        X(q) <= x_max = Phi_max / kappa_max(k) - sum_n p_n (1 - p_n)        (``fx.x_max``),

    convex in ``q``. For a price ``lam >= 0`` let ``q(lam)`` minimise the Lagrangian
    ``log J(q) + lam X(q)`` (eq. 21) over the Appendix C box (``fx.lam = lam``, one ``solve``).
    ``X(q(lam))`` decreases in ``lam``, so the constrained minimiser is ``q(lam*)`` at the root of

        g(lam) = log X(q(lam)) - log x_max = 0,

    found in ``log lam``: bracket by factors of 10 from ``1e-6`` (cold), or by ``first_step`` around
    ``lam_start`` squared on every miss (warm, both directions), then Illinois regula falsi. Each
    solve is warm-started from a nearby solution of the same search. Under ``scale_lr`` (§8.2) the same
    search runs at a fixed ``s`` with ``x_max = Phi_max / (kappa_max s) - sum_n p_n (1 - p_n)``.

    Parameters
    ----------
    fx : FixedK
        The problem; ``fx.x_max`` is the bound. ``fx.lam`` is used as the price during the search and
        left at 0.
    solve : LogQSolver
        Box solve of ``log J + fx.lam X`` from a sorted start.
    warm : array (N,)
        Sorted start of the first solve.
    lam_start : float, optional
        Warm price (e.g. the best-response start's price, or the root at a neighbouring ``s``); None or 0: cold.
    first_step : float
        First bracketing factor around a warm ``lam_start`` (> 1).
    rtol : float
        Stop when the bracket in ``log lam`` or ``|g|`` on the feasible side is at most ``rtol``; a solution
        with ``0 < g <= rtol`` is accepted (:meth:`FixedK.repair` closes the gap).

    Returns
    -------
    x, lam : array (N,) or None, float or None
        The sorted solution (``None`` when even ``q = 1`` violates the bound or no price is feasible)
        and the price at the root (``None`` when ``x`` is None, or when the bound does not bind and ``x``
        is the unconstrained solution).
    """
    lam0 = lam_start
    if fx.x_max <= float(np.sum(fx.p2)):  # not even q = 1 fits (X(1) = sum p^2)
        return None, None
    lx = math.log(fx.x_max)
    lam_hi, x_hi, g_hi = (lam0 if lam0 and lam0 > 0 else 1e-6), None, 0.0
    lo_state = None  # (log lam, g) with g > 0 (infeasible side)
    step = first_step if lam0 else 10.0
    for _ in range(60):
        fx.lam = lam_hi
        x = solve(warm)
        g = math.log(fx.X(x)) - lx
        if g <= 0:
            x_hi, g_hi = x, g
            break
        lo_state, warm = (math.log(lam_hi), g), x
        lam_hi *= step
        if lam0:
            step = min(step * step, 1e3)
    if lam0 and x_hi is not None and lo_state is None:  # the warm price was feasible: bracket below it
        # close to the warm price first (it is the best response's price of nearly the same problem),
        # the factor squared on every miss (1.02, 1.04, 1.08, 1.17, 1.37, 1.88, 3.5, 12, 150, 2e4)
        down = first_step
        for _ in range(10):
            fx.lam = lam_hi / down
            x = solve(x_hi)
            g = math.log(fx.X(x)) - lx
            if g > 0:
                lo_state = (math.log(fx.lam), g)
                break
            lam_hi, x_hi, g_hi = fx.lam, x, g
            down = down * down
        if lo_state is None:  # feasible far below the warm price: try the unconstrained problem
            fx.lam = 0.0
            x = solve(x_hi)
            if fx.X(x) <= fx.x_max:
                return x, None  # the constraint does not bind

    if x_hi is not None and lo_state is not None:
        a_, ga = lo_state
        b_, gb = math.log(lam_hi), g_hi
        side = 0
        for _ in range(40):
            if b_ - a_ <= rtol or -gb <= rtol:
                break
            c_ = b_ - gb * (b_ - a_) / (gb - ga) if gb != ga else 0.5 * (a_ + b_)
            c_ = min(max(c_, a_ + 1e-3 * (b_ - a_)), b_ - 1e-3 * (b_ - a_))
            fx.lam = math.exp(c_)
            x = solve(x_hi)
            gc = math.log(fx.X(x)) - lx
            if gc <= 0:
                b_, gb, x_hi = c_, gc, x
                if side == -1:
                    ga *= 0.5
                side = -1
            elif gc <= rtol:  # within tolerance on the infeasible side: repair() closes the gap
                x_hi = x
                break
            else:
                a_, ga = c_, gc
                if side == 1:
                    gb *= 0.5
                side = 1
    lam = None
    if x_hi is not None:
        lam = fx.lam if fx.lam > 0 else lam_hi
    fx.lam = 0.0
    return x_hi, lam


def lr_scale_scan(
    fx: FixedK,
    solve: LogQSolver,
    cands: list[tuple[np.ndarray, str]],
    *,
    points: int,
    lam0: float | None,
    warm_step: float,
    dual_rtol: float,
) -> None:
    """``scale_lr`` (PAPER.md §8.2): 1-D search over the learning-rate scale ``s`` (equivalently ``Omega``).

    At fixed ``s`` minimise ``T / (theta1 - s V)`` subject to ``Phi(q) <= Phi_max / s`` (so the true
    ``s(q) >= s``; :func:`stability_dual_bisection` when the box solve violates it), then score the true
    ``J``. ``s`` runs over a geometric grid of ``points`` values from the smallest reachable scale to 1,
    then 8 golden-section steps on ``log s`` around the best grid point. Every solution is appended,
    repaired, to ``cands``.
    """
    s_lo = max(1e-3, fx.phi_max / (fx.kappa * (fx.p1 + fx.X(fx.lb))))
    scored = [(fx.J(c), c) for c, _ in cands if c is not None]  # (J, q) of every candidate so far
    s_memo: dict[float, float] = {}
    dual_lam: float | None = None  # the last root's price: the next s's warm start

    def at_s(sv: float) -> float:
        nonlocal dual_lam
        key = round(math.log(sv), 10)  # the golden section revisits its inner points
        if key in s_memo:
            return s_memo[key]
        if fx.phi_max / (fx.kappa * sv) - fx.p1 <= float(np.sum(fx.p2)):
            return np.inf  # Phi(q) <= Phi_max / s is out of reach at this s
        fx.s_fixed, fx.x_max = sv, fx.phi_max / (fx.kappa * sv) - fx.p1
        warm = min(scored, key=lambda t: t[0])[1]
        xs: np.ndarray | None  # None: the dual bisection below found no feasible point
        xs = solve(warm)
        if fx.X(xs) > fx.x_max * (1 + 1e-12):
            xs, lam = stability_dual_bisection(
                fx, solve, xs, lam_start=dual_lam or lam0, first_step=warm_step, rtol=dual_rtol
            )
            if lam is not None:
                dual_lam = lam
        fx.s_fixed, fx.x_max = None, np.inf
        if xs is None:
            s_memo[key] = np.inf
            return np.inf
        cands.append((fx.repair(xs), f"scale_lr scan at s={sv:.4g}"))
        scored.append((fx.J(cands[-1][0]), cands[-1][0]))
        s_memo[key] = scored[-1][0]
        return scored[-1][0]

    grid = np.geomspace(s_lo, 1.0, points)
    vals = [at_s(float(sv)) for sv in grid]
    i = int(np.argmin(vals))
    a_, b_ = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])
    for _ in range(8):  # golden-section refinement on log s (the memo reuses the surviving inner point)
        m1, m2 = a_ * (b_ / a_) ** (1 - _INV_PHI), a_ * (b_ / a_) ** _INV_PHI
        if at_s(m1) <= at_s(m2):
            b_ = m2
        else:
            a_ = m1


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
    precondition: bool = True,
    dual_rtol: float = 1e-6,
    scale_lr_starts: tuple[float, ...] = (0.03, 0.1, 0.3),
    scale_lr_scan: int = 10,
    lam0: float | None = None,
    warm_step: float = 1.02,
) -> QStepResult:
    """Fast q-step: L-BFGS on ``log J`` (eq. 21) over the Appendix C box (spec §7.2), in ``y = log q``.

    Parameters
    ----------
    prob : PlanProblem
    k : int array (N,)
        Fixed sketch ranks.
    q0 : array (N,), optional
        Warm start (e.g. the alternating loop's current q); L-BFGS also starts from ``q = 1``.
    maxiter, ftol, gtol, maxcor
        Quasi-Newton controls (``maxcor`` = number of stored correction pairs).
    backend : {"projected", "scipy"}
        ``"projected"``: :func:`fedsketch.planner.lbfgs.projected_lbfgs` (default);
        ``"scipy"``: ``scipy.optimize.minimize(method="L-BFGS-B")``. Both reach the same J.
    start_from_ones : bool
        Also start from ``q = 1`` (always done when ``q0`` is None).
    precondition : bool
        Diagonal preconditioner ``(c_n/q_n)/D + q_n T'_n/T`` (the Hessian diagonal of ``log J`` in
        ``y = log q`` up to O(1/N) terms; :meth:`LogQSolver.precond`), which keeps the iteration count
        flat in N.
    dual_rtol : float
        ``stability = "constrain"``: tolerance (in ``log lam`` and ``log X``) at which the root search on the
        dual price of ``X(q) <= Phi_max / kappa_max - sum p(1-p)`` (§8.1) stops
        (:func:`stability_dual_bisection`). Under ``scale_lr`` the objective is §8.2's ``J`` (continuous,
        smooth on each side of ``Phi = Phi_max``).
    scale_lr_starts : tuple of float
        ``scale_lr``: extra uniform-q starts (§8.2's ``J`` is not convex along ``Omega``).
    scale_lr_scan : int
        ``scale_lr``: grid points of the 1-D search over ``s`` (:func:`lr_scale_scan`); 0 turns it off.
    lam0 : float, optional
        Warm dual price for the constrained search (the best-response start's price; same Lagrangian).
    warm_step : float
        First bracketing factor around ``lam0`` (squared on every miss): the warm price is within a
        few per cent of the root, so a tight bracket saves L-BFGS runs.

    Returns
    -------
    QStepResult
    """
    t0 = time.perf_counter()
    fx = FixedK(prob, k)
    starts = [np.ones_like(fx.lb)] if (start_from_ones or q0 is None) else []
    if q0 is not None:
        starts.append(np.clip(fx.to_sorted(prob.check_q(q0)), fx.lb, 1.0))
    if prob.stability == "scale_lr":  # §8.2's J is not convex along Omega: a few uniform-q starts (1-D scan)
        starts += [np.clip(np.full_like(fx.lb, c), fx.lb, 1.0) for c in scale_lr_starts]
    cands: list[tuple[np.ndarray, str]] = [(s0, "kept warm start") for s0 in starts]
    solve = LogQSolver(
        fx, backend=backend, maxiter=maxiter, ftol=ftol, gtol=gtol, maxcor=maxcor, precondition=precondition
    )

    sols = []
    if lam0 and fx.x_max < np.inf:
        fx.lam = lam0  # a warm dual price: the first solves are Lagrangian ones (constrain, §8.1)
    for x0 in starts:
        sol = solve(x0)
        sols.append(sol)
        cands.append((fx.repair(sol), solve.statuses[-1]))
    fx.lam = 0.0
    cands += [(fx.repair(s0), "repaired warm start") for s0 in starts]

    counts = {}
    if fx.x_max < np.inf and sols and (lam0 or min(fx.X(x) for x in sols) > fx.x_max * (1 + 1e-12)):
        # stability = constrain binds (§8.1)
        warm_x = min(sols, key=fx.J)
        guess = None
        if not lam0:  # cold: the least-squares price at the repaired unconstrained solution (§8.1)
            guess = fx.price(fx.repair(warm_x)) or None
        x_hi, _ = stability_dual_bisection(
            fx, solve, warm_x, lam_start=guess or lam0, first_step=1.5 if guess else warm_step, rtol=dual_rtol
        )
        if x_hi is not None:
            cands.append((fx.repair(x_hi), "dual bisection on kappa_max * Omega <= Phi_max: " + solve.statuses[-1]))
        counts = {"dual_solves": len(solve.iters) - len(starts)}
    if prob.stability == "scale_lr" and scale_lr_scan > 0:
        lr_scale_scan(fx, solve, cands, points=scale_lr_scan, lam0=lam0, warm_step=warm_step, dual_rtol=dual_rtol)
        counts = {"scale_lr_scan_solves": len(solve.iters) - len(starts)}
    x, j, status = best_candidate(fx, cands)
    if x is None:
        raise SolverError("fast q-step found no feasible q", "; ".join(solve.statuses))
    return QStepResult(
        fx.to_clients(x),
        float(j),
        status,
        time.perf_counter() - t0,
        {"solver": backend + " L-BFGS", "iterations": solve.iters, "statuses": solve.statuses[-5:], **counts},
    )
