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
from fedsketch.planner.bound import PlanProblem, rounds_model

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
        self.order = np.argsort(t_cp)  # (N,) sorted position -> client id
        self.ts = t_cp[self.order]  # (N,) sorted compute times
        self.ws = t_cm[self.order] / prob.W  # (N,) sorted upload seconds at full bandwidth
        self.cs = prob.c(self.k)[self.order]  # (N,) sorted c_n
        self.lb = prob.require_box(self.k)[self.order]  # (N,) sorted box lower bounds
        self.t1 = prob.theta.theta1
        self.delta = prob.delta
        self.p2 = (prob.p**2)[self.order]  # (N,) sorted p_n^2 (X(q) = sum p^2 / q)
        self.stability = prob.stability
        self.kappa = prob.kappa_max(self.k)
        self.p1 = prob.sum_p1mp
        self.phi_max = prob.max_step_factor
        # constrain (§8.1): X(q) <= x_max; np.inf when the form is off
        self.x_max = prob.x_max(self.k) if prob.stability == "constrain" else np.inf
        if self.x_max < float(np.sum(self.p2)) * (1 - 1e-12):  # even q = 1 violates it
            raise ValueError(
                f"stability = 'constrain': kappa_max(k) = {self.kappa:.4g} > planner.max_step_factor = "
                f"{self.phi_max:g} at these ranks (min k = {int(self.k.min())}), so no q satisfies "
                f"kappa_max * Omega <= {self.phi_max:g} (PAPER.md §8.1); use ranks k >= r / max_step_factor")
        self.lam = 0.0  # dual price of X(q) <= x_max inside the constrained q-step
        self.s_fixed: float | None = None  # scale_lr scan: evaluate log J at this fixed s

    def X(self, x: np.ndarray) -> float:
        return float(np.sum(self.p2 / x))

    def s(self, x: np.ndarray) -> float:
        """Learning-rate scale ``s = min(1, Phi_max / (kappa_max Omega))`` (§8.2; 1 unless scale_lr)."""
        if self.stability != "scale_lr":
            return 1.0
        return min(1.0, self.phi_max / (self.kappa * (self.p1 + self.X(x))))

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
        return e + _dot(x, self.ws), ge + self.ws

    def J(self, x: np.ndarray) -> float:
        R = rounds_model(self.prob.theta, float(np.sum(self.cs / x)), self.s(x))
        return R * self.T_hat(x)[0] if np.isfinite(R) else np.inf

    def log_obj(self, x: np.ndarray, with_diag: bool = False):
        """``-log D + log T_hat`` (= ``log J - log theta4``, eq. 21) and its gradient in ``q``.

        Below ``D_guard = max(delta, tiny)`` ``-log D`` is continued by its second-order Taylor
        polynomial, so the function stays finite and C^1 for the line search; the solution is
        checked against ``D >= delta`` afterwards. With ``with_diag`` also returns the two
        per-client curvature pieces ``(c_n / q_n) / D`` and ``q_n dT/dq_n / T`` used by the
        diagonal preconditioner in ``y = log q`` (see :func:`q_step_fast`).
        """
        inv = self.cs / x  # c_n / q_n, (N,)
        V = float(np.sum(inv))
        sc, gs = 1.0, None  # s and ds/dq (scale_lr branch with s < 1, §8.2)
        xq = None
        if self.s_fixed is not None:  # scale_lr's 1-D scan: s held fixed, X(q) <= x_max(s) as a constraint
            sc = self.s_fixed
        elif self.stability == "scale_lr":
            xq = self.p2 / x
            omega = self.p1 + float(np.sum(xq))
            if self.kappa * omega > self.phi_max:
                sc = self.phi_max / (self.kappa * omega)
                gs = sc * (xq / x) / omega  # ds/dq_n = s p_n^2 / (q_n^2 Omega)
        d = self.t1 - sc * V  # = D(q,k) when s = 1
        guard = max(self.delta, np.finfo(float).eps * self.t1)
        if d >= guard:
            f_d, df_d = -math.log(d), -1.0 / d
        else:
            u = d - guard
            f_d = -math.log(guard) - u / guard + u * u / (2 * guard * guard)
            df_d = -1.0 / guard + u / (guard * guard)
        t, gt = self.T_hat(x)
        g = df_d * sc * inv / x + gt / t  # d(t1 - s V)/dq = s c_n / q_n^2 (+ V ds/dq below)
        f = f_d + math.log(t)
        if gs is not None:
            f -= math.log(sc)
            g += df_d * (-V) * gs - gs / sc
        if self.lam > 0:  # Lagrangian of X(q) <= x_max (constrained q-step)
            xq = self.p2 / x if xq is None else xq
            f += self.lam * float(np.sum(xq))
            g -= self.lam * xq / x
        if not with_diag:
            return f, g
        diag_x = self.lam * xq if self.lam > 0 else 0.0
        return f, g, -df_d * sc * inv + diag_x, x * gt / t

    def price(self, x: np.ndarray) -> float:
        """Least-squares dual price of ``X(q) <= x_max`` at ``x``: the ``lam >= 0`` that best cancels
        ``grad_y log J + lam grad_y X`` over the clients strictly inside their box (``y = log q``)."""
        lam_keep, self.lam = self.lam, 0.0
        _, g = self.log_obj(x)
        self.lam = lam_keep
        gy, xy = g * x, -self.p2 / x  # (N,) d/dy of log J and of X
        free = (x > self.lb * (1 + 1e-9)) & (x < 1 - 1e-9)
        den = float(np.sum(xy[free] ** 2))
        return max(0.0, -float(np.sum(gy[free] * xy[free])) / den) if den > 0 else 0.0

    def _ok(self, x: np.ndarray) -> bool:
        return self.D(x) >= self.delta and self.X(x) <= self.x_max

    def repair(self, x: np.ndarray) -> np.ndarray:
        """Move ``x`` towards 1 along ``x + s (1 - x)`` until ``D >= delta`` and ``X <= x_max`` (bisection on s;
        both hold at ``x = 1`` and improve monotonically along the path)."""
        if self._ok(x):
            return x
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if self._ok(x + mid * (1 - x)):
                hi = mid
            else:
                lo = mid
        return x + hi * (1 - x)

    def feasible(self, x: np.ndarray) -> bool:
        return bool(np.all(x >= self.lb * (1 - 1e-12)) and np.all(x <= 1) and self.D(x) >= self.delta * (1 - 1e-12)
                    and self.X(x) <= self.x_max * (1 + 1e-12))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """1-D dot product without BLAS: OpenBLAS threads ``ddot`` above ~10k entries, and on a
    shared 2-core machine those threads cost up to 10 ms per call (measured; issue 13)."""
    return float(np.einsum("i,i->", a, b))


