"""Projected L-BFGS for a smooth function over a box ``lo <= x <= hi`` (generic; no planner maths).

The fast q-step (:mod:`fedsketch.planner.qstep_fast`) runs it on ``log J`` in ``y = log q``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def dot_1d(a: np.ndarray, b: np.ndarray) -> float:
    """1-D dot product without BLAS: OpenBLAS threads ``ddot`` above ~10k entries, and on a
    shared 2-core machine those threads cost up to 10 ms per call."""
    return float(np.einsum("i,i->", a, b))


def projected_lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    memory: int = 10,
    maxiter: int = 1000,
    ftol: float = 1e-14,
    gtol: float = 1e-10,
    armijo: float = 1e-4,
    backtrack: float = 0.5,
    max_backtracks: int = 60,
    precond: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, float, int, int, str]:
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
    S: list[np.ndarray] = []  # the last `memory` steps s and gradient changes y, appended and dropped in pairs
    Y: list[np.ndarray] = []
    status = "max iterations"
    nfev = 1
    it = 0  # iterations started (returned)
    for _ in range(maxiter):
        it += 1
        pg = x - np.clip(x - g, lo, hi)
        if np.max(np.abs(pg)) <= gtol:
            status = "projected gradient below gtol"
            break
        free = (~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))).astype(float)
        d = -g * free
        # two-loop recursion restricted to the free variables
        alphas: list[tuple[float, float, np.ndarray, np.ndarray]] = []
        for s, y in zip(reversed(S), reversed(Y), strict=True):
            sf, yf = s * free, y * free
            sy = dot_1d(sf, yf)
            if sy <= 0:
                alphas.append((0.0, 0.0, sf, yf))
                continue
            a = dot_1d(sf, d) / sy
            d -= a * yf
            alphas.append((a, sy, sf, yf))
        if precond is not None:
            d /= precond(x)
        elif S:
            sf, yf = S[-1] * free, Y[-1] * free
            yy = dot_1d(yf, yf)
            if yy > 0 and dot_1d(sf, yf) > 0:
                d *= dot_1d(sf, yf) / yy
        else:
            d /= max(1.0, float(np.max(np.abs(d))))
        for a, sy, sf, yf in reversed(alphas):
            if sy > 0:
                b = dot_1d(yf, d) / sy
                d += (a - b) * sf
        if dot_1d(g, d) >= 0:  # not a descent direction: reset the memory
            S.clear()
            Y.clear()
            d = -g * free
            if precond is not None:
                d /= precond(x)
            else:
                d /= max(1.0, float(np.max(np.abs(d))))
        t = 1.0
        for _ in range(max_backtracks):
            xn = np.clip(x + t * d, lo, hi)
            fn, gn = fun(xn)
            nfev += 1
            if np.isfinite(fn) and fn <= f + armijo * dot_1d(g, xn - x):
                break
            t *= backtrack
        else:
            status = "line search failed"
            break
        s, y = xn - x, gn - g
        sy = dot_1d(s, y)
        if sy > 1e-12 * math.sqrt(dot_1d(s, s) * dot_1d(y, y)):
            S.append(s)
            Y.append(y)
            if len(S) > memory:
                S.pop(0)
                Y.pop(0)
        done = (f - fn) <= ftol * max(abs(f), abs(fn), 1.0)
        x, f, g = xn, fn, gn
        if done:
            status = "relative reduction of f below ftol"
            break
    return x, f, it, nfev, status
