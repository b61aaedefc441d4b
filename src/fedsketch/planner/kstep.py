"""The k-step of Algorithm 2: greedy coordinate descent over integer ranks (PAPER.md §3, §7.4).

With ``q`` fixed, each move changes one client's ``k_n`` by one unit (decrease only, as in the
paper's lines 12–19, or ±1 as in spec §7.4) and is accepted when it lowers ``J(q, k)`` (eq. 21)
while keeping the Appendix C constraint. The effect of every single move is computed exactly
and for all clients at once:

- ``D`` changes by ``(c_n(k_n) - c_n(k_n')) / q_n`` (O(1) per client);
- the upload term of ``T_hat`` by ``q_n (t_n^cm(k_n') - t_n^cm(k_n)) / W``;
- ``E[t_max^cp]`` (eq. 15) through its integral form ``E = int_0^inf (1 - G(s)) ds`` with
  ``G(s) = prod_{j : t_j > s} (1 - q_j)``: moving client ``m`` from ``a`` to ``b < a`` changes it
  by ``-q_m int_b^a G_{-m}(s) ds`` and from ``a`` to ``b > a`` by ``+q_m int_a^b G(s) ds``, where
  ``G_{-m}`` leaves client ``m`` out. ``G`` is piecewise constant between sorted compute times,
  so both integrals are differences of one cumulative table (O(N log N) for all moves).

The improving moves are then accepted as a block, largest gain first; if the block as a whole
does not lower ``J`` (moves interact through ``E[t_max]`` and ``D``) it is halved until it does
(a single move always does, as its gain is exact). Sweeps repeat until no move improves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedsketch.network.round_time import _emax_and_grad_sorted
from fedsketch.planner.bound import PlanProblem

K_MOVES = ("decrease", "both")


@dataclass
class KStepResult:
    """Outcome of a k-step: ranks, exact ``J`` (eq. 21), accepted moves and sweeps."""

    k: np.ndarray
    objective: float
    moves: int
    sweeps: int
    info: dict = field(default_factory=dict)


class _Survival:
    """Cumulative integrals of ``G(s)`` and of ``G`` with one ``q = 1`` client left out.

    Breakpoints ``B = [0, t_(1), ..., t_(N)]`` (shape (N+1,)); on ``[B_i, B_{i+1})`` the clients
    slower than ``s`` are sorted positions ``i..N-1``.
    """

    def __init__(self, q: np.ndarray, t: np.ndarray) -> None:
        order = np.argsort(t, kind="stable")
        ts, qs = t[order], q[order]
        n = ts.size
        self.B = np.concatenate(([0.0], ts))  # (N+1,)
        one = qs >= 1.0
        a = np.where(one, 1.0, 1.0 - qs)  # (N,) factors of clients with q < 1
        # V_i = prod_{j>=i} (1-q_j), i = 0..N (V_N = 1); H_i = same product over q<1 clients if exactly
        # one q=1 client is in {j >= i}, else 0 (the integrand of G_{-m} for a q_m = 1 client).
        prod_a = np.ones(n + 1)
        prod_a[:-1] = np.cumprod(a[::-1])[::-1]
        ones_after = np.zeros(n + 1, dtype=np.int64)
        ones_after[:-1] = np.cumsum(one[::-1])[::-1]
        V = np.where(ones_after > 0, 0.0, prod_a)
        H = np.where(ones_after == 1, prod_a, 0.0)
        lengths = np.diff(np.concatenate((self.B, [np.inf])))[:-1]  # (N,) lengths of [B_i, B_{i+1}), i < N
        self.V, self.H = V, H
        self.IV = np.concatenate(([0.0], np.cumsum(V[:-1] * lengths)))  # (N+1,) int_0^{B_i} G
        self.IH = np.concatenate(([0.0], np.cumsum(H[:-1] * lengths)))

    def _integral(self, cum: np.ndarray, val: np.ndarray, x: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.B, x, side="right") - 1  # interval index, B_i <= x
        return cum[i] + val[i] * (x - self.B[i])

    def int_G(self, x: np.ndarray) -> np.ndarray:
        """``int_0^x G(s) ds``."""
        return self._integral(self.IV, self.V, x)

    def int_H(self, x: np.ndarray) -> np.ndarray:
        return self._integral(self.IH, self.H, x)


def move_gains(prob: PlanProblem, q: np.ndarray, k: np.ndarray, step: int,
               _pre: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``J`` after moving each client alone from ``k_n`` to ``k_n + step``.

    Parameters
    ----------
    prob : PlanProblem
    q : array (N,)
    k : int array (N,)
    step : {-1, +1}

    Returns
    -------
    J_new : array (N,)
        ``J`` after the single move (``inf`` where the move leaves ``[1, r]`` or the constraint).
    k_new : int array (N,)
        The moved ranks (clipped to ``[1, r]`` where invalid).
    """
    pre = _pre if _pre is not None else _precompute(prob, q, k)
    k_new = k + step
    valid = (k_new >= 1) & (k_new <= prob.r)
    k_new = np.clip(k_new, 1, prob.r)
    t_cp, t_cm = pre["t_cp"], pre["t_cm"]
    t_cp2, t_cm2 = prob.times(k_new)
    c2 = prob.c(k_new)
    D2 = pre["D"] + (pre["c"] - c2) / q  # (N,)
    valid &= q >= prob.q_lower(k_new) * (1 - 1e-12)
    if prob.feasibility == "exact":
        valid &= D2 >= prob.delta
    valid &= D2 > 0
    surv, one = pre["surv"], pre["one"]
    down = t_cp2 < t_cp
    # integrals between the old time a = t_cp and the new time b = t_cp2 (either order)
    iG_new = surv.int_G(t_cp2)
    iG = np.where(down, pre["iG"] - iG_new, iG_new - pre["iG"])  # int over [min, max) of G, >= 0
    iH = np.where(one & down, pre["iH"] - surv.int_H(t_cp2), 0.0)
    int_minus = np.where(one, iH, iG / np.where(one, 1.0, 1.0 - q))  # int of G_{-m} when moving down
    dE = np.where(down, -q * int_minus, q * iG)
    T2 = pre["E"] + dE + pre["comm"] + q * (t_cm2 - t_cm) / prob.W
    with np.errstate(divide="ignore"):
        J2 = np.where(valid, prob.theta.theta4 / np.where(valid, D2, 1.0) * T2, np.inf)
    return J2, k_new


