"""The fit of theta1..theta4 from pilot runs (PAPER.md §2.8, eqs. 22–23; Algorithm 2 lines 1–4) and its JSON I/O.

Pilot run ``i`` trains with every client at the same ``(q^i, k^i)`` until the training loss
first reaches the estimation loss ``F_s`` and reports the number of rounds ``R_i``. With
``P = sum_n p_n^2``, ``X_i = P / q^i`` and ``Y_i = P r / (q^i k^i)``, the model
``R_i (theta1 - theta2 X_i - theta3 Y_i) = theta4`` gives the homogeneous system (22)

    A theta = 0,   A_i = [R_i, -R_i X_i, -R_i Y_i, -1]     (A: shape (m, 4), m >= 4 pilots),

solved by SVD: theta is the right singular vector of the smallest singular value (least squares
when m > 4), after scaling A's columns to unit norm (the unscaled vector is returned,
normalised to ``||theta|| = 1``; only ratios matter). The sign is fixed so that ``theta4 > 0``.

The estimate is *checked*, not returned as if fine: it is flagged when

- the pilots do not pin theta down (the second-smallest singular value is below ``rcond`` times
  the largest, i.e. the null space is more than one-dimensional — e.g. all pilots share k/r);
- the sign pattern is wrong (``theta1 <= 0`` or ``theta2 < 0`` or ``theta3 < 0``; spec: rerun
  with more widely spread configurations).

With ``signs="constrain"`` (``planner.estimate_signs``; an extension, not in the paper) a
sign-violating estimate is replaced by the least-squares fit under the physical signs
``theta2, theta3 >= 0`` (Theorem 1: both are variance constants): the minimum of ``||A theta||``
on the unit sphere with a negative coefficient pinned to 0 is the smallest right singular vector
of ``A`` without that column (both single-column active sets are tried; the best sign-valid one
wins). Only a negative theta2/theta3 with theta1 > 0 is refitted. The result records which
constants were pinned and both residuals, so the reader sees what the constraint cost. If both
would have to be pinned, the pilots show no effect of q or k at all, and the estimate stays flagged.

The engine is reached only through the injected ``run_pilot(q, k) -> rounds`` callable. Where the pilots
run is :mod:`fedsketch.planner.pilot_design`; the bootstrap band and the sequential refinement of
PAPER.md §8.4 are in :mod:`fedsketch.planner.refine`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedsketch.config.readers import ReadError, check_type, read_json, short
from fedsketch.planner.bound import Theta, normalise_weights

#: default threshold on sigma_(m-1) / sigma_1 (after column scaling) below which theta is not identified
DEFAULT_RCOND = 1e-3
#: relative size below which a negative theta2/theta3 is round-off of 0
DEFAULT_SIGN_TOL = 1e-9


class EstimationError(ValueError):
    """Pilot runs or their estimate are unusable; the message says why and what to change."""


@dataclass(frozen=True)
class PilotObservation:
    """One pilot configuration: every client at ``(q, k)``; ``rounds`` to reach the estimation loss.

    ``replicates`` holds the per-seed rounds whose mean is ``rounds`` (PAPER.md §8.4; used by the
    bootstrap). ``X``/``Y`` override ``P/q`` and ``P r/(q k)`` for a heterogeneous configuration
    (a verification pilot at a plan's per-client ``q_n, k_n``: ``X = sum p_n^2/q_n``,
    ``Y = sum p_n^2 r/(k_n q_n)``).
    """

    q: float
    k: int
    rounds: float
    replicates: tuple[float, ...] = ()
    X: float | None = None
    Y: float | None = None


@dataclass
class ThetaEstimate:
    """Result of :func:`estimate_theta`.

    Attributes
    ----------
    theta : array (4,)
        ``(theta1, theta2, theta3, theta4)``, unit norm, ``theta4 > 0``.
    singular_values : array (4,)
        Of the column-scaled design matrix, descending.
    rcond : float
        ``sigma_3 / sigma_1``: how well the pilots identify theta (small = ill-conditioned).
    residual : float
        ``sigma_4 / sigma_1``: misfit of the model to the observations (0 for exact data).
    ok : bool
        True when no problem was found.
    problems : list of str
        What is wrong, in words.
    """

    theta: np.ndarray
    singular_values: np.ndarray
    rcond: float
    residual: float
    ok: bool
    problems: list[str]
    observations: list[PilotObservation] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)
    unconstrained: np.ndarray | None = None
    unconstrained_residual: float | None = None

    def require(self) -> Theta:
        """The estimate as :class:`Theta`, or :class:`EstimationError` listing the problems."""
        if not self.ok:
            raise EstimationError("theta estimate rejected: " + "; ".join(self.problems))
        return Theta.from_sequence(self.theta)

    def to_dict(self) -> dict:
        return {
            "theta": [float(x) for x in self.theta],
            "ok": bool(self.ok),
            "problems": list(self.problems),
            "singular_values": [float(x) for x in self.singular_values],
            "rcond": float(self.rcond),
            "residual": float(self.residual),
            "pilots": [
                {
                    "q": o.q,
                    "k": o.k,
                    "rounds": o.rounds,
                    **({"replicates": list(o.replicates)} if o.replicates else {}),
                    **({"X": o.X, "Y": o.Y} if o.X is not None else {}),
                }
                for o in self.observations
            ],
            **(
                {
                    "pinned_to_zero": list(self.pinned),
                    "unconstrained_theta": [float(x) for x in self.unconstrained],
                    "unconstrained_residual": float(self.unconstrained_residual),
                }
                # the unconstrained fit is kept exactly when something was pinned
                if self.pinned and self.unconstrained is not None and self.unconstrained_residual is not None
                else {}
            ),
        }


def run_pilots(
    run_pilot: Callable[[float, int], float | None], configs: Sequence[tuple[float, int]]
) -> list[PilotObservation]:
    """Call the injected engine once per configuration (Algorithm 2 line 1).

    ``run_pilot(q, k)`` returns the rounds needed to reach the estimation loss, or ``None`` /
    a non-positive value when the loss was never reached (an :class:`EstimationError` naming
    the configuration).
    """
    obs = []
    for q, k in configs:
        rounds = run_pilot(q, k)
        if rounds is None or not np.isfinite(rounds) or rounds <= 0:
            raise EstimationError(
                f"pilot run (q={q:g}, k={k}) never reached the estimation loss (got {rounds!r}); raise "
                "planner.pilot_max_rounds or loosen planner.pilot_loss"
            )
        reps = tuple(float(x) for x in getattr(run_pilot, "last_replicates", ()) or ())
        obs.append(PilotObservation(q, int(k), float(rounds), reps if len(reps) > 1 else ()))
    return obs


def design_matrix(obs: Sequence[PilotObservation], p: np.ndarray, r: int) -> np.ndarray:
    """Rows ``A_i = [R_i, -R_i X_i, -R_i Y_i, -1]`` of eq. 23, shape (m, 4)."""
    P = float(np.sum(normalise_weights(p) ** 2))
    R = np.array([o.rounds for o in obs], dtype=float)
    X = np.array([o.X if o.X is not None else P / o.q for o in obs], dtype=float)
    Y = np.array([o.Y if o.Y is not None else P * r / (o.q * o.k) for o in obs], dtype=float)
    return np.stack([R, -R * X, -R * Y, -np.ones_like(R)], axis=1)


SIGN_MODES = ("check", "constrain")


def _null_vector(A: np.ndarray, cols: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm minimiser of ``||A theta||`` with ``theta`` zero outside ``cols``; returns (theta (4,), s)."""
    sub = A[:, list(cols)]
    scale = np.linalg.norm(sub, axis=0)  # column scaling, as in the unconstrained fit
    _, s, vt = np.linalg.svd(sub / scale, full_matrices=False)
    theta = np.zeros(A.shape[1])
    theta[list(cols)] = vt[-1] / scale
    theta /= np.linalg.norm(theta)
    if theta[3] < 0:
        theta = -theta
    return theta, s


