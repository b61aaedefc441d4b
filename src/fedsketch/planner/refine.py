"""Bootstrap band and sequential refinement of the theta fit (PAPER.md §8.4).

:func:`bootstrap_theta` resamples the pilots' per-seed rounds and refits eq. 22 to give a band on theta
and, through :func:`predicted_time_band`, on a plan's predicted time ``J`` (eq. 21). :func:`refine` is
§8.4's "Algorithm 2+": plan, run one verification pilot at the plan, add it as a row of eq. 22, refit,
re-plan, until the observed rounds match the prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedsketch.planner.bound import Theta, normalise_weights
from fedsketch.planner.estimate import EstimationError, PilotObservation, ThetaEstimate, estimate_theta


@dataclass
class ThetaBand:
    """Bootstrap of theta over the pilot replicates (PAPER.md §8.4).

    ``ratios``: (B, 3) bootstrap draws of ``theta2/theta1, theta3/theta1, theta4/theta1`` (theta is
    defined up to scale, so the band is reported for ratios); ``lo``/``hi`` their ``level`` band
    (default 5-95 %); ``thetas``: (B, 4) the draws with ``theta1 = 1`` (sign-valid draws only);
    ``invalid``: draws whose fit broke the sign pattern (left out, counted).
    """

    ratios: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    thetas: np.ndarray
    invalid: int
    level: tuple[float, float]

    def to_dict(self) -> dict:
        names = ("theta2/theta1", "theta3/theta1", "theta4/theta1")
        return {
            "level": list(self.level),
            "draws": int(self.ratios.shape[0]),
            "invalid_draws": int(self.invalid),
            **{n: [float(a), float(b)] for n, a, b in zip(names, self.lo, self.hi, strict=True)},
        }


def bootstrap_theta(
    obs: Sequence[PilotObservation],
    p: np.ndarray,
    r: int,
    rng: np.random.Generator,
    *,
    draws: int = 500,
    level: tuple[float, float] = (5.0, 95.0),
    signs: str = "check",
) -> ThetaBand:
    """Resample each configuration's replicates with replacement, refit eq. 22, collect theta (§8.4).

    Every observation needs ``replicates`` (>= 2 to carry any spread). Draws whose fit is not
    sign-valid (theta1 <= 0, theta2 or theta3 < 0 after ``signs``) are dropped and counted.
    """
    if any(len(o.replicates) == 0 for o in obs):
        raise EstimationError(
            "bootstrap needs the per-seed rounds of every pilot (PilotObservation.replicates); "
            "run the pilots with planner.pilot_seeds >= 3"
        )
    reps = [np.asarray(o.replicates, dtype=float) for o in obs]
    out = []
    invalid = 0
    for _ in range(draws):
        boot = [
            dataclasses.replace(o, rounds=float(np.mean(rv[rng.integers(0, rv.size, rv.size)])))
            for o, rv in zip(obs, reps, strict=True)
        ]
        est = estimate_theta(boot, p, r, rcond=0.0, signs=signs)
        th = est.theta
        if th[0] <= 0 or th[1] < 0 or th[2] < 0 or th[3] <= 0:
            invalid += 1
            continue
        out.append(th / th[0])
    if not out:
        raise EstimationError(
            f"bootstrap: none of {draws} draws gave a sign-valid theta; spread the pilots or add seeds"
        )
    thetas = np.array(out)  # (B, 4)
    ratios = thetas[:, 1:]
    lo, hi = np.percentile(ratios, level, axis=0)
    return ThetaBand(ratios, lo, hi, thetas, invalid, level)


def predicted_time_band(band: ThetaBand, prob, q: np.ndarray, k: np.ndarray) -> tuple[float, float, np.ndarray]:
    """The plan's predicted total time ``J(q, k)`` (eq. 21) under every bootstrap theta: (lo, hi, draws).

    ``prob`` is a :class:`fedsketch.planner.bound.PlanProblem`; J is invariant to the scale of theta,
    so the ``theta1 = 1`` draws give the plan's time directly. Draws whose target is unreachable at
    ``(q, k)`` give ``inf`` (kept: they are part of the uncertainty).
    """
    J = np.array([dataclasses.replace(prob, theta=Theta(*th)).objective(q, k) for th in band.thetas])
    lo, hi = np.percentile(J, band.level)
    return float(lo), float(hi), J


@dataclass
class RefinementStep:
    """One pass of the refinement loop: theta, the plan's predicted and observed rounds, the plan itself."""

    theta: list[float]
    predicted_rounds: float
    observed_rounds: float
    relative_error: float
    q: list[float] = field(default_factory=list)
    k: list[int] = field(default_factory=list)
    X: float | None = None
    Y: float | None = None


def refine(
    obs: Sequence[PilotObservation],
    p: np.ndarray,
    r: int,
    plan_fn: Callable[[Theta, list[PilotObservation]], tuple[np.ndarray, np.ndarray, float]],
    verify_fn: Callable[[np.ndarray, np.ndarray], float | None],
    *,
    max_iter: int = 3,
    tol: float = 0.2,
    signs: str = "check",
) -> tuple[ThetaEstimate, list[RefinementStep]]:
    """Sequential refinement (PAPER.md §8.4, "Algorithm 2+"): plan, verify, refit, re-plan.

        Each pass fits theta (eq. 22) on the observations so far, plans with it
        (``plan_fn(theta, observations) -> (q, k, predicted_rounds)``; the observations so far are passed
        so that the plan can be kept inside their region,
    :func:`fedsketch.planner.pilot_design.plan_region`), runs one verification pilot at the plan
        (``verify_fn(q, k) -> rounds``), and adds it as a row of eq. 22 with that plan's
        ``X = sum p^2/q_n`` and ``Y = sum p^2 r/(k_n q_n)``. It stops when the observed rounds are
        within ``tol`` (relative) of the prediction, or after ``max_iter`` verification pilots.

        Returns
        -------
        estimate, steps
            The last fit (including every verification row) and one record per pass.
    """
    pw = normalise_weights(p)
    rows = list(obs)
    steps: list[RefinementStep] = []
    est = estimate_theta(rows, pw, r, signs=signs)
    for _ in range(max_iter):
        theta = est.require()
        q, k, predicted = plan_fn(theta, list(rows))
        observed = verify_fn(q, k)
        if observed is None or not np.isfinite(observed) or observed <= 0:
            raise EstimationError(
                f"refinement: the verification pilot at the plan never reached the estimation "
                f"loss (got {observed!r}); raise planner.pilot_max_rounds"
            )
        err = abs(observed - predicted) / predicted
        q, k = np.asarray(q, dtype=float), np.asarray(k, dtype=float)
        X, Y = float(np.sum(pw**2 / q)), float(np.sum(pw**2 * r / (k * q)))  # the plan's own q_n, k_n (eq. 23)
        steps.append(
            RefinementStep(
                [float(x) for x in est.theta],
                float(predicted),
                float(observed),
                float(err),
                q.tolist(),
                [int(x) for x in k],
                X,
                Y,
            )
        )
        # q, k of the row are summaries for the table only; eq. 22 reads X, Y
        rows.append(PilotObservation(float(np.mean(q)), int(round(float(np.mean(k)))), float(observed), X=X, Y=Y))
        est = estimate_theta(rows, pw, r, signs=signs)
        if err <= tol:
            break
    return est, steps
