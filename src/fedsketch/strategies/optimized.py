"""The proposed allocation: q and/or k from the planner (Algorithm 2).

- ``fl.sampling = fl.ranks = "optimized"``: the joint alternating solution (Table I, *Proposed*).
- Only ``fl.sampling = "optimized"``: the q-step (eq. 26) for the ranks the rank policy gives
  (Fig. 2: optimised sampling at k = r).
- Only ``fl.ranks = "optimized"``: the greedy k-step for the q the sampling policy gives
  (Fig. 3: optimised ranks at q = 0.5).
The constants theta come from ``planner.theta`` or ``planner.theta_file`` (``fedsketch estimate``).
``planner.stability`` (PAPER.md §8) applies to all three; under ``scale_lr`` the allocation carries
``lr_scale`` s and the run trains every client at ``train.lr * s`` (``runner.build.client_lr``: each
round's plan carries the rate to every client; ``runner.build.prepare`` records it as ``train_lr``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedsketch.strategies.base import Allocation, Federation


def planned_allocation(
    fed: Federation, q_fixed: np.ndarray | None = None, k_fixed: np.ndarray | None = None
) -> Allocation:
    """Solve P2 (eq. 21) for this federation's p and profiles, holding ``q`` or ``k`` fixed if given."""
    from fedsketch.planner.api import BASELINE_STREAM, build_problem, plan_problem
    from fedsketch.planner.kstep import k_step
    from fedsketch.planner.qstep import q_step

    pl = fed.planner
    prob = build_problem(pl, fed.profiles, fed.p, fed.r, fed.bandwidth_mbps, fed.compute_model)
    if q_fixed is None and k_fixed is None:
        plan = plan_problem(prob, pl, fed.streams.generator(BASELINE_STREAM))[0]
        q, k = plan.q, plan.k
    else:
        prob.require_reachable()
        if k_fixed is not None:
            k = np.asarray(k_fixed, dtype=np.int64)
            q = q_step(prob, k, solver=pl.q_solver).q
        else:
            q = np.asarray(q_fixed, dtype=float)
            k = k_step(prob, q, np.full(fed.num_clients, fed.r, dtype=np.int64), moves=pl.k_moves).k
        # k_min bounds the ranks the planner picks; a rank policy's fixed k may lie below it
        bad = (prob if k_fixed is None else dataclasses.replace(prob, k_min=min(prob.k_min, int(k.min())))).violations(
            q, k
        )
        if bad:
            raise ValueError(f"planner: with the fixed part the plan is infeasible: {bad[:3]}")
    rounds, rt = prob.rounds(q, k), prob.round_time(q, k)
    stab = prob.stability_report(q, k)  # PAPER.md §8.3; lr_scale s is applied by the run (train.lr * s)
    return Allocation(
        q=q,
        k=k,
        info={
            "planned_rounds": rounds,
            "planned_round_time": rt,
            "planned_total_time": rounds * rt,
            "stability": stab["stability"],
            "step_factor": stab["step_factor"],
            "max_step_factor": stab["max_step_factor"],
            "stability_binding": stab["binding"],
            "lr_scale": stab["lr_scale"],
        },
    )
