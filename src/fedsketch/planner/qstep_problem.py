"""P2 at fixed ranks: what the q-step of Algorithm 2 minimises, and what it returns.

:class:`FixedK` holds P2 (eq. 21) with the ranks ``k`` fixed, in ascending ``t_cp`` order: the exact
``J(q, k)``, ``log J`` and its gradient in ``q`` (with ``T_hat`` of eq. 24 and its eq. 15 gradient), the
Appendix C box and ``D >= delta`` (eq. 36), and the stability forms of PAPER.md §8 (the constraint
``X(q) <= x_max`` of §8.1, the learning-rate scale ``s`` of §8.2). Both q-step solvers
(:mod:`fedsketch.planner.qstep_fast`, :mod:`fedsketch.planner.qstep_reference`) score their candidates
with it and return a :class:`QStepResult`, or raise :class:`SolverError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedsketch.network.round_time import _emax_and_grad_sorted
from fedsketch.planner.bound import PlanProblem, rounds_model
from fedsketch.planner.lbfgs import dot_1d


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


class FixedK:
    """P2 (eq. 21) at fixed ranks ``k``, in ascending ``t_cp`` order (sorted once; eq. 15 needs it).

    Methods take ``x``, the participation probabilities in sorted order (:meth:`to_sorted`,
    :meth:`to_clients` convert). ``lam`` is the dual price of ``X(q) <= x_max`` (§8.1) that
    :meth:`log_obj` adds as a Lagrangian term; ``s_fixed`` holds §8.2's ``s`` fixed during the
    ``scale_lr`` scan of the fast q-step.
    """

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
                f"kappa_max * Omega <= {self.phi_max:g} (PAPER.md §8.1); use ranks k >= r / max_step_factor"
            )
        self.lam = 0.0  # dual price of X(q) <= x_max inside the constrained q-step
        self.s_fixed: float | None = None  # scale_lr scan: evaluate log J at this fixed s

    def X(self, x: np.ndarray) -> float:
        """``X(q) = sum_n p_n^2 / q_n`` (PAPER.md §8; ``Omega = sum p(1-p) + X``)."""
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
        """``D(q, k) = theta1 - sum_n c_n / q_n`` (eq. 21)."""
        return float(self.t1 - np.sum(self.cs / x))

    def T_hat(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``T_hat`` (eq. 24) and its gradient, sorted order."""
        e, ge = _emax_and_grad_sorted(x, self.ts)
        return e + dot_1d(x, self.ws), ge + self.ws

    def J(self, x: np.ndarray) -> float:
        """Exact ``J = R T_hat`` (eq. 21; §8.2's rounds under ``scale_lr``); ``inf`` where the target is unreached."""
        R = rounds_model(self.prob.theta, float(np.sum(self.cs / x)), self.s(x))
        return R * self.T_hat(x)[0] if np.isfinite(R) else np.inf

    def log_obj(self, x: np.ndarray, with_diag: bool = False):
        """``-log D + log T_hat`` (= ``log J - log theta4``, eq. 21) and its gradient in ``q``.

        Below ``D_guard = max(delta, tiny)`` ``-log D`` is continued by its second-order Taylor
        polynomial, so the function stays finite and C^1 for the line search; the solution is
        checked against ``D >= delta`` afterwards. With ``with_diag`` also returns the two
        per-client curvature pieces ``(c_n / q_n) / D`` and ``q_n dT/dq_n / T`` used by the
        diagonal preconditioner in ``y = log q`` (:mod:`fedsketch.planner.qstep_fast`).
        """
        inv = self.cs / x  # c_n / q_n, (N,)
        V = float(np.sum(inv))
        sc, gs = 1.0, None  # s and ds/dq (scale_lr branch with s < 1, §8.2)
        xq: np.ndarray | None = None
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
        diag_x = self.lam * xq if self.lam > 0 and xq is not None else 0.0  # xq is set above when lam > 0
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
        """Inside the Appendix C box, ``D >= delta`` (eq. 36) and ``X <= x_max`` (§8.1), to round-off."""
        return bool(
            np.all(x >= self.lb * (1 - 1e-12))
            and np.all(x <= 1)
            and self.D(x) >= self.delta * (1 - 1e-12)
            and self.X(x) <= self.x_max * (1 + 1e-12)
        )


def best_candidate(fx: FixedK, cands: list[tuple[np.ndarray, str]]) -> tuple[np.ndarray | None, float, str]:
    """The feasible candidate ``(x, status)`` of least exact ``J`` as ``(x, J, status)``; ``x`` is None if none is."""
    best: tuple[np.ndarray | None, float, str] = (None, np.inf, "no feasible candidate")
    for x, status in cands:
        if x is None or not fx.feasible(x):
            continue
        j = fx.J(x)
        if j < best[1]:
            best = (x, j, status)
    return best