def _scaled_misfit(A: np.ndarray, theta: np.ndarray) -> float:
    """``||(A/scale) v||`` for ``v = theta*scale`` normalised: the quantity the SVD minimises."""
    scale = np.linalg.norm(A, axis=0)
    v = theta * scale
    return float(np.linalg.norm((A / scale) @ (v / np.linalg.norm(v))))


def _constrained_fit(A: np.ndarray, tiny: float) -> tuple[np.ndarray, list[str]] | None:
    """Smallest-residual sign-valid fit with theta2 and/or theta3 pinned to 0, or None."""
    best = None
    for pinned in ((1,), (2,)):
        cols = [c for c in range(4) if c not in pinned]
        theta, _ = _null_vector(A, cols)
        if theta[0] > 0 and theta[3] > 0 and all(theta[i] >= -tiny for i in (1, 2)):
            theta[1:3] = np.maximum(theta[1:3], 0.0)
            res = _scaled_misfit(A, theta)
            if best is None or res < best[0]:
                best = (res, theta, [("theta2", "theta3")[i - 1] for i in pinned])
    return None if best is None else (best[1], best[2])


def estimate_theta(
    obs: Sequence[PilotObservation],
    p: np.ndarray,
    r: int,
    rcond: float = DEFAULT_RCOND,
    sign_tol: float = DEFAULT_SIGN_TOL,
    signs: str = "check",
) -> ThetaEstimate:
    """SVD estimate of theta from pilot observations (eqs. 22–23), with identifiability and sign checks.

    Parameters
    ----------
    obs : sequence of PilotObservation
        At least 4 runs.
    p : array (N,)
        Data weights (or sizes).
    r : int
        Global LoRA rank.
    rcond : float
        Flag the estimate when ``sigma_3 / sigma_1 < rcond`` (column-scaled A).
    sign_tol : float
        ``theta2``/``theta3`` in ``[-sign_tol, 0)`` (relative to ``max |theta|``) are round-off of
        a true 0 and are set to 0; below that they are a sign violation.
    signs : {"check", "constrain"}
        ``check`` (the paper): flag a sign violation. ``constrain``: refit with the violating
        constant pinned to 0 (see the module docstring) and report what was pinned.

    Returns
    -------
    ThetaEstimate
        Always returned; check ``ok`` / call ``require()``.
    """
    if signs not in SIGN_MODES:
        raise EstimationError(f"planner.estimate_signs = {signs!r}: allowed values are {', '.join(SIGN_MODES)}")
    if len(obs) < 4:
        raise EstimationError(f"eq. 22 has 4 unknowns: need at least 4 pilot runs, got {len(obs)}")
    A = design_matrix(obs, p, r)  # (m, 4)
    theta, s = _null_vector(A, range(4))  # column-scaled SVD, unit norm, theta4 >= 0
    problems = []
    if theta[3] <= 0:
        problems.append("theta4 = 0: the observations are inconsistent with the model R = theta4 / D")
    ratio = float(s[-2] / s[0])
    if not ratio >= rcond:
        problems.append(
            f"ill-conditioned: sigma_3/sigma_1 = {ratio:.3g} < rcond = {rcond:g}, "
            "so the pilots do not determine theta; "
            "spread the pilot configurations (q down to 0.25, k down to r/8, and not all with the same k/r)"
        )
    tiny = sign_tol * float(np.max(np.abs(theta)))
    theta[1:3] = np.where((theta[1:3] < 0) & (theta[1:3] >= -tiny), 0.0, theta[1:3])
    pinned: list[str] = []
    residual = float(s[-1] / s[0])
    free, free_res = theta.copy(), residual
    # only a sign violation of theta2/theta3 is refitted; theta1 <= 0 (target unreachable) stays flagged
    if signs == "constrain" and theta[0] > 0 and (theta[1] < 0 or theta[2] < 0):
        fit = _constrained_fit(A, tiny)
        if fit is None:
            problems.append(
                "no sign-valid fit with theta2 or theta3 pinned to 0: the pilots show no effect of "
                "q or k on the rounds needed; spread the pilot configurations or add seeds"
            )
        else:
            theta, pinned = fit
    names = ("theta1", "theta2", "theta3")
    if theta[0] <= 0:
        problems.append(
            f"sign violation: theta1 = {theta[0]:.4g} <= 0 (target unreachable under the fitted model); "
            "rerun the pilots with more widely spread configurations or a looser pilot_loss"
        )
    for i in (1, 2):
        if theta[i] < 0:
            problems.append(
                f"sign violation: {names[i]} = {theta[i]:.4g} < 0; rerun the pilots with more widely "
                "spread configurations (spec §2.8)"
            )
    if pinned:  # misfit of the constrained fit on the same column-scaled system
        residual = _scaled_misfit(A, theta) / float(s[0])
    return ThetaEstimate(
        theta,
        s,
        ratio,
        residual,
        not problems,
        problems,
        list(obs),
        pinned,
        free if pinned else None,
        free_res if pinned else None,
    )