def _precompute(prob: PlanProblem, q: np.ndarray, k: np.ndarray) -> dict:
    """Per-sweep quantities shared by the -1 and +1 moves of every client."""
    t_cp, t_cm = prob.times(k)
    c = prob.c(k)
    surv = _Survival(q, t_cp)
    order = np.argsort(t_cp, kind="stable")
    e, _ = _emax_and_grad_sorted(q[order], t_cp[order])
    return {"t_cp": t_cp, "t_cm": t_cm, "c": c, "D": prob.theta.theta1 - float(np.sum(c / q)), "surv": surv,
            "iG": surv.int_G(t_cp), "iH": surv.int_H(t_cp), "one": q >= 1.0, "E": e,
            "comm": float(np.dot(q, t_cm)) / prob.W}


def k_step(
    prob: PlanProblem,
    q: np.ndarray,
    k: np.ndarray,
    moves: str = "both",
    max_sweeps: int = 100_000,
    rtol: float = 1e-12,
) -> KStepResult:
    """Greedy coordinate descent on integer ``k_n in [1, r]`` with ``q`` fixed (Algorithm 2 lines 12–20).

    Parameters
    ----------
    prob : PlanProblem
    q : array (N,)
        Fixed participation probabilities.
    k : int array (N,)
        Starting ranks (feasible with ``q``).
    moves : {"decrease", "both"}
        Paper's decrease-only moves, or ±1 (spec §7.4).
    max_sweeps : int
        Safety cap on block-acceptance rounds.
    rtol : float
        A move must lower ``J`` by more than ``rtol * J``.

    Returns
    -------
    KStepResult
    """
    if moves not in K_MOVES:
        raise ValueError(f"k_moves must be one of {K_MOVES}, got {moves!r}")
    q = prob.check_q(q)
    k = prob.check_k(k).copy()
    J = prob.objective(q, k)
    steps = (-1,) if moves == "decrease" else (-1, 1)
    n_moves = sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        best_J = np.full(prob.N, np.inf)
        best_k = k.copy()
        pre = _precompute(prob, q, k)
        for st in steps:
            J2, k2 = move_gains(prob, q, k, st, pre)
            better = J2 < best_J
            best_J = np.where(better, J2, best_J)
            best_k = np.where(better, k2, best_k)
        cand = np.flatnonzero(best_J < J * (1 - rtol))
        if cand.size == 0:
            break
        cand = cand[np.argsort(best_J[cand], kind="stable")]  # largest gain first
        size = cand.size
        accepted = False
        while size >= 1:
            trial = k.copy()
            trial[cand[:size]] = best_k[cand[:size]]
            if not prob.violations(q, trial):
                Jt = prob.objective(q, trial)
                if Jt < J * (1 - rtol):
                    k, J, accepted = trial, Jt, True
                    n_moves += size
                    break
            size //= 2
        if not accepted:  # the exact single-move gain was within round-off: stop
            break
    return KStepResult(k, float(J), n_moves, sweeps)
