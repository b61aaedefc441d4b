"""Record the planner's answers on fixed synthetic instances (the oracle of tests/planner/test_scale.py).

Written once with the solver as it was before the internet-scale rewrite (issue 13 point 4,
commit 5894788) so that later solvers are checked against it: ``J`` of the whole Algorithm 2
(``solve``), of the fast q-step at ``k = r`` and of one k-step from that q, for N = 50, 500,
5000, three seeds, three feasibility forms and both compute models. Instances are those of
``tests/planner/planner_helpers.synthetic_problem`` (PAPER.md §5 "Alternating Algorithm 2").

Usage: PYTHONPATH=src python scripts/planner_oracle.py [--out tests/planner/data/solver_oracle.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "planner"))
from planner_helpers import synthetic_problem  # noqa: E402

from fedsketch.planner.kstep import k_step  # noqa: E402
from fedsketch.planner.qstep import q_step_fast  # noqa: E402
from fedsketch.planner.solve import solve  # noqa: E402

CASES = [  # (N, seed, feasibility, compute_model)
    *[(n, s, f, "linear") for n in (50, 500) for s in (0, 1, 2) for f in ("exact", "per_client", "p_weighted")],
    *[(n, s, "exact", "affine") for n in (50, 500) for s in (0, 1)],
    (5000, 0, "exact", "linear"), (5000, 1, "exact", "linear"), (5000, 0, "p_weighted", "linear"),
    (5000, 0, "exact", "affine"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("tests/planner/data/solver_oracle.json"))
    a = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = []
    for n, seed, feas, model in CASES:
        prob = synthetic_problem(n, seed, feasibility=feas, compute_model=model, base_fraction=0.3)
        k = np.full(n, prob.r)
        t0 = time.perf_counter()
        qs = q_step_fast(prob, k)
        ks = k_step(prob, qs.q, k)
        plan = solve(prob)
        rows.append({"N": n, "seed": seed, "feasibility": feas, "compute_model": model,
                     "J_solve": plan.objective, "J_qstep_full_rank": qs.objective, "J_kstep_from_qstep": ks.objective,
                     "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    args = "synthetic_problem(N, seed, feasibility=..., compute_model=..., base_fraction=0.3)"
    data = {"about": __doc__.split("\n\n")[0], "commit": commit, "instances": args, "cases": rows}
    args_path = a.out
    args_path.parent.mkdir(parents=True, exist_ok=True)
    args_path.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
