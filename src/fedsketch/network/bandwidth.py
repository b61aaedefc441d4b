"""Same-finish-time bandwidth split of one round (PAPER.md eq. 10) and its round time.

The round time ``T`` is the root on ``(max_n t_cp[n], inf)`` of
``g(T) = sum_n t_cm[n] / (T - t_cp[n]) - W``; the bandwidth of client ``n`` is then
``f_n = t_cm[n] / (T - t_cp[n])``. Two solvers of that root live here:

- :func:`equal_finish_time`: one participant set, Brent's method (used by :func:`allocate_bandwidth`
  and by the eq. 11 root of :mod:`fedsketch.network.round_time`);
- :func:`round_times`: many participation masks at once, a vectorised Newton iteration (the
  enumeration and Monte Carlo estimates of ``E[T]``); it agrees with the scalar root to ~1e-12 relative.

Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

#: Newton iterations of the vectorised eq. 10 root (monotone, quadratically convergent; ~8 suffice)
_NEWTON_MAX_ITER = 100
_NEWTON_RTOL = 1e-14


def _as_times(name: str, x: np.ndarray | list[float], allow_zero: bool) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite; client(s) {np.flatnonzero(~np.isfinite(a)).tolist()} are not")
    bad = np.flatnonzero(a < 0) if allow_zero else np.flatnonzero(a <= 0)
    if bad.size:
        rule = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {rule}; client {int(bad[0])} has {float(a[bad[0]])!r}")
    return a


def equal_finish_time(t_cp: np.ndarray, t_cm: np.ndarray, W: float) -> float:
    """Round time of eq. (10) for one non-empty participant set: the root of
    ``g(T) = sum_n t_cm[n] / (T - t_cp[n]) - W`` on ``(max t_cp, inf)``.

    Closed form ``t_cp + sum t_cm / W`` when all compute times are equal; otherwise Brent's method in
    the bracket of PAPER.md §2.4, ``[max_n (t_cp[n] + t_cm[n] / W), max t_cp + sum t_cm / W]``.
    The inputs are not validated: 1-D float arrays of one shape and size >= 1, ``t_cp >= 0``,
    ``t_cm > 0``, ``W > 0`` (:func:`allocate_bandwidth` checks them).
    """
    if np.all(t_cp == t_cp[0]):
        return float(t_cp[0] + t_cm.sum() / W)
    lo = float(np.max(t_cp + t_cm / W))
    hi = float(t_cp.max() + t_cm.sum() / W)

    def g(T: float) -> float:
        return float(np.sum(t_cm / (T - t_cp)) - W)

    # xtol tiny: the tolerance is relative (4 eps |T|); an absolute 1e-12 would leave finish times
    # ~1e-9 apart when a participant's slack T - t_cp is ~1e-4.
    if g(lo) <= 0:
        return lo
    if g(hi) >= 0:  # the upper bracket is the root up to round-off (e.g. all t_cp ~ 0)
        return hi
    return float(brentq(g, lo, hi, xtol=np.finfo(float).tiny, rtol=4 * np.finfo(float).eps))


def allocate_bandwidth(
    t_cp: np.ndarray | list[float], t_cm: np.ndarray | list[float], W: float
) -> tuple[float, np.ndarray]:
    """Split the total bandwidth ``W`` so that every sampled client finishes at the same time.

    Solves eq. (10): ``T = min_{f >= 0, sum f <= W} max_n (t_cp[n] + t_cm[n] / f[n])``. At the
    optimum all clients finish together, ``f_n = t_cm[n] / (T - t_cp[n])``, and ``T`` is the
    unique root on ``(max t_cp, inf)`` of ``g(T) = sum_n t_cm[n] / (T - t_cp[n]) - W``
    (:func:`equal_finish_time`).

    Parameters
    ----------
    t_cp : array of shape (K,)
        Computation time of each sampled client this round, seconds (>= 0).
    t_cm : array of shape (K,)
        Upload time of each sampled client at one unit of bandwidth (payload in Mbit when
        ``W`` is in Mbps); must be > 0.
    W : float
        Total uplink bandwidth (> 0).

    Returns
    -------
    T : float
        Round time; 0.0 for an empty round (PAPER.md §4 decision 10).
    b : array of shape (K,)
        Bandwidth of each client; sums to ``W``, and ``t_cp + t_cm / b == T`` for all.
    """
    if not np.isfinite(W) or W <= 0:
        raise ValueError(f"bandwidth W must be a finite number > 0, got {W!r}")
    t_cp = _as_times("t_cp", t_cp, allow_zero=True)
    t_cm = _as_times("t_cm", t_cm, allow_zero=False)
    if t_cp.shape != t_cm.shape:
        raise ValueError(f"t_cp and t_cm must have the same shape, got {t_cp.shape} and {t_cm.shape}")
    if t_cp.size == 0:
        return 0.0, np.zeros(0)
    T = equal_finish_time(t_cp, t_cm, W)
    b = t_cm / (T - t_cp)
    b *= W / b.sum()  # remove the root finder's last-ulp residue so that sum(b) == W
    return T, b


def round_times(masks: np.ndarray, t_cp: np.ndarray, t_cm: np.ndarray, W: float) -> np.ndarray:
    """Eq. 10 round time for many participation masks at once.

    ``g(T) = sum_{n in K} t_n^cm / (T - t_n^cp) - W`` is convex and decreasing on
    ``(max_K t^cp, inf)``, so Newton's method started at the left bracket end
    ``max_K (t^cp + t^cm / W)`` (where ``g >= 0``) increases monotonically to the root.
    Agrees with :func:`equal_finish_time` to ~1e-12 relative.

    Parameters
    ----------
    masks : bool array (S, N)
        Participation masks, one row per round.
    t_cp, t_cm : arrays (N,)
    W : float

    Returns
    -------
    T : array (S,)
        Round times; 0 for an empty round (spec §4 decision 10).
    """
    masks = np.asarray(masks, dtype=bool)
    m = masks.astype(float)  # (S, N)
    any_on = masks.any(axis=1)
    T = np.where(masks, t_cp + t_cm / W, -np.inf).max(axis=1)  # (S,) left bracket
    T = np.where(any_on, T, 0.0)
    active = np.array(any_on, dtype=bool)  # (S,), a copy
    for _ in range(_NEWTON_MAX_ITER):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        Ti = T[idx, None]
        gap = Ti - t_cp[None, :]
        gap = np.where(masks[idx], gap, 1.0)  # avoid /0 for non-participants; m = 0 there
        inv = m[idx] * t_cm[None, :] / gap  # (s, N)
        g = inv.sum(axis=1) - W
        dg = -(inv / gap).sum(axis=1)
        step = -g / dg
        step = np.maximum(step, 0.0)  # monotone from the left; guards round-off
        newT = T[idx] + step
        T[idx] = newT
        done = step <= _NEWTON_RTOL * np.maximum(newT, 1.0)
        active[idx[done]] = False
    return T