def _pilot_number(path: Path, i: int, row: dict, key: str, ok: Callable[[float], bool], allowed: str) -> float:
    v = row.get(key)
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and ok(v)):
        got = "missing" if key not in row else f"got {short(v)}"
        raise ReadError(f"{path}: pilots[{i}].{key}: {got}; allowed {allowed}")
    return float(v)


def load_pilots(path: str | Path) -> list[PilotObservation]:
    """The pilot observations recorded in a JSON written by ``fedsketch estimate`` (key ``pilots``).

    Every problem (missing or unreadable file, not UTF-8, not JSON, no ``pilots`` list, a value
    of the wrong type or out of range) is a :class:`~fedsketch.config.readers.ReadError` (bad input)
    naming the file and the record.
    """
    path = Path(path)
    if not path.exists():
        raise ReadError(f"--pilots: file not found: {path}")
    data = read_json(path, key="--pilots")
    if not isinstance(data, dict):
        raise ReadError(
            f"{path}: expected a JSON object with a 'pilots' list (as `fedsketch estimate` writes), "
            f"got {type(data).__name__} {short(data, 40)}"
        )
    rows = data.get("pilots")
    if not isinstance(rows, list) or not rows:
        raise ReadError(f"{path}: no 'pilots' list (a non-empty list of {{q, k, rounds}} objects)")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ReadError(f"{path}: pilots[{i}]: expected an object with 'q', 'k' and 'rounds', got {short(row)}")
        q = _pilot_number(path, i, row, "q", lambda v: 0 < v <= 1, "a number in (0, 1]")
        k = _pilot_number(path, i, row, "k", lambda v: v >= 1 and float(v).is_integer(), "an integer >= 1")
        rounds = _pilot_number(path, i, row, "rounds", lambda v: v > 0, "a finite number > 0")
        reps = row.get("replicates", [])
        if not (isinstance(reps, list) and all(check_type(v, "number") and math.isfinite(v) and v > 0 for v in reps)):
            raise ReadError(f"{path}: pilots[{i}].replicates: got {short(reps)}; allowed a list of rounds > 0")
        xy = {}
        if "X" in row or "Y" in row:
            xy = {key: _pilot_number(path, i, row, key, lambda v: v > 0, "a finite number > 0") for key in ("X", "Y")}
        out.append(PilotObservation(q, int(k), rounds, tuple(float(v) for v in reps), **xy))
    return out


