"""The q-step of Algorithm 2: minimise ``J(q, k)`` over ``q`` with the ranks ``k`` fixed (PAPER.md §2.9, §7.2).

Two solvers of the same problem (:class:`fedsketch.planner.qstep_problem.FixedK`), chosen by
``planner.q_solver``:

- ``"fast"``: :func:`fedsketch.planner.qstep_fast.q_step_fast`, L-BFGS on ``log(theta4 / D(q)) + log T_hat(q)``
  over the Appendix C box (§7.2), with the stability forms of §8;
- ``"reference"``: :func:`fedsketch.planner.qstep_reference.q_step_reference`, the spec's rebuilt P3 (eq. 26)
  by a line search over ``T_bar``, sequential convex approximation and cvxpy (§2.9).

Both return the better of their solution and the warm start, so the alternating loop never gets worse;
solver failures raise :class:`fedsketch.planner.qstep_problem.SolverError` carrying the solver status.
"""

from __future__ import annotations

import numpy as np

from fedsketch.planner.bound import PlanProblem
from fedsketch.planner.qstep_fast import q_step_fast
from fedsketch.planner.qstep_problem import QStepResult
from fedsketch.planner.qstep_reference import q_step_reference


def q_step(
    prob: PlanProblem, k: np.ndarray, q0: np.ndarray | None = None, solver: str = "fast", **kwargs
) -> QStepResult:
    """Dispatch to :func:`q_step_fast` (``solver="fast"``) or :func:`q_step_reference` (``"reference"``)."""
    if solver == "fast":
        return q_step_fast(prob, k, q0, **kwargs)
    if solver == "reference":
        return q_step_reference(prob, k, q0, **kwargs)
    raise ValueError(f"q_solver must be 'fast' or 'reference', got {solver!r}")
