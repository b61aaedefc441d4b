"""Same-finish-time bandwidth split of one round (PAPER.md eq. 10).

Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq


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


def allocate_bandwidth(
    t_cp: np.ndarray | list[float], t_cm: np.ndarray | list[float], W: float
) -> tuple[float, np.ndarray]:
    """Split the total bandwidth ``W`` so that every sampled client finishes at the same time.

    Solves eq. (10): ``T = min_{f >= 0, sum f <= W} max_n (t_cp[n] + t_cm[n] / f[n])``. At the
    optimum all clients finish together, ``f_n = t_cm[n] / (T - t_cp[n])``, and ``T`` is the
    unique root on ``(max t_cp, inf)`` of ``g(T) = sum_n t_cm[n] / (T - t_cp[n]) - W``, found by
    Brent's method in the bracket of PAPER.md §2.4.

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
    if np.all(t_cp == t_cp[0]):
        T = float(t_cp[0] + t_cm.sum() / W)
    else:
        lo = float(np.max(t_cp + t_cm / W))
        hi = float(t_cp.max() + t_cm.sum() / W)

        def g(T: float) -> float:
            return float(np.sum(t_cm / (T - t_cp)) - W)

        # xtol tiny: the tolerance is relative (4 eps |T|); an absolute 1e-12 left finish times
        # ~1e-9 apart when a participant's slack T - t_cp is ~1e-4 (found by hypothesis).
        if g(lo) <= 0:
            T = lo
        elif g(hi) >= 0:  # the upper bracket is the root up to round-off (e.g. all t_cp ~ 0)
            T = hi
        else:
            T = float(brentq(g, lo, hi, xtol=np.finfo(float).tiny, rtol=4 * np.finfo(float).eps))
    b = t_cm / (T - t_cp)
    b *= W / b.sum()  # remove the root finder's last-ulp residue so that sum(b) == W
    return T, b
