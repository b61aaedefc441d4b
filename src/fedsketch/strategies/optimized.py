"""The proposed allocation: q and k from the planner (Algorithm 2)."""

from __future__ import annotations

from fedsketch.strategies.base import Allocation, Federation


def planned_allocation(fed: Federation) -> Allocation:
    """Solve P2 (eq. 21) for this federation's p and profiles with the configured theta."""
    from fedsketch.planner.solve import plan_for_federation  # numpy-only planner

    plan = plan_for_federation(fed)
    return Allocation(q=plan.q, k=plan.k, info={"planned_rounds": plan.rounds,
                                                "planned_round_time": plan.round_time,
                                                "planned_total_time": plan.total_time})
