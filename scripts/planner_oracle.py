"""Record the planner's answers on fixed synthetic instances (the oracle of tests/planner/test_scale.py).

Written once with the solver as it was before the internet-scale rewrite (issue 13 point 4,
commit 5894788) so that later solvers are checked against it: ``J`` of the whole Algorithm 2
(``solve``), of the fast q-step at ``k = r`` and of one k-step from that q, for N = 50, 500,
5000, three seeds, three feasibility forms and both compute models. Instances are those of
``tests/planner/planner_helpers.synthetic_problem`` (PAPER.md §5 "Alternating Algorithm 2").

Second suite, ``--suite stability`` (issue 13 point 4, written at commit c139507 before the
stability-aware solver was made linear in N): for every ``planner.stability`` form (PAPER.md §8:
``none``, ``constrain`` with Phi_max = 1.3, ``scale_lr``) and N = 10, 50, 500, 5000, seeded
instances as above, the whole Algorithm 2 (``solve``): J, the plan's (q, k) (N <= 500; summary
statistics at N = 5000), Phi = kappa_max Omega, s and the rounds and round time.

Usage: PYTHONPATH=src python scripts/planner_oracle.py [--out tests/planner/data/solver_oracle.json]
       PYTHONPATH=src python scripts/planner_oracle.py --suite stability
           [--out tests/planner/data/solver_oracle_stability.json]
       PYTHONPATH=src python scripts/planner_oracle.py --compare tests/planner/data/solver_oracle_stability.json
           [--multistart-max-n 1000]   (this commit's J against the recorded one, every case)
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
from fedsketch.planner.qstep_fast import q_step_fast  # noqa: E402
from fedsketch.planner.solve import solve  # noqa: E402

CASES = [  # (N, seed, feasibility, compute_model)
    *[(n, s, f, "linear") for n in (50, 500) for s in (0, 1, 2) for f in ("exact", "per_client", "p_weighted")],
    *[(n, s, "exact", "affine") for n in (50, 500) for s in (0, 1)],
    (5000, 0, "exact", "linear"), (5000, 1, "exact", "linear"), (5000, 0, "p_weighted", "linear"),
    (5000, 0, "exact", "affine"),
]


#: the stability suite: (N, seed, stability, compute_model)
STABILITY_CASES = [
    *[(n, s, st, "linear") for n in (10, 50, 500) for s in (0, 1, 2) for st in ("none", "constrain", "scale_lr")],
    *[(n, 0, st, "affine") for n in (50, 500) for st in ("none", "constrain", "scale_lr")],
    *[(5000, s, st, "linear") for s in (0, 1) for st in ("none", "constrain", "scale_lr")],
    *[(5000, 0, st, "affine") for st in ("none", "constrain", "scale_lr")],
]


def stability_problem(n: int, seed: int, stability: str, compute_model: str):
    """The instance of the stability suite (``planner_helpers.synthetic_problem``, feasibility 'exact',
    base fraction 0.3) with ``planner.stability`` set and the default ``max_step_factor`` (1.3)."""
    import dataclasses

    prob = synthetic_problem(n, seed, feasibility="exact", compute_model=compute_model, base_fraction=0.3)
    return dataclasses.replace(prob, stability=stability)


def _summary(x: np.ndarray) -> dict:
    return {"sum": float(np.sum(x)), "min": float(np.min(x)), "max": float(np.max(x)),
            "mean": float(np.mean(x)), "quantiles_10_50_90": [float(v) for v in np.quantile(x, [0.1, 0.5, 0.9])]}


def stability_suite(commit: str) -> dict:
    rows = []
    for n, seed, st, model in STABILITY_CASES:
        prob = stability_problem(n, seed, st, model)
        t0, c0 = time.perf_counter(), time.process_time()
        plan = solve(prob)
        row = {"N": n, "seed": seed, "stability": st, "compute_model": model, "J": float(plan.objective),
               "rounds": float(plan.rounds), "round_time": float(plan.round_time),
               "step_factor": float(prob.step_factor(plan.q, plan.k)), "lr_scale": float(prob.lr_scale(plan.q, plan.k)),
               "violations": prob.violations(plan.q, plan.k),
               "wall_seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
        if n <= 500:
            row["q"] = [float(v) for v in plan.q]
            row["k"] = [int(v) for v in plan.k]
        else:
            row["q_summary"], row["k_summary"] = _summary(plan.q), _summary(plan.k.astype(float))
        rows.append(row)
        print({kk: v for kk, v in row.items() if kk not in ("q", "k")}, flush=True)
    return {"about": "Whole-Algorithm-2 plans of the solver at this commit for each planner.stability form "
                     "(scripts/planner_oracle.py --suite stability; oracle of tests/planner/test_scale_stability.py).",
            "commit": commit, "max_step_factor": 1.3,
            "instances": "dataclasses.replace(synthetic_problem(N, seed, feasibility='exact', compute_model=..., "
                         "base_fraction=0.3), stability=...)", "cases": rows}


def compare(path: Path, multistart_max_n: int | None) -> None:
    """Print (J_now - J_recorded) / J_recorded for every case of a recorded stability suite."""
    rec = json.loads(path.read_text())
    kw = {} if multistart_max_n is None else {"multistart_max_n": multistart_max_n}
    worst = -np.inf
    for c in rec["cases"]:
        prob = stability_problem(c["N"], c["seed"], c["stability"], c["compute_model"])
        c0 = time.process_time()
        plan = solve(prob, **kw)
        rel = plan.objective / c["J"] - 1
        worst = max(worst, rel)
        print(f"N={c['N']} seed={c['seed']} {c['stability']} {c['compute_model']}: J {c['J']:.6f} -> {plan.objective:.6f} "
              f"({rel:+.2e}), CPU {c['cpu_seconds']:.2f} -> {time.process_time() - c0:.2f} s, "
              f"violations {prob.violations(plan.q, plan.k)}", flush=True)
    print(f"largest relative increase of J: {worst:+.2e} (recorded at commit {rec['commit'][:7]})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=("solver", "stability"), default="solver")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--compare", type=Path, default=None, help="recorded stability suite to compare against")
    ap.add_argument("--multistart-max-n", type=int, default=None, help="with --compare: solve(multistart_max_n=...)")
    a = ap.parse_args()
    if a.compare is not None:
        compare(a.compare, a.multistart_max_n)
        return
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if a.suite == "stability":
        out = a.out or Path("tests/planner/data/solver_oracle_stability.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        data = stability_suite(commit)
        cases = data.pop("cases")
        head = json.dumps(data, indent=1)[:-2]  # one case per line keeps the file diffable
        out.write_text(head + ',\n "cases": [\n' + ",\n".join(json.dumps(c) for c in cases) + "\n ]\n}\n")
        return
    a.out = a.out or Path("tests/planner/data/solver_oracle.json")
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
