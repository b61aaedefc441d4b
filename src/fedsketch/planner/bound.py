"""Convergence bound, rounds model and the planning problem P2 (PAPER.md §2.3, §2.7; eqs. 9, 21, 36–39).

The P2-ready form of Theorem 1 (eq. 9) says that the number of rounds needed to reach the
target is ``R(q, k) = theta4 / D(q, k)`` with

    D(q, k) = theta1 - theta2 X(q) - theta3 Y(q, k) = theta1 - sum_n c_n(k_n) / q_n,
    X(q)    = sum_n p_n^2 / q_n,           Y(q, k) = sum_n p_n^2 r / (k_n q_n),
    c_n(k)  = p_n^2 (theta2 + theta3 r / k_n).

Problem P2 (eq. 21) minimises ``J(q, k) = R(q, k) * T_hat(q, k)`` where ``T_hat`` is the
Theorem 2 round-time bound (eq. 20) at the sketch-scaled times of eqs. 18–19, subject to the
Appendix C constraint on ``q`` (eqs. 36–39) in one of three forms (spec §4 decision 7):

- ``per_client`` (the paper's eq. 39): ``q_n >= (1+mu) N c_n / theta1``;
- ``p_weighted``: ``q_n >= (1+mu) c_n / (p_n theta1)`` (theta1 split in proportion to p_n);
- ``exact``: ``D(q, k) >= delta = mu theta1`` (convex in q; eq. 36 with a margin).

Stability (PAPER.md §8, ours): Theorem 1 needs ``eta <= 1 / (32 L H beta kappa_max Omega)``;
P2 keeps ``eta`` fixed and ignores it. ``Phi(q, k) = kappa_max(k) Omega(q)`` with
``Omega = sum_n p_n (1 - p_n) + X(q)`` and ``kappa_max = r / min_n k_n`` is the plan's step factor.
``stability`` (``planner.stability``) selects

- ``constrain`` (§8.1): add ``Phi(q, k) <= Phi_max`` to P2; for fixed k it is
  ``X(q) <= Phi_max / kappa_max(k) - sum_n p_n (1 - p_n)``, convex in q;
- ``scale_lr`` (§8.2): any plan, trained at ``eta * s`` with ``s = min(1, Phi_max / Phi)``; the
  rounds model becomes ``R = (theta4 / s) / (theta1 - s (theta2 X + theta3 Y))``;
- ``none``: the paper's P2 (eq. 21).

The rounds model is written once, :func:`rounds_model`; the q-step and k-step evaluate it
through it (``tests/planner/test_stability.py`` checks their fast forms against
:meth:`PlanProblem.objective`).

Every check that fails raises ``ValueError`` naming the client and the constraint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from fedsketch.checks import check_k, check_q
from fedsketch.network.profiles import COMPUTE_MODELS, ClientProfiles, sketch_times
from fedsketch.network.round_time import _emax_sorted, expected_bandwidth_time

FEASIBILITY = ("per_client", "p_weighted", "exact")
STABILITY = ("constrain", "scale_lr", "none")
#: default Phi_max (PAPER.md §8.1): the largest step-factor bucket ``kappa_max * Omega`` with no diverged
#: run in results/long/README.md, at the suites' lr 0.05
DEFAULT_MAX_STEP_FACTOR = 1.3


@overload
def rounds_model(theta: Theta, V: float, s: float = 1.0) -> float: ...
@overload
def rounds_model(theta: Theta, V: float | np.ndarray, s: float | np.ndarray = 1.0) -> float | np.ndarray: ...
def rounds_model(theta: Theta, V: float | np.ndarray, s: float | np.ndarray = 1.0) -> float | np.ndarray:
    """Predicted rounds ``R = (theta4 / s) / (theta1 - s V)`` with ``V = theta2 X + theta3 Y = sum_n c_n / q_n``.

    ``s = 1`` is eq. 21's ``theta4 / D``; ``s < 1`` is §8.2 (a learning rate ``eta0 * s``: theta4
    scales as 1/eta, theta2 and theta3 as eta). ``inf`` where ``theta1 - s V <= 0`` (target not
    reached). Works elementwise on arrays (the k-step scores all moves at once).
    """
    denom = theta.theta1 - s * np.asarray(V, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        R = np.where(denom > 0, theta.theta4 / (s * np.where(denom > 0, denom, 1.0)), np.inf)
    return float(R) if R.ndim == 0 else R


def step_size_factor(
    p: np.ndarray | Sequence[float], q: np.ndarray | Sequence[float], kappa: np.ndarray | Sequence[float]
) -> tuple[float, float, float]:
    """Theorem 1's step-size condition ``eta <= 1 / (32 L H beta kappa_max Omega)`` in its plan part.

    Returns ``(kappa_max * Omega, Omega, kappa_max)`` with ``Omega = sum_n p_n (1 - p_n) + p_n^2 / q_n``
    (PAPER.md §2.3) and ``kappa_max = max_n kappa_n`` (``kappa_n`` the LoRA scale a client trains at,
    ``r / k_n`` for the sketched methods). The largest stable learning rate shrinks in proportion to
    this product, so a plan that multiplies it by c needs about a c times smaller ``eta``; P2 itself
    (eq. 21) keeps ``eta`` fixed and does not see it.
    """
    p, q, kappa = (np.asarray(x, dtype=float) for x in (p, q, kappa))
    if p.shape != q.shape or p.shape != kappa.shape:
        raise ValueError(f"p, q and kappa need one entry per client, got shapes {p.shape}, {q.shape}, {kappa.shape}")
    check_q(q)
    omega = float(np.sum(p * (1 - p) + p**2 / q))
    return omega * float(kappa.max()), omega, float(kappa.max())


@dataclass(frozen=True)
class Theta:
    """The four lumped constants of the P2-ready bound (PAPER.md §2.3, eqs. 22–23).

    ``theta1 = eps - Z`` (target slack), ``theta2 = 8 L eta sigma^2``, ``theta3 = 16 L eta H zeta^2``,
    ``theta4 = 4 (F(X_0) - F*) / (eta H)``. Only their ratios matter (J, eq. 39 and every argmin
    are invariant to a common scale).
    """

    theta1: float
    theta2: float
    theta3: float
    theta4: float

    def __post_init__(self) -> None:
        vals = self.as_array()
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"theta must be finite, got {vals.tolist()}")
        if self.theta1 <= 0:
            raise ValueError(
                f"target never reachable: theta1={self.theta1!r} <= 0 makes D(q,k) = theta1 - sum_n c_n/q_n <= 0 "
                "for every q, k (eq. 21); re-estimate theta (fedsketch estimate) with a looser pilot_loss"
            )
        if self.theta4 <= 0:
            raise ValueError(f"theta4 must be > 0 (it is 4(F(X0)-F*)/(eta H)), got {self.theta4!r}")
        if self.theta2 < 0 or self.theta3 < 0:
            raise ValueError(f"theta2 and theta3 must be >= 0, got theta2={self.theta2!r}, theta3={self.theta3!r}")

    @classmethod
    def from_sequence(cls, values: Sequence[float] | np.ndarray) -> Theta:
        vals = [float(v) for v in values]
        if len(vals) != 4:
            raise ValueError(f"theta needs exactly 4 numbers (theta1..theta4), got {len(vals)}: {vals}")
        return cls(*vals)

    def as_array(self) -> np.ndarray:
        return np.array([self.theta1, self.theta2, self.theta3, self.theta4], dtype=float)


def normalise_weights(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Data weights ``p_n = |D_n| / sum_m |D_m|`` (accepts sizes or weights); every entry > 0."""
    p = np.asarray(p, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"data weights p must be a non-empty 1-D array, got shape {p.shape}")
    bad = np.flatnonzero(~np.isfinite(p) | (p <= 0))
    if bad.size:
        raise ValueError(f"data weight p_n must be > 0; client {int(bad[0])} has p={p[bad[0]]!r}")
    return p / p.sum()


