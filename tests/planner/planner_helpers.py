"""Shared synthetic instances for the planner tests (spec §5 "Alternating Algorithm 2")."""

from __future__ import annotations

import numpy as np

from fedsketch.network import ClientProfiles
from fedsketch.planner.bound import PlanProblem, Theta

THETA = Theta(1.0, 0.5, 0.5, 100.0)


def synthetic_problem(n: int, seed: int = 0, *, r: int = 16, feasibility: str = "exact", theta: Theta = THETA,
                      compute_model: str = "linear", base_fraction: float = 0.0, W: float = 100.0) -> PlanProblem:
    rng = np.random.default_rng(seed)
    p = rng.lognormal(0.0, 0.5, n)
    tau_cp = rng.uniform(2, 20, n)
    prof = ClientProfiles(tau_cp, rng.uniform(20, 400, n), base_fraction * tau_cp)
    return PlanProblem(prof, p, r, W, theta, compute_model=compute_model, feasibility=feasibility)
