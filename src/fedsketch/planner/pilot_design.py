"""Where the pilots of eq. 22 run, and whether plans stay in the region they cover (PAPER.md §8.4).

The bound depends on a plan only through ``(X, Y) = (sum p_n^2 / q_n, sum p_n^2 r / (k_n q_n))`` (eq. 21;
a homogeneous pilot ``(q, k)`` sits at ``(P/q, P r/(q k))``, eq. 23). Every plan the constraints allow lies
in the wedge ``P <= X <= x_hi, X <= Y <= kappa X`` (``q_n <= 1``, ``k_n <= r``, and the bounds of
:func:`plan_extent`), whose four corners are homogeneous configurations: ``(1, r)``, ``(P/x_hi, r)``,
``(1, r/kappa)``, ``(P/x_hi, r/kappa)``. Pilots at those corners cover every plan: the wedge is their
convex hull. :data:`PILOT_DESIGNS` holds the designs of ``planner.pilot_design``; :func:`plan_region`
keeps plans inside the region the pilots measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedsketch.planner.bound import normalise_weights
from fedsketch.planner.estimate import EstimationError, PilotObservation, design_matrix


def pilot_configs(pilot_q: Sequence[float], pilot_k_frac: Sequence[float], r: int) -> list[tuple[float, int]]:
    """Pilot ``(q^i, k^i)`` from the config lists; ``k^i = max(1, round(frac * r))``."""
    if len(pilot_q) != len(pilot_k_frac):
        raise EstimationError(
            f"planner.pilot_q has {len(pilot_q)} entries but planner.pilot_k_frac has {len(pilot_k_frac)}; they pair up"
        )
    if len(pilot_q) < 4:
        raise EstimationError(f"eq. 22 has 4 unknowns: need at least 4 pilot configurations, got {len(pilot_q)}")
    out = []
    for i, (q, f) in enumerate(zip(pilot_q, pilot_k_frac, strict=True)):
        if not (isinstance(q, (int, float)) and 0 < q <= 1):
            raise EstimationError(f"planner.pilot_q[{i}] = {q!r} must lie in (0, 1]")
        if not (isinstance(f, (int, float)) and 0 < f <= 1):
            raise EstimationError(f"planner.pilot_k_frac[{i}] = {f!r} must lie in (0, 1]")
        out.append((float(q), max(1, int(round(f * r)))))
    return out


#: largest q of the low-q pilots and largest k/r of the low-k pilots, so that the pilots always spread
#: in q and in k (eq. 22 needs 3 affinely independent (X, Y) points; identification, §2.8)
COVER_MAX_Q_LO = 0.5


def plan_extent(
    p: np.ndarray, r: int, *, stability: str, max_step_factor: float, q_floor: float, k_min: int
) -> tuple[float, float]:
    """``(x_hi, kappa)`` of the wedge ``P <= X <= x_hi, X <= Y <= kappa X`` holding every allowed plan.

    ``q_n >= q_floor`` gives ``X <= P / q_floor``; ``k_n >= k_min`` gives ``Y <= (r / k_min) X``. Under
    ``stability = "constrain"`` (PAPER.md §8.1) ``kappa_max (sum p(1-p) + X) <= Phi_max`` with
    ``kappa_max >= 1`` and ``sum p(1-p) = 1 - P`` gives ``X <= Phi_max - 1 + P``, and the smallest rank
    is ``k_stable = ceil(r / Phi_max)`` (``PlanProblem.k_stable``).
    """
    pw = normalise_weights(p)
    P = float(np.sum(pw**2))
    k_lo = max(1, min(int(k_min), int(r)))
    x_hi = P / float(q_floor)
    if stability == "constrain":
        x_hi = min(x_hi, float(max_step_factor) - 1.0 + P)
        k_lo = max(k_lo, int(np.ceil(r / float(max_step_factor) - 1e-9)))
    return max(x_hi, P), r / min(k_lo, r)


def _design_list(p, r, *, pilot_q, pilot_k_frac, **_) -> list[tuple[float, int]]:
    """The configured lists ``planner.pilot_q`` / ``planner.pilot_k_frac`` as given (:func:`pilot_configs`)."""
    return pilot_configs(pilot_q, pilot_k_frac, r)


def _design_cover(
    p, r, *, stability, max_step_factor, q_floor, k_min, pilot_q, pilot_k_frac
) -> list[tuple[float, int]]:
    """Four pilots at the corners of the region where plans land (see the module docstring).

    Under ``stability = "constrain"`` the region is :func:`plan_extent`'s wedge: every plan the solver
    may return is in the pilots' convex hull, whatever theta turns out to be. The other forms allow
    plans down to ``q_min_floor`` and ``k_min``, where pilots would not train, so there the wedge
    spans the configured lists' smallest q and k (``planner.pilot_q``, ``planner.pilot_k_frac``) and the
    guard of :func:`plan_region` keeps plans inside it. The low pilots are at most ``q = 0.5`` and
    ``k = r - 1`` so that q and k both vary (identification).
    """
    pw = normalise_weights(p)
    P = float(np.sum(pw**2))
    if stability == "constrain":
        x_hi, kappa = plan_extent(
            pw, r, stability=stability, max_step_factor=max_step_factor, q_floor=q_floor, k_min=k_min
        )
        q_lo, k_lo = P / x_hi, int(round(r / kappa))
    else:
        lst = pilot_configs(pilot_q, pilot_k_frac, r)
        q_lo, k_lo = max(float(q_floor), min(q for q, _ in lst)), max(int(k_min), min(k for _, k in lst))
    q_lo = min(q_lo, COVER_MAX_Q_LO)
    k_lo = max(1, min(k_lo, r - 1)) if r > 1 else 1
    return [(1.0, int(r)), (float(q_lo), int(r)), (1.0, int(k_lo)), (float(q_lo), int(k_lo))]


#: ``planner.pilot_design``: name -> design(p, r, **planner settings) -> [(q, k), ...]
PILOT_DESIGNS: dict[str, Callable[..., list[tuple[float, int]]]] = {"cover": _design_cover, "list": _design_list}


def design_pilots(
    name: str,
    p: np.ndarray,
    r: int,
    *,
    stability: str = "constrain",
    max_step_factor: float = 1.3,
    q_floor: float = 0.01,
    k_min: int = 1,
    pilot_q: Sequence[float] = (1.0, 0.5, 1.0, 0.25),
    pilot_k_frac: Sequence[float] = (1.0, 1.0, 0.25, 0.5),
) -> list[tuple[float, int]]:
    """Pilot configurations ``(q^i, k^i)`` of the design ``name`` (``planner.pilot_design``, :data:`PILOT_DESIGNS`)."""
    if name not in PILOT_DESIGNS:
        raise EstimationError(f"planner.pilot_design = {name!r}: allowed values are {', '.join(PILOT_DESIGNS)}")
    return PILOT_DESIGNS[name](
        p,
        r,
        stability=stability,
        max_step_factor=max_step_factor,
        q_floor=q_floor,
        k_min=k_min,
        pilot_q=list(pilot_q),
        pilot_k_frac=list(pilot_k_frac),
    )


def design_from_planner(pl, p: np.ndarray, r: int) -> list[tuple[float, int]]:
    """:func:`design_pilots` with the ``[planner]`` settings ``pl`` (``planner.pilot_design``) at rank ``r``."""
    return design_pilots(
        pl.pilot_design,
        p,
        int(r),
        stability=pl.stability,
        max_step_factor=float(pl.max_step_factor),
        q_floor=float(pl.q_min_floor),
        k_min=int(pl.k_min),
        pilot_q=pl.pilot_q,
        pilot_k_frac=pl.pilot_k_frac,
    )


def observation_points(obs: Sequence[PilotObservation], p: np.ndarray, r: int) -> np.ndarray:
    """``(X_i, Y_i)`` of every observation (eq. 23; a verification row's own X, Y), shape (m, 2)."""
    A = design_matrix(obs, p, r)  # (m, 4): [R, -R X, -R Y, -1]
    return np.stack([-A[:, 1] / A[:, 0], -A[:, 2] / A[:, 0]], axis=1)


def in_hull(points: np.ndarray, hull_of: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """Whether each of ``points`` (n, 2) lies in the convex hull of ``hull_of`` (m, 2); False if the hull is flat."""
    from scipy.spatial import ConvexHull, QhullError

    scale = np.max(np.abs(hull_of), axis=0)
    try:
        hull = ConvexHull(hull_of / scale)
    except (QhullError, ValueError):
        return np.zeros(len(points), dtype=bool)
    eq = hull.equations  # (f, 3): a . x + b <= 0 inside, |a| = 1
    return np.all(np.asarray(points, float) / scale @ eq[:, :2].T + eq[:, 2] <= rtol, axis=1)


def plan_region(
    obs: Sequence[PilotObservation],
    p: np.ndarray,
    r: int,
    *,
    stability: str,
    max_step_factor: float,
    q_floor: float,
    k_min: int,
) -> tuple[float, int, bool]:
    """``(q_floor, k_min, covered)`` that keep plans inside the region the pilots ``obs`` measured (§8.4).

    ``covered``: the convex hull of the pilots' ``(X, Y)`` already contains :func:`plan_extent`'s wedge,
    so every allowed plan is inside it and nothing changes. Otherwise the box of PAPER.md §8.4 applies:
    ``q_n >= `` the smallest pilot q and ``k_n >= `` the smallest pilot k (homogeneous pilots). With the
    ``cover`` design the box's plans are themselves in the hull (``X <= P / q_lo``, ``Y <= (r/k_lo) X``).
    """
    k_min = max(1, min(int(k_min), int(r)))
    if not obs:
        return float(q_floor), k_min, False
    pw = normalise_weights(p)
    P = float(np.sum(pw**2))
    x_hi, kappa = plan_extent(pw, r, stability=stability, max_step_factor=max_step_factor, q_floor=q_floor, k_min=k_min)
    corners = np.array([[P, P], [x_hi, x_hi], [x_hi, kappa * x_hi], [P, kappa * P]])
    if np.all(in_hull(corners, observation_points(obs, pw, r))):
        return float(q_floor), k_min, True
    homo = [o for o in obs if o.X is None]
    if not homo:
        return float(q_floor), k_min, False
    return max(float(q_floor), min(o.q for o in homo)), min(int(r), max(k_min, min(o.k for o in homo))), False