def projected_lbfgs(fun, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, memory: int = 10, maxiter: int = 1000,
                    ftol: float = 1e-14, gtol: float = 1e-10, armijo: float = 1e-4, backtrack: float = 0.5,
                    max_backtracks: int = 60, precond=None) -> tuple[np.ndarray, float, int, int, str]:
    """Projected L-BFGS for ``min f(x)`` s.t. ``lo <= x <= hi`` (all arrays of shape (N,)).

    Each iteration fixes the variables at a bound whose gradient pushes outwards, builds the
    L-BFGS direction (two-loop recursion, ``memory`` pairs) on the free ones, and backtracks
    along the projected path until Armijo's condition holds. Costs O(memory * N) numpy work
    per iteration.

    ``precond(x) -> h`` (optional, shape (N,), > 0) is a diagonal Hessian approximation used as
    the initial inverse Hessian ``H0 = diag(1/h)`` of the two-loop recursion instead of the
    scalar ``s.y / y.y``; with a good diagonal the iteration count stops growing with N.

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
        free = (~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))).astype(float)
        d = -g * free
        # two-loop recursion restricted to the free variables
        alphas = []
        for s, y in zip(reversed(S), reversed(Y)):
            sf, yf = s * free, y * free
            sy = _dot(sf, yf)
            if sy <= 0:
                alphas.append((0.0, 0.0, sf, yf)); continue
            a = _dot(sf, d) / sy
            d -= a * yf
            alphas.append((a, sy, sf, yf))
        if precond is not None:
            d /= precond(x)
        elif S:
            sf, yf = S[-1] * free, Y[-1] * free
            yy = _dot(yf, yf)
            if yy > 0 and _dot(sf, yf) > 0:
                d *= _dot(sf, yf) / yy
        else:
            d /= max(1.0, float(np.max(np.abs(d))))
        for a, sy, sf, yf in reversed(alphas):
            if sy > 0:
                b = _dot(yf, d) / sy
                d += (a - b) * sf
        if _dot(g, d) >= 0:  # not a descent direction: reset the memory
            S.clear(); Y.clear()
            d = -g * free
            if precond is not None:
                d /= precond(x)
            else:
                d /= max(1.0, float(np.max(np.abs(d))))
        t = 1.0
        for _ in range(max_backtracks):
            xn = np.clip(x + t * d, lo, hi)
            fn, gn = fun(xn); nfev += 1
            if np.isfinite(fn) and fn <= f + armijo * _dot(g, xn - x):
                break
            t *= backtrack
        else:
            status = "line search failed"
            break
        s, y = xn - x, gn - g
        sy = _dot(s, y)
        if sy > 1e-12 * math.sqrt(_dot(s, s) * _dot(y, y)):
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
    precondition: bool = True,
    dual_rtol: float = 1e-6,
    scale_lr_starts: tuple[float, ...] = (0.03, 0.1, 0.3),
    scale_lr_scan: int = 10,
    lam0: float | None = None,
    warm_step: float = 1.02,
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
    precondition : bool
        Diagonal preconditioner ``(c_n/q_n)/D + q_n T'_n/T`` (the Hessian diagonal of ``log J`` in
        ``y = log q`` up to O(1/N) terms): 13-14 iterations at every N from 5,000 to 200,000,
        against 59-114 with the scalar L-BFGS scaling (issue 13).
    lam0 : float, optional
        Warm dual price for the constrained search (the best-response start's price; same Lagrangian).
    warm_step : float
        First bracketing factor around ``lam0`` (squared on every miss): the warm price is within a
        few per cent of the root, so a tight bracket saves L-BFGS runs (issue 13).
    dual_rtol : float
        ``stability = "constrain"``: tolerance (in ``log lam`` and ``log X``) of the root search on the dual price of
        ``X(q) <= Phi_max / kappa_max - sum p(1-p)`` (§8.1) stops. Under ``scale_lr`` the objective
        is §8.2's ``J`` (continuous, smooth on each side of ``Phi = Phi_max``).

    Returns
    -------
    QStepResult
    """
    t0 = time.perf_counter()
    fx = _FixedK(prob, k)
    starts = [np.ones_like(fx.lb)] if (start_from_ones or q0 is None) else []
    if q0 is not None:
        starts.append(np.clip(fx.to_sorted(prob.check_q(q0)), fx.lb, 1.0))
    if prob.stability == "scale_lr":  # §8.2's J is not convex along Omega: a few uniform-q starts (1-D scan)
        starts += [np.clip(np.full_like(fx.lb, c), fx.lb, 1.0) for c in scale_lr_starts]
    cands: list[tuple[np.ndarray, str]] = [(s0, "kept warm start") for s0 in starts]
    iters, statuses = [], []

    last: dict = {}

    def fun(y: np.ndarray) -> tuple[float, np.ndarray]:
        # y = log q: the curvature of -log D ~ c/q^3 is flattened, which cuts iterations ~20x
        q = np.exp(y)
        f, g, a, b = fx.log_obj(q, with_diag=True)
        last["y"], last["h"] = y, a + b
        return f, g * q

    def precond(y: np.ndarray) -> np.ndarray:
        # diagonal of the Hessian of f(y) up to terms O(1/N) relative: (c_n/q_n)/D + q_n T'_n/T
        if last.get("y") is not y:
            fun(y)
        h = last["h"]
        hmax = float(h.max()) if h.size else 0.0
        return np.maximum(h, 1e-12 * hmax) if hmax > 0 else np.ones_like(h)

    lo, hi = np.log(fx.lb), np.zeros_like(fx.lb)
    if backend not in ("projected", "scipy"):
        raise ValueError(f"backend must be 'projected' or 'scipy', got {backend!r}")

    def run(x0: np.ndarray) -> np.ndarray:
        if backend == "scipy":
            res = minimize(fun, np.log(x0), jac=True, method="L-BFGS-B", bounds=Bounds(lo, hi),
                           options={"maxiter": maxiter, "ftol": ftol, "gtol": gtol, "maxcor": maxcor})
            y, nit, msg = res.x, int(res.nit), "L-BFGS-B: " + str(res.message)
        else:
            y, _, nit, _, msg = projected_lbfgs(fun, np.log(x0), lo, hi, memory=maxcor, maxiter=maxiter,
                                                ftol=ftol, gtol=gtol, precond=precond if precondition else None)
            msg = "projected L-BFGS: " + msg
        iters.append(nit)
        statuses.append(msg)
        last.clear()
        return np.clip(np.exp(y), fx.lb, 1.0)

    sols = []
    lam0_arg = lam0
    if lam0 and fx.x_max < np.inf:
        fx.lam = lam0  # a warm dual price: the first solves are Lagrangian ones (constrain, §8.1)
    for x0 in starts:
        x = run(x0)
        sols.append(x)
        cands.append((fx.repair(x), statuses[-1]))
    fx.lam = 0.0
    cands += [(fx.repair(s0), "repaired warm start") for s0 in starts]
    dual_state: dict = {}

    def dual_bisection(warm: np.ndarray, lam_start: float | None = None,
                       first_step: float | None = None) -> np.ndarray | None:
        """Root of ``log X(q(lam)) = log x_max`` in ``log lam`` for the dual price lam of X(q) <= fx.x_max
        (§8.1): bracket by factors of 10 (around ``lam_start``, default ``lam0``, by ``warm_step``
        squared on every miss), then Illinois regula falsi (X(q(lam)) decreases in lam). The root's
        price is kept in ``dual_state["lam"]`` (the scale_lr scan warm-starts the next s with it)."""
        lam0 = lam_start if lam_start else lam0_arg
        w_step = first_step or warm_step
        if fx.x_max <= float(np.sum(fx.p2)):  # not even q = 1 fits (X(1) = sum p^2)
            return None
        lx = math.log(fx.x_max)
        lam_hi, x_hi, g_hi = (lam0 if lam0 and lam0 > 0 else 1e-6), None, 0.0
        lo_state = None  # (log lam, g) with g > 0 (infeasible side)
        step = w_step if lam0 else 10.0
        for _ in range(60):
            fx.lam = lam_hi
            x = run(warm)
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
            down = w_step
            for _ in range(10):
                fx.lam = lam_hi / down
                x = run(x_hi)
                g = math.log(fx.X(x)) - lx
                if g > 0:
                    lo_state = (math.log(fx.lam), g)
                    break
                lam_hi, x_hi, g_hi = fx.lam, x, g
                down = down * down
            if lo_state is None:  # feasible far below the warm price: try the unconstrained problem
                fx.lam = 0.0
                x = run(x_hi)
                if fx.X(x) <= fx.x_max:
                    return x  # the constraint does not bind

        if x_hi is not None and lo_state is not None:
            a_, ga = lo_state
            b_, gb = math.log(lam_hi), g_hi
            side = 0
            for _ in range(40):
                if b_ - a_ <= dual_rtol or -gb <= dual_rtol:
                    break
                c_ = b_ - gb * (b_ - a_) / (gb - ga) if gb != ga else 0.5 * (a_ + b_)
                c_ = min(max(c_, a_ + 1e-3 * (b_ - a_)), b_ - 1e-3 * (b_ - a_))
                fx.lam = math.exp(c_)
                x = run(x_hi)
                gc = math.log(fx.X(x)) - lx
                if gc <= 0:
                    b_, gb, x_hi = c_, gc, x
                    if side == -1:
                        ga *= 0.5
                    side = -1
                elif gc <= dual_rtol:  # within tolerance on the infeasible side: repair() closes the gap
                    x_hi = x
                    break
                else:
                    a_, ga = c_, gc
                    if side == 1:
                        gb *= 0.5
                    side = 1
        if x_hi is not None:
            dual_state["lam"] = fx.lam if fx.lam > 0 else lam_hi
        fx.lam = 0.0
        return x_hi

    dual = {}
    if fx.x_max < np.inf and sols and (lam0 or min(fx.X(x) for x in sols) > fx.x_max * (1 + 1e-12)):
        # stability = constrain binds (§8.1)
        warm_x = min(sols, key=fx.J)
        guess = None
        if not lam0:  # cold: the least-squares price at the repaired unconstrained solution (§8.1)
            guess = fx.price(fx.repair(warm_x)) or None
        x_hi = dual_bisection(warm_x, guess, 1.5 if guess else None)
        if x_hi is not None:
            cands.append((fx.repair(x_hi), "dual bisection on kappa_max * Omega <= Phi_max: " + statuses[-1]))
        dual = {"dual_solves": len(iters) - len(starts)}
    if prob.stability == "scale_lr" and scale_lr_scan > 0:
        # §8.2: a 1-D search over s (equivalently Omega): at fixed s, minimise T / (theta1 - s V) subject
        # to Phi(q) <= Phi_max / s (so the true s(q) >= s), then score the true J; geometric grid + golden
        s_lo = max(1e-3, fx.phi_max / (fx.kappa * (fx.p1 + fx.X(fx.lb))))
        x_mem: dict[float, np.ndarray] = {}

        scored = [(fx.J(c), c) for c, _ in cands if c is not None]  # (J, q) of every candidate so far
        s_memo: dict[float, float] = {}

        def at_s(sv: float) -> float:
            key = round(math.log(sv), 10)  # the golden section revisits its inner points
            if key in s_memo:
                return s_memo[key]
            if fx.phi_max / (fx.kappa * sv) - fx.p1 <= float(np.sum(fx.p2)):
                return np.inf  # Phi(q) <= Phi_max / s is out of reach at this s
            fx.s_fixed, fx.x_max = sv, fx.phi_max / (fx.kappa * sv) - fx.p1
            warm = min(scored, key=lambda t: t[0])[1]
            xs = run(warm)
            if fx.X(xs) > fx.x_max * (1 + 1e-12):
                xs = dual_bisection(xs, dual_state.get("lam"))  # the previous s's price is close
            fx.s_fixed, fx.x_max = None, np.inf
            if xs is None:
                s_memo[key] = np.inf
                return np.inf
            x_mem[sv] = xs
            cands.append((fx.repair(xs), f"scale_lr scan at s={sv:.4g}"))
            scored.append((fx.J(cands[-1][0]), cands[-1][0]))
            s_memo[key] = scored[-1][0]
            return scored[-1][0]

        grid = np.geomspace(s_lo, 1.0, scale_lr_scan)
        vals = [at_s(float(sv)) for sv in grid]
        i = int(np.argmin(vals))
        a_, b_ = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])
        for _ in range(8):  # golden-section refinement on log s (the memo reuses the surviving inner point)
            m1, m2 = a_ * (b_ / a_) ** (1 - _INV_PHI), a_ * (b_ / a_) ** _INV_PHI
            if at_s(m1) <= at_s(m2):
                b_ = m2
            else:
                a_ = m1
        dual = {"scale_lr_scan_solves": len(iters) - len(starts)}
    x, j, status = _pick(fx, cands)
    if x is None:
        raise SolverError("fast q-step found no feasible q", "; ".join(statuses))
    return QStepResult(fx.to_clients(x), float(j), status, time.perf_counter() - t0,
                       {"solver": backend + " L-BFGS", "iterations": iters, "statuses": statuses[-5:], **dual})


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
        if fx.x_max < np.inf:  # stability = constrain: X(q) <= Phi_max / kappa_max - sum p(1-p) (§8.1)
            cons.append(cp.sum(cp.multiply(fx.p2, cp.inv_pos(self.q))) <= fx.x_max)
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
    if prob.stability == "scale_lr":
        raise ValueError("planner.q_solver = 'reference' solves P3 (eq. 26) for stability 'none' or 'constrain'; "
                         "use q_solver = 'fast' with stability = 'scale_lr'")
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
