"""A joint (q, k) start for Algorithm 2 at large N: per-client best response to global prices.

Write ``T = T_hat(q, k)`` (eq. 24) and ``D = D(q, k)`` (eq. 21). Client ``m``'s share of the
round time is exactly linear in its own ``q_m``: ``E[t_max^cp] = E_{-m} + q_m Gamma_{-m}(t_m)``
with ``Gamma_{-m}(x) = int_0^x prod_{j != m, t_j > s} (1 - q_j) ds`` (eq. 15 in integral form),
so ``T = T_{-m} + q_m A_m(k_m)``, ``A_m(k) = Gamma_{-m}(t_m^cp(k)) + t_m^cm(k) / W``, and
``D = D_{-m} - c_m(k_m) / q_m``. Linearising ``log J = log T - log D + const`` in one client's
contribution (exact as N grows: each client moves T and D by O(1/N)), the client's best
response to the prices ``1/T`` and ``1/D`` is

    min over k, q in [q_lower(k), 1] of  q A_m(k) / T + c_m(k) / (q D),
    q*(k) = clip(sqrt(c_m(k) T / (A_m(k) D)), q_lower(k), 1),

a separable problem solved for all clients at once by enumerating the ``r`` ranks (``Gamma``
is one cumulative table of the survival function, evaluated by a sorted search per rank).
Iterating "prices -> best responses -> prices" with damping on ``q`` gives a point close to a
stationary point of P2 (eq. 21) in O(r N) numpy work per iteration, with no one-unit-at-a-time
rank moves; :func:`fedsketch.planner.solve.solve` then polishes it with the exact q- and
k-steps. ``Gamma`` is taken with client ``m`` included (``Gamma ~ Gamma_{-m}`` up to a factor
``1/(1 - q_m)`` below ``t_m``), a difference of O(q_m) that the exact polish removes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from fedsketch.network.round_time import _emax_sorted
from fedsketch.planner.bound import PlanProblem
from fedsketch.planner.kstep import _Survival


def best_response_start(
    prob: PlanProblem,
    *,
    iterations: int = 30,
    rtol: float = 1e-4,
    q0: np.ndarray | None = None,
    k0: np.ndarray | None = None,
    window: int = 2,
    k_floor: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Damped best-response iteration on the prices ``(1/T, 1/D)`` (module docstring).

    Parameters
    ----------
    prob : PlanProblem
    iterations : int
        At most this many price updates.
    rtol : float
        Stop when the exact ``J`` (eq. 21) improves by less than this, relatively.
    q0, k0 : arrays (N,), optional
        Starting point (default ``q = 1``, ``k = r``).
    window : int
        Once the prices settle, only ranks within this distance of each client's rank are scored.
    k_floor : int, optional
        Smallest rank considered. Under ``stability = "constrain"`` the budget
        ``X(q) <= Phi_max k_floor / r - sum p(1-p)`` (§8.1) is priced by a bisection on its
        scalar dual; :func:`fedsketch.planner.solve.solve` tries a few floors, because one client
        at a low rank tightens the budget for all and no single-client move sees that.

    Returns
    -------
    q, k, info
        The best point visited (exact ``J``), feasible for the problem's constraint, and
        ``{"iterations", "history"}``.
    """
    N, r = prob.N, prob.r
    k = np.full(N, r, dtype=np.int64) if k0 is None else prob.check_k(k0).copy()
    q = np.ones(N) if q0 is None else prob.check_q(q0).copy()
    q = np.clip(q, np.minimum(prob.q_lower(k), 1.0), 1.0)
    prof = prob.profiles
    th = prob.theta
    linear = prob.compute_model == "linear"

    def evaluate(q: np.ndarray, k: np.ndarray) -> tuple[float, float, float, np.ndarray, np.ndarray]:
        """Exact J (eq. 21), T_hat (eq. 24), D, t_cp and its sort order (one sort)."""
        t_cp, t_cm = prob.times(k)
        order = np.argsort(t_cp)
        T = _emax_sorted(q[order], t_cp[order]) + float(np.einsum("i,i->", q, t_cm)) / prob.W
        D = prob.D(q, k)
        R = prob.rounds(q, k)  # eq. 21 / §8.2 (one rounds model, bound.rounds_model)
        J = R * T if np.isfinite(R) and D > 0 else np.inf
        return J, T, D, t_cp, order

    cur = evaluate(q, k)
    best = (cur[0], q.copy(), k.copy())
    history = [cur[0]]
    k_lo = max(prob.k_stable, int(k_floor or 1))  # constrain (§8.1): r / k <= Phi_max
    levels_all = np.arange(k_lo, r + 1)
    # work in ascending-tau_cp order: with the linear model the keys t_cp(k) = (k/r) tau_cp of every
    # rank are then already sorted, so each rank costs one merge-like search and no gathers
    o = np.argsort(prof.tau_cp)
    tau_cp, tau_cm, tau_0 = prof.tau_cp[o], prof.tau_cm[o], prof.tau_0[o]
    p_s = prob.p[o]
    p2 = p_s**2
    key_orders: dict[int, np.ndarray] = {}  # affine model: sorted order of t_cp at each rank (cached)
    full = True
    lam_last = 0.0  # dual price of the constrain budget at the last best response
    for _ in range(iterations):
        J_cur, T, D, t_cp, order = cur
        if not (np.isfinite(D) and D > 0 and T > 0):
            break
        surv = _Survival(q, t_cp, order)
        score = np.full(N, np.inf)
        k_s = k[o]
        new_k, new_q = k_s.copy(), q[o]
        # all ranks while the prices move a lot; later only a window around each client's rank
        levels = levels_all if full else np.arange(max(k_lo, int(k.min()) - window), min(r, int(k.max()) + window) + 1)
        constrain = prob.stability == "constrain"
        stored = []  # per-rank (lev, A, c, lb, mask) for the dual search of the constrain form

        def respond(
            lev: int,
            A: np.ndarray,
            c: np.ndarray,
            lb_raw: np.ndarray,
            lam: float,
            score: np.ndarray,
            new_k: np.ndarray,
            new_q: np.ndarray,
            *,
            T: float = T,
            D: float = D,
            full: bool = full,
            k_s: np.ndarray = k_s,
        ) -> None:
            # best q at this rank: argmin q A/T + (c/D + lam p^2)/q over [lb, 1]
            # (T, D, full, k_s: this iteration's values, bound when it defines respond)
            with np.errstate(divide="ignore", invalid="ignore"):
                qi = np.sqrt((c / D + lam * p2) * T / A)
            ql = np.clip(np.where(A > 0, qi, 1.0), np.minimum(lb_raw, 1.0), 1.0)
            sc = ql * A / T + (c / D + lam * p2) / ql
            sc[lb_raw > 1.0] = np.inf
            if not full:
                sc[np.abs(k_s - lev) > window] = np.inf
            better = sc < score
            score[better] = sc[better]
            new_k[better] = lev
            new_q[better] = ql[better]

        for lev in levels.tolist():
            frac = lev / r
            if linear:
                A = surv.integrals_sorted(frac * tau_cp)  # eq. 19, keys ascending
            else:
                tcp_l = tau_0 + frac * (tau_cp - tau_0)  # eq. 19, affine
                if lev not in key_orders:
                    key_orders[lev] = np.argsort(tcp_l)
                A = surv.integrals(tcp_l, key_orders[lev], with_h=False)[0]
            A += (frac / prob.W) * tau_cm  # eq. 18
            c = p2 * (th.theta2 + th.theta3 * r / lev)  # c_n(k), eq. 21
            lb_raw = np.maximum(prob.q_min_from_c(c, p_s), prob.q_floor)
            respond(lev, A, c, lb_raw, 0.0, score, new_k, new_q)
            if constrain:
                stored.append((lev, A, c, lb_raw))

        # X(q) - x_max(k), §8.1 (kappa_max <= r / k_lo: the floor fixes the budget)
        def x_excess(nk: np.ndarray, nq: np.ndarray) -> float:
            return float(np.sum(p2 / nq)) - (prob.max_step_factor * k_lo / r - prob.sum_p1mp)

        if constrain and x_excess(new_k, new_q) > 0:
            # bisection on the dual price of X(q) <= x_max (scale ~ 1/(T D) of the per-client terms)
            lam_lo, lam_hi = 0.0, (2.0 * lam_last if lam_last > 0 else 1.0 / D)  # warm: last iteration's price
            for _ in range(40):
                score_h, nk, nq = np.full(N, np.inf), k_s.copy(), q[o]
                for args in stored:
                    respond(*args, lam_hi, score_h, nk, nq)
                if x_excess(nk, nq) <= 0:
                    break
                lam_lo, lam_hi = lam_hi, lam_hi * 4
            best_dual = (nk, nq)
            for _ in range(12):  # a start only: the exact q-step enforces the constraint afterwards
                lam = 0.5 * (lam_lo + lam_hi)
                score_h, nk, nq = np.full(N, np.inf), k_s.copy(), q[o]
                for args in stored:
                    respond(*args, lam, score_h, nk, nq)
                if x_excess(nk, nq) <= 0:
                    lam_hi, best_dual = lam, (nk, nq)
                else:
                    lam_lo = lam
                if lam_hi - lam_lo < 1e-2 * lam_hi:
                    break
            new_k, new_q = best_dual
            lam_last = lam_hi
        kk, qq = np.empty_like(new_k), np.empty_like(new_q)
        kk[o], qq[o] = new_k, new_q
        new_k, new_q = kk, qq
        if prob.stability == "constrain":  # §8.1: raise q towards 1 until kappa_max Omega <= Phi_max
            new_q = _towards_one(new_q, partial(_within_budget, prob, new_k))
        # damped update: geometric mixing of q, ranks from the best response; halve until J improves
        accepted = False
        for alpha in (1.0, 0.5, 0.25, 0.125):
            qa = np.exp((1 - alpha) * np.log(q) + alpha * np.log(new_q)) if alpha < 1 else new_q
            ka = new_k if alpha >= 0.5 else np.where(np.abs(new_k - k) <= 1, new_k, k + np.sign(new_k - k))
            ka = ka.astype(np.int64)
            qa = np.clip(qa, np.minimum(prob.q_lower(ka), 1.0), 1.0)
            if prob.stability == "constrain":
                qa = _towards_one(qa, partial(_within_budget, prob, ka))
            if prob.violations(qa, ka):
                continue
            cand = evaluate(qa, ka)
            if cand[0] < J_cur:
                q, k, cur, accepted = qa, ka, cand, True
                break
        history.append(cur[0])
        if cur[0] < best[0]:
            best = (cur[0], q.copy(), k.copy())
        gain = (history[-2] - history[-1]) / history[-2]
        if not accepted or gain < rtol:
            if full:
                break
            full = True  # confirm with all ranks before stopping
            continue
        full = gain > 0.05
    return best[1], best[2], {"iterations": len(history) - 1, "history": history, "lambda": lam_last}


def _within_budget(prob: PlanProblem, k: np.ndarray, q: np.ndarray) -> bool:
    """The ``constrain`` budget (§8.1) at ranks ``k``: ``X(q) <= x_max(k)``."""
    return prob.X(q) <= prob.x_max(k)


def _towards_one(q: np.ndarray, ok: Callable[[np.ndarray], bool]) -> np.ndarray:
    """Smallest move ``q + s (1 - q)`` (bisection on s) with ``ok``; ``ok(1)`` must hold."""
    if ok(q):
        return q
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if ok(q + mid * (1 - q)):
            hi = mid
        else:
            lo = mid
    return q + hi * (1 - q)