def load_theta_file(path: str | Path) -> Theta:
    """Read a theta JSON written by ``fedsketch estimate``; refuses a flagged estimate.

    Every problem (missing or unreadable file, invalid JSON, JSON that is not an object, a
    'theta' that is not 4 finite numbers, signs that violate eq. 23) is an
    :class:`EstimationError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise EstimationError(
            f"planner.theta_file: file not found: {path} (`fedsketch estimate CONFIG --out {path}` "
            f"writes it from pilot runs)"
        )
    try:
        data = read_json(path, key="planner.theta_file")
    except ReadError as e:
        raise EstimationError(str(e)) from None
    if not isinstance(data, dict):
        raise EstimationError(
            f"{path}: expected a JSON object with a 'theta' list (as `fedsketch estimate` "
            f"writes), got {type(data).__name__} {short(data, 40)}"
        )
    if "theta" not in data:
        raise EstimationError(f"{path}: no 'theta' key")
    if not data.get("ok", True):
        problems = data.get("problems", [])
        why = "; ".join(map(str, problems)) if isinstance(problems, list) else str(problems)
        why = " ".join(why.split())  # one line
        raise EstimationError(f"{path}: the estimate was flagged: {why[:200]}{'...' if len(why) > 200 else ''}")
    vals = data["theta"]
    if not (
        isinstance(vals, list)
        and len(vals) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals)
    ):
        raise EstimationError(f"{path}: 'theta' must be a list of 4 finite numbers, got {short(vals)}")
    try:
        return Theta.from_sequence(vals)
    except ValueError as e:
        raise EstimationError(f"{path}: {e}") from None