@dataclass(frozen=True)
class PlanProblem:
    """One instance of P2 (eq. 21): profiles, weights, rank, bandwidth, theta and the constraint form.

    Parameters
    ----------
    profiles : ClientProfiles
        Full-rank times ``tau_cp`` (s), ``tau_cm`` (Mbit) and ``tau_0`` (s), shape (N,) each.
    p : array (N,)
        Data weights (or sizes; normalised to sum 1).
    r : int
        Global LoRA rank; ``k_n`` ranges over ``1..r``.
    W : float
        Total uplink bandwidth (Mbps), > 0.
    theta : Theta
        Constants of the bound.
    compute_model : {"linear", "affine"}
        Eq. 19 or the affine form of §2.6.
    feasibility : {"per_client", "p_weighted", "exact"}
        Appendix C constraint form.
    margin : float
        ``mu`` of eq. 39 (per-client forms) or ``delta / theta1`` (exact form).
    q_floor : float
        Lower clip on every ``q_n`` (variance control, spec §7.9).
    k_min : int
        Smallest rank the planner may choose (default 1). Set it to the smallest pilot rank so
        the fitted bound is not extrapolated below the ranks it was estimated on.
    """

    profiles: ClientProfiles
    p: np.ndarray
    r: int
    W: float
    theta: Theta
    compute_model: str = "linear"
    feasibility: str = "exact"
    margin: float = 1e-3
    q_floor: float = 0.0
    k_min: int = 1
    stability: str = "none"
    max_step_factor: float = DEFAULT_MAX_STEP_FACTOR

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", normalise_weights(self.p))
        if self.p.size != self.profiles.num_clients:
            raise ValueError(
                f"data weights p have {self.p.size} entries but the profiles have {self.profiles.num_clients} clients"
            )
        if not isinstance(self.r, (int, np.integer)) or self.r < 1:
            raise ValueError(f"rank r must be an integer >= 1, got {self.r!r}")
        if not np.isfinite(self.W) or self.W <= 0:
            raise ValueError(f"bandwidth W must be a finite number > 0, got {self.W!r}")
        if self.compute_model not in COMPUTE_MODELS:
            raise ValueError(f"compute_model must be one of {COMPUTE_MODELS}, got {self.compute_model!r}")
        if self.feasibility not in FEASIBILITY:
            raise ValueError(f"feasibility must be one of {FEASIBILITY}, got {self.feasibility!r}")
        if not (isinstance(self.k_min, (int, np.integer)) and 1 <= self.k_min <= self.r):
            raise ValueError(f"planner.k_min must be an integer in [1, r={self.r}], got {self.k_min!r}")
        if not (0 <= self.margin < 1):
            raise ValueError(f"margin must lie in [0, 1), got {self.margin!r}")
        if self.stability not in STABILITY:
            raise ValueError(f"planner.stability must be one of {STABILITY}, got {self.stability!r}")
        if not (np.isfinite(self.max_step_factor) and self.max_step_factor >= 1.0):
            raise ValueError(
                f"planner.max_step_factor must be a number >= 1 (kappa_max * Omega >= 1 for every plan, "
                f"PAPER.md §8.1), got {self.max_step_factor!r}"
            )
        if not (0 <= self.q_floor <= 1):
            raise ValueError(f"q_floor must lie in [0, 1], got {self.q_floor!r}")
        # the best reachable D is at q = 1, k = r; if even that is <= 0 the target is never reachable
        c_best = self.c(np.full(self.N, self.r))
        if c_best.sum() >= self.theta.theta1:
            n = int(np.argmax(c_best))
            raise ValueError(
                "target never reachable: D(q=1, k=r) = theta1 - sum_n c_n = "
                f"{self.theta.theta1 - c_best.sum():.4g} <= 0 "
                f"(eq. 21), so no q, k reach it; the largest term is client {n} (c_n={c_best[n]:.4g})"
            )

    # ------------------------------------------------------------------ basic quantities
    @property
    def N(self) -> int:
        return int(self.p.size)

    @property
    def delta(self) -> float:
        """Lower bound on D for the ``exact`` form (0 for the per-client forms, which imply D > 0)."""
        return self.margin * self.theta.theta1 if self.feasibility == "exact" else 0.0

    def check_k(self, k: np.ndarray | Sequence[int]) -> np.ndarray:
        """Validate integer ranks ``k_n in [1, r]``; the error names the client."""
        return check_k(k, self.r, self.N)

    def check_q(self, q: np.ndarray | Sequence[float]) -> np.ndarray:
        """Validate ``q_n in (0, 1]``; the error names the client."""
        return check_q(q, self.N)

    def times(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(t_cp(k), t_cm(k))``, eqs. 18–19, each shape (N,)."""
        return sketch_times(self.profiles, np.asarray(k, dtype=float), self.r, self.compute_model)

    def c(self, k: np.ndarray) -> np.ndarray:
        """``c_n(k_n) = p_n^2 (theta2 + theta3 r / k_n)``, shape (N,) (eq. 21)."""
        k = np.asarray(k, dtype=float)
        return self.p**2 * (self.theta.theta2 + self.theta.theta3 * self.r / k)

    def D(self, q: np.ndarray, k: np.ndarray) -> float:
        """``D(q,k) = theta1 - theta2 X(q) - theta3 Y(q,k)`` (eq. 21)."""
        return float(self.theta.theta1 - np.sum(self.c(k) / np.asarray(q, dtype=float)))

    def X(self, q: np.ndarray) -> float:
        """``X(q) = sum_n p_n^2 / q_n`` (Theorem 1)."""
        return float(np.sum(self.p**2 / np.asarray(q, dtype=float)))

    def Y(self, q: np.ndarray, k: np.ndarray) -> float:
        """``Y(q,k) = sum_n p_n^2 r / (k_n q_n)`` (Theorem 1)."""
        return float(np.sum(self.p**2 * self.r / (np.asarray(k, float) * np.asarray(q, float))))

    def rounds(self, q: np.ndarray, k: np.ndarray) -> float:
        """Predicted rounds (:func:`rounds_model`: ``theta4 / D`` of eq. 21, or §8.2 under ``scale_lr``);
        inf if unreachable."""
        q = np.asarray(q, dtype=float)
        return rounds_model(self.theta, float(np.sum(self.c(k) / q)), self.lr_scale(q, k))

    # ------------------------------------------------------------------ stability (§8)
    @property
    def sum_p1mp(self) -> float:
        """``sum_n p_n (1 - p_n)``, the q-independent part of Omega."""
        return float(np.sum(self.p * (1 - self.p)))

    def omega(self, q: np.ndarray) -> float:
        """``Omega(q) = sum_n p_n (1 - p_n) + p_n^2 / q_n`` (Theorem 1, PAPER.md §2.3)."""
        return self.sum_p1mp + self.X(q)

    def kappa_max(self, k: np.ndarray) -> float:
        """``kappa_max = max_n r / k_n`` (the largest LoRA scale a client trains at)."""
        return self.r / float(np.min(k))

    def step_factor(self, q: np.ndarray, k: np.ndarray) -> float:
        """``Phi(q, k) = kappa_max(k) Omega(q)`` (§8), >= 1."""
        return self.kappa_max(k) * self.omega(q)

    def lr_scale(self, q: np.ndarray, k: np.ndarray) -> float:
        """``s = min(1, Phi_max / Phi(q, k))`` under ``scale_lr`` (§8.2), else 1."""
        if self.stability != "scale_lr":
            return 1.0
        return min(1.0, self.max_step_factor / self.step_factor(q, k))

    def x_max(self, k: np.ndarray) -> float:
        """Largest ``X(q)`` allowed by the ``constrain`` form at ranks k:
        ``Phi_max / kappa_max(k) - sum p(1-p)`` (§8.1)."""
        return self.max_step_factor / self.kappa_max(k) - self.sum_p1mp

    @property
    def k_stable(self) -> int:
        """Smallest rank the ``constrain`` form allows: ``r / k <= Phi_max`` (Omega >= 1), else ``k_min``."""
        if self.stability != "constrain":
            return self.k_min
        return max(self.k_min, int(np.ceil(self.r / self.max_step_factor - 1e-9)))

    def stability_report(self, q: np.ndarray, k: np.ndarray) -> dict:
        """What §8.3 asks every plan to report: Phi, s, whether Phi_max binds, and the form."""
        phi = self.step_factor(q, k)
        s = self.lr_scale(q, k)
        if self.stability == "constrain":
            binding = bool(phi >= self.max_step_factor * (1 - 1e-6))
        elif self.stability == "scale_lr":
            binding = bool(s < 1.0)
        else:
            binding = False
        return {
            "stability": self.stability,
            "step_factor": phi,
            "max_step_factor": self.max_step_factor,
            "lr_scale": s,
            "binding": binding,
            "omega": self.omega(q),
            "kappa_max": self.kappa_max(k),
        }

    def round_time(self, q: np.ndarray, k: np.ndarray) -> float:
        """Theorem 2 bound ``T_hat(q,k) = E[t_max^cp] + sum_n q_n t_n^cm / W`` (eqs. 20, 24)."""
        t_cp, t_cm = self.times(k)
        q = np.asarray(q, dtype=float)
        order = np.argsort(t_cp)
        return _emax_sorted(q[order], t_cp[order]) + float(np.einsum("i,i->", q, t_cm)) / self.W

    def round_time_approx(self, q: np.ndarray, k: np.ndarray) -> float:
        """Eq. 11 expected-bandwidth estimate of ``E[T]``: close when every ``q_n`` is large (spec §5), high
        when ``q`` is small (its root exceeds every sampled client's compute time;
        :func:`fedsketch.planner.api.sampled_round_time` gives ``E[T]`` itself)."""
        t_cp, t_cm = self.times(k)
        return expected_bandwidth_time(q, t_cp, t_cm, self.W)

    def objective(self, q: np.ndarray, k: np.ndarray) -> float:
        """The P2 objective ``J(q,k) = R(q,k) * T_hat(q,k)`` (eq. 21; R from :func:`rounds_model`, §8.2 under
        ``scale_lr``); inf when the target is not reached. The one definition every solver is checked against."""
        r = self.rounds(q, k)
        return r * self.round_time(q, k) if np.isfinite(r) else np.inf

    # ------------------------------------------------------------------ Appendix C
    def q_min(self, k: np.ndarray) -> np.ndarray:
        """Per-client lower bound on ``q_n`` from the chosen Appendix C form (eqs. 38–39), shape (N,).

        For ``exact`` this is the necessary condition ``c_n / q_n < theta1 - delta``; the joint
        constraint ``D >= delta`` is checked separately (:meth:`violations`).
        """
        return self.q_min_from_c(self.c(k))

    def q_min_from_c(self, c: np.ndarray, p: np.ndarray | None = None) -> np.ndarray:
        """:meth:`q_min` from given ``c_n`` (``p``: the matching data weights, default all clients)."""
        t1, mu = self.theta.theta1, self.margin
        if self.feasibility == "per_client":
            return (1 + mu) * self.N * c / t1
        if self.feasibility == "p_weighted":
            return (1 + mu) * c / ((self.p if p is None else p) * t1)
        return c / (t1 - self.delta)

    def q_lower(self, k: np.ndarray) -> np.ndarray:
        """Box lower bound ``max(q_min(k), q_floor)``, shape (N,)."""
        return np.maximum(self.q_min(k), self.q_floor)

    def require_box(self, k: np.ndarray) -> np.ndarray:
        """``q_lower(k)``, raising ``ValueError`` naming the first client whose bound exceeds 1."""
        lb = self.q_lower(k)
        bad = np.flatnonzero(lb > 1)
        if bad.size:
            n = int(bad[np.argmax(lb[bad])])
            raise ValueError(
                f"client {n}: the Appendix C constraint ({self.feasibility}, eq. 39) needs q_n >= {lb[n]:.4g} > 1 at "
                f"k_n={int(np.asarray(k)[n])} (p_n={self.p[n]:.4g}); {bad.size} client(s) infeasible. "
                "Use planner.feasibility='exact' (or 'p_weighted'), or re-estimate theta"
            )
        return lb

    def violations(self, q: np.ndarray, k: np.ndarray, rtol: float = 1e-9) -> list[str]:
        """Every constraint of P2 that ``(q, k)`` violates, as messages naming the client (empty if feasible)."""
        out: list[str] = []
        try:
            k = self.check_k(k)
            q = self.check_q(q)
        except ValueError as e:
            return [str(e)]
        for n in np.flatnonzero(k < self.k_min)[:10]:
            out.append(
                f"client {int(n)}: k_n={int(k[n])} < planner.k_min={self.k_min} (the rank floor: the pilots' region)"
            )
        lb = self.q_lower(k)
        bad = np.flatnonzero(q < lb * (1 - rtol))
        for n in bad[:10]:
            out.append(f"client {int(n)}: q_n={q[n]:.6g} < q_min={lb[n]:.6g} ({self.feasibility} constraint / q_floor)")
        if self.feasibility == "exact":
            d = self.D(q, k)
            if d < self.delta * (1 - rtol):
                out.append(f"D(q,k)={d:.6g} < delta={self.delta:.6g} (exact constraint, eq. 36)")
        if self.stability == "constrain":
            phi = self.step_factor(q, k)
            if phi > self.max_step_factor * (1 + rtol):
                out.append(
                    f"step factor kappa_max * Omega = {phi:.6g} > planner.max_step_factor = {self.max_step_factor:g} "
                    "(stability = 'constrain', PAPER.md §8.1)"
                )
        if self.stability != "none" and not np.isfinite(self.rounds(q, k)):
            out.append("the target is not reached at this (q, k): theta1 - s (theta2 X + theta3 Y) <= 0")
        return out

    def feasible_k_start(self, k0: np.ndarray) -> np.ndarray:
        """Smallest ranks ``>= k0`` for which the box ``q_lower(k) <= 1`` is non-empty (raises if none)."""
        k = np.clip(np.asarray(k0, dtype=np.int64), self.k_stable, self.r)
        self.require_box(np.full(self.N, self.r))
        for _ in range(self.r):
            bad = self.q_lower(k) > 1
            if not bad.any():
                break
            k[bad] += 1
        if self.feasibility == "exact" and self.D(np.ones(self.N), k) < self.delta:
            k = np.full(self.N, self.r, dtype=np.int64)
        return k

    def require_reachable(self) -> None:
        """Raise if even ``q = 1, k = r`` violates the chosen constraint (names the worst client)."""
        k = np.full(self.N, self.r, dtype=np.int64)
        self.require_box(k)
        if self.feasibility == "exact" and self.D(np.ones(self.N), k) < self.delta:
            c = self.c(k)
            n = int(np.argmax(c))
            raise ValueError(
                f"exact constraint D(q,k) >= delta={self.delta:.4g} (eq. 36) fails even at q=1, k=r "
                f"(D={self.D(np.ones(self.N), k):.4g}); the largest term is client {n}"
            )
