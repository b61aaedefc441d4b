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

Stability (PAPER.md §8): under ``constrain`` a move below ``k = r Omega(q) / Phi_max`` is not
allowed (it would make ``kappa_max Omega`` exceed ``Phi_max``); under ``scale_lr`` each move's
``s = min(1, Phi_max / (kappa_max Omega))`` is recomputed from the new ``min_n k_n``, and every
``J`` goes through :func:`fedsketch.planner.bound.rounds_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedsketch.planner.bound import PlanProblem, rounds_model

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

    def __init__(self, q: np.ndarray, t: np.ndarray, order: np.ndarray | None = None) -> None:
        order = np.argsort(t) if order is None else order
        ts, qs = t[order], q[order]
        n = ts.size
        self.order = order
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
        lengths = np.diff(self.B)  # (N,) lengths of [B_i, B_{i+1}), i < N
        self.V, self.H = V, H
        self.IV = np.concatenate(([0.0], np.cumsum(V[:-1] * lengths)))  # (N+1,) int_0^{B_i} G
        self.IH = np.concatenate(([0.0], np.cumsum(H[:-1] * lengths)))

    def at_own_times(self) -> tuple[np.ndarray, np.ndarray]:
        """``int_0^{t_n} G`` and ``int_0^{t_n} H`` for every client at its own time (no search), (N,) each."""
        pos = np.empty(self.order.size, dtype=np.int64)
        pos[self.order] = np.arange(1, self.order.size + 1)  # B[pos[n]] == t_n
        return self.IV[pos], self.IH[pos]

    def integrals_sorted(self, xs: np.ndarray) -> np.ndarray:
        """``int_0^x G`` for ascending keys ``xs`` (monotone search and gathers), shape (len(xs),)."""
        i = np.searchsorted(self.B, xs, side="right") - 1  # B_i <= x
        return self.IV[i] + self.V[i] * (xs - self.B[i])

    def integrals(
        self, x: np.ndarray, key_order: np.ndarray | None = None, with_h: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``int_0^x G`` and ``int_0^x H`` for arbitrary ``x`` (one sorted search), (len(x),) each.

        ``key_order`` (optional) is an argsort of ``x`` known in advance (saves the sort).
        """
        o = np.argsort(x) if key_order is None else key_order  # sorted keys: cache-friendly searches
        i = np.empty(x.size, dtype=np.int64)
        i[o] = np.searchsorted(self.B, x[o], side="right") - 1  # B_i <= x
        dx = x - self.B[i]
        return self.IV[i] + self.V[i] * dx, (self.IH[i] + self.H[i] * dx) if with_h else None


def move_gains(
    prob: PlanProblem, q: np.ndarray, k: np.ndarray, step: int, _pre: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
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
        ``J`` after the single move (``inf`` where the move leaves ``[k_min, r]`` or the constraint).
    k_new : int array (N,)
        The moved ranks (clipped to ``[k_min, r]`` where invalid).
    """
    pre = _pre if _pre is not None else _precompute(prob, q, k)
    k_new = k + step
    k_lo = max(prob.k_min, pre["k_req"])  # constrain (§8.1): kappa_max(k') Omega(q) <= Phi_max
    valid = (k_new >= k_lo) & (k_new <= prob.r)
    k_new = np.clip(k_new, prob.k_min, prob.r)
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
    iG_new, iH_new = surv.integrals(t_cp2)
    iG = np.where(down, pre["iG"] - iG_new, iG_new - pre["iG"])  # int over [min, max) of G, >= 0
    iH = np.where(one & down, pre["iH"] - iH_new, 0.0)
    int_minus = np.where(one, iH, iG / np.where(one, 1.0, 1.0 - q))  # int of G_{-m} when moving down
    dE = np.where(down, -q * int_minus, q * iG)
    T2 = pre["E"] + dE + pre["comm"] + q * (t_cm2 - t_cm) / prob.W
    s2 = 1.0
    if prob.stability == "scale_lr":  # §8.2: s depends on min_n k_n; a move changes it only at the minimum
        kmin_others = np.where((k != pre["kmin"]) | (pre["kmin_count"] > 1), pre["kmin"], pre["kmin2"])
        s2 = np.minimum(1.0, prob.max_step_factor * np.minimum(kmin_others, k_new) / (prob.r * pre["omega"]))
    R2 = rounds_model(prob.theta, prob.theta.theta1 - D2, s2)  # (N,), inf where unreachable
    J2 = np.where(valid & np.isfinite(R2), R2 * T2, np.inf)
    return J2, k_new


def _precompute(prob: PlanProblem, q: np.ndarray, k: np.ndarray) -> dict:
    """Per-sweep quantities shared by the -1 and +1 moves of every client."""
    t_cp, t_cm = prob.times(k)
    c = prob.c(k)
    order = np.argsort(t_cp)
    surv = _Survival(q, t_cp, order)
    qs = q[order]
    P = np.ones_like(qs)  # prod_{j>i} (1 - q_j), sorted
    P[:-1] = np.cumprod((1.0 - qs)[::-1])[::-1][1:]
    e = float(np.sum(qs * P * t_cp[order]))  # eq. 15
    iG, iH = surv.at_own_times()
    V = float(np.sum(c / q))
    D = prob.theta.theta1 - V
    comm = float(np.einsum("i,i->", q, t_cm)) / prob.W
    R = rounds_model(prob.theta, V, prob.lr_scale(q, k))  # eq. 21 / §8.2
    J = R * (e + comm) if np.isfinite(R) else np.inf
    omega = prob.omega(q)
    k_req = int(np.ceil(prob.r * omega / prob.max_step_factor - 1e-9)) if prob.stability == "constrain" else 1
    ks = np.unique(k)
    return {
        "t_cp": t_cp,
        "t_cm": t_cm,
        "c": c,
        "D": D,
        "surv": surv,
        "iG": iG,
        "iH": iH,
        "one": q >= 1.0,
        "E": e,
        "comm": comm,
        "J": J,
        "omega": omega,
        "k_req": k_req,
        "kmin": int(ks[0]),
        "kmin2": int(ks[1]) if ks.size > 1 else prob.r + 1,
        "kmin_count": int(np.sum(k == ks[0])),
    }


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
    pre = _precompute(prob, q, k)
    J = pre["J"]
    steps = (-1,) if moves == "decrease" else (-1, 1)
    n_moves = sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        best_J = np.full(prob.N, np.inf)
        best_k = k.copy()
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
            pre_t = _precompute(prob, q, trial)  # exact J of the block, reused by the next sweep
            feasible = (
                np.all(q >= prob.q_lower(trial) * (1 - 1e-12))
                and pre_t["D"] >= prob.delta
                and int(trial.min()) >= pre_t["k_req"]
            )
            if feasible and pre_t["J"] < J * (1 - rtol):
                k, J, pre, accepted = trial, pre_t["J"], pre_t, True
                n_moves += size
                break
            size //= 2
        if not accepted:  # the exact single-move gain was within round-off: stop
            break
    J = prob.objective(q, k)
    return KStepResult(k, float(J), n_moves, sweeps)
