"""Planner benchmark: reference vs fast q-step, and the whole Algorithm 2, for N = 50, 500, 5000.

Synthetic instance of PAPER.md §5 "Alternating Algorithm 2": r = 16, data sizes
lognormal(0, 0.5), tau_cp ~ U(2, 20) s, tau_cm ~ U(20, 400) Mbit, W = 100 Mbps,
theta = (1, 0.5, 0.5, 100), feasibility 'exact' (the default) unless --feasibility is given.

Two tables:
1. q-step at k = r: the reference (geometric grid + golden section over T_bar, SCA, cvxpy
   Clarabel -> SCS) against the fast solver (projected L-BFGS on log J), time ratio and the
   objective gap (fast - reference) / reference. The reference is skipped (reported) where it
   exceeds --ref-cap seconds.
2. Whole Algorithm 2 (multi-start alternating q/k) with the fast q-step at every N, and with
   the reference q-step for N <= --ref-full-max-n.

Usage: python bench/planner.py [--sizes 50 500 5000] [--ref-cap 300] [--ref-full-max-n 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from fedsketch.network import ClientProfiles
from fedsketch.planner.bound import PlanProblem, Theta
from fedsketch.planner.qstep import SolverError, q_step_fast, q_step_reference
from fedsketch.planner.solve import solve

R = 16
W = 100.0
THETA = Theta(1.0, 0.5, 0.5, 100.0)


def instance(n: int, seed: int, feasibility: str) -> PlanProblem:
    rng = np.random.default_rng(seed)
    p = rng.lognormal(0.0, 0.5, n)
    prof = ClientProfiles(rng.uniform(2, 20, n), rng.uniform(20, 400, n), np.zeros(n))
    return PlanProblem(prof, p, R, W, THETA, feasibility=feasibility)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 500, 5000])
    ap.add_argument("--ref-cap", type=float, default=300.0, help="time cap (s) of one reference q-step")
    ap.add_argument("--ref-full-max-n", type=int, default=50, help="run the reference Algorithm 2 up to this N")
    ap.add_argument("--feasibility", default="exact", choices=("per_client", "p_weighted", "exact"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the fast timings (best is reported)")
    a = ap.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"feasibility={a.feasibility}, r={R}, W={W:g}, theta={THETA.as_array().tolist()}, seed={a.seed}")
    print(f"reference q-step time cap: {a.ref_cap:g} s\n")
    print("## q-step at k = r\n")
    print("| N | reference [s] | fast [s] | ref/fast | J reference | J fast | gap (fast-ref)/ref |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in a.sizes:
        prob = instance(n, a.seed, a.feasibility)
        k = np.full(n, R)
        tf, fast = np.inf, None
        for _ in range(a.reps):
            t0 = time.perf_counter()
            fast = q_step_fast(prob, k)
            tf = min(tf, time.perf_counter() - t0)
        t0 = time.perf_counter()
        try:
            ref = q_step_reference(prob, k, time_limit=a.ref_cap)
            tr = time.perf_counter() - t0
            gap = (fast.objective - ref.objective) / ref.objective
            print(f"| {n} | {tr:.3f} | {tf:.4f} | {tr / tf:.0f}x | {ref.objective:.4f} | {fast.objective:.4f} | {100 * gap:+.4f} % |")
        except SolverError as e:
            print(f"| {n} | skipped ({e.status} > {a.ref_cap:g} s) | {tf:.4f} | - | - | {fast.objective:.4f} | - |")
    print("\n## whole Algorithm 2 (3 starts k0 = r, r/2, r/4; +-1 k-moves)\n")
    print("| N | solver | time [s] | J | rounds | round time [s] | mean k | E|K| |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in a.sizes:
        prob = instance(n, a.seed, a.feasibility)
        rows = [("fast", {})]
        if n <= a.ref_full_max_n:
            rows.append(("reference", {}))
        for name, kw in rows:
            best_t, plan = np.inf, None
            for _ in range(a.reps if name == "fast" else 1):
                t0 = time.perf_counter()
                plan = solve(prob, q_solver=name, q_kwargs=kw)
                best_t = min(best_t, time.perf_counter() - t0)
            print(f"| {n} | {name} | {best_t:.3f} | {plan.objective:.2f} | {plan.rounds:.1f} | {plan.round_time:.2f} | "
                  f"{plan.k.mean():.2f} | {plan.q.sum():.2f} |")
        if n > a.ref_full_max_n:
            print(f"| {n} | reference | skipped (N > --ref-full-max-n={a.ref_full_max_n}) | | | | | |")


if __name__ == "__main__":
    main()
