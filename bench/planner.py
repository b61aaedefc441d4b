"""Planner benchmark: reference vs fast q-step, and the whole Algorithm 2, for N = 50 ... 1,000,000.

Synthetic instance of PAPER.md §5 "Alternating Algorithm 2": r = 16, data sizes
lognormal(0, 0.5), tau_cp ~ U(2, 20) s, tau_cm ~ U(20, 400) Mbit, W = 100 Mbps,
theta = (1, 0.5, 0.5, 100), feasibility 'exact' (the default) unless --feasibility is given.

Two tables:
1. q-step at k = r: the reference (geometric grid + golden section over T_bar, SCA, cvxpy
   Clarabel -> SCS) against the fast solver (preconditioned projected L-BFGS on log J), time
   ratio and the objective gap (fast - reference) / reference. The reference is not started
   where its estimated memory (cvxpy's canonicalisation of the N-vector P3 grows as ~16 N^2
   bytes: it tried to allocate 37 GiB at N = 50,000) exceeds --ref-mem-cap GiB, and is
   aborted past --ref-cap seconds; both are reported.
2. Whole Algorithm 2, side by side in one run: the default solver (best-response start +
   exact polish, multi-start only up to planner.multistart_max_n) against the multi-start
   alternation alone (the pre-issue-13 algorithm, on the same kernels) up to --multistart-max-n,
   with wall and CPU time (the CPU is shared: CPU time is the steadier number), J, and the
   ratios. The reference q-step runs inside Algorithm 2 for N <= --ref-full-max-n.

Usage: python bench/planner.py [--sizes 50 500 5000 50000 1000000] [--ref-cap 300] [--ref-mem-cap 4]
                               [--ref-full-max-n 50] [--multistart-max-n 50000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
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


def instance(n: int, seed: int, feasibility: str, stability: str = "none") -> PlanProblem:
    rng = np.random.default_rng(seed)
    p = rng.lognormal(0.0, 0.5, n)
    prof = ClientProfiles(rng.uniform(2, 20, n), rng.uniform(20, 400, n), np.zeros(n))
    return PlanProblem(prof, p, R, W, THETA, feasibility=feasibility, stability=stability)


def reference_memory_gib(n: int) -> float:
    """Estimated peak memory of the cvxpy reference q-step at N clients (~16 N^2 bytes, from the
    37 GiB allocation it attempted at N = 50,000)."""
    return 16.0 * n * n / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 500, 5000, 50000, 1000000])
    ap.add_argument("--ref-cap", type=float, default=300.0, help="time cap (s) of one reference q-step")
    ap.add_argument("--ref-mem-cap", type=float, default=4.0,
                    help="do not start the reference q-step when its estimated memory exceeds this (GiB)")
    ap.add_argument("--multistart-max-n", type=int, default=50000,
                    help="run the multi-start-only comparison up to this N")
    ap.add_argument("--ref-full-max-n", type=int, default=50, help="run the reference Algorithm 2 up to this N")
    ap.add_argument("--feasibility", default="exact", choices=("per_client", "p_weighted", "exact"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stability", default="none", choices=("none", "constrain", "scale_lr"),
                    help="planner.stability of the instances (PAPER.md §8; max_step_factor 1.3)")
    ap.add_argument("--skip-qstep", action="store_true", help="only the whole-Algorithm-2 table")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the fast timings (best is reported)")
    a = ap.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"feasibility={a.feasibility}, stability={a.stability}, r={R}, W={W:g}, theta={THETA.as_array().tolist()}, seed={a.seed}")
    print(f"reference q-step caps: {a.ref_cap:g} s, estimated memory {a.ref_mem_cap:g} GiB (~16 N^2 bytes)")
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs\n")
    sizes_q = [] if a.skip_qstep else a.sizes
    print("## q-step at k = r\n")
    print("| N | reference [s] | fast [s] | ref/fast | J reference | J fast | gap (fast-ref)/ref |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes_q:
        prob = instance(n, a.seed, a.feasibility, a.stability)
        k = np.full(n, R)
        tf, fast = np.inf, None
        for _ in range(a.reps):
            t0 = time.perf_counter()
            fast = q_step_fast(prob, k)
            tf = min(tf, time.perf_counter() - t0)
        mem = reference_memory_gib(n)
        if mem > a.ref_mem_cap:
            print(f"| {n} | not started (estimated {mem:.3g} GiB > --ref-mem-cap {a.ref_mem_cap:g}) | {tf:.4f} | - | - | "
                  f"{fast.objective:.4f} | - |")
            continue
        t0 = time.perf_counter()
        try:
            ref = q_step_reference(prob, k, time_limit=a.ref_cap)
            tr = time.perf_counter() - t0
            gap = (fast.objective - ref.objective) / ref.objective
            print(f"| {n} | {tr:.3f} | {tf:.4f} | {tr / tf:.0f}x | {ref.objective:.4f} | {fast.objective:.4f} | {100 * gap:+.4f} % |")
        except SolverError as e:
            print(f"| {n} | skipped ({e.status} > {a.ref_cap:g} s) | {tf:.4f} | - | - | {fast.objective:.4f} | - |")
    print("\n## whole Algorithm 2 (+-1 k-moves; multi-start k0 = r, r/2, r/4)\n")
    print("default = best-response start + exact polish (+ the multi-start up to N = 20,000); multi-start = the "
          "alternation from k0 = r, r/2, r/4 alone (the pre-issue-13 algorithm). Ratios are multi-start / default.\n")
    print("| N | solver | wall [s] | CPU [s] | J | rounds | round time [s] | mean k | E|K| | J ratio | CPU ratio | load |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in a.sizes:
        prob = instance(n, a.seed, a.feasibility, a.stability)
        rows = [("default", "fast", {})]
        if n <= a.multistart_max_n:
            rows.append(("multi-start", "fast", {"best_response": False}))
        if n <= a.ref_full_max_n and a.stability != "scale_lr":
            rows.append(("default, reference q-step", "reference", {}))
        base = None
        for name, solver, kw in rows:
            best = (np.inf, np.inf, None)
            for _ in range(a.reps if solver == "fast" and n < 10**6 else 1):
                t0, c0 = time.perf_counter(), time.process_time()
                plan = solve(prob, q_solver=solver, **kw)
                best = min(best, (time.process_time() - c0, time.perf_counter() - t0, plan), key=lambda x: x[0])
            cpu, wall, plan = best
            ratio = "" if base is None else f"{plan.objective / base[0]:.4f} | {cpu / base[1]:.1f}x"
            if base is None:
                base = (plan.objective, cpu)
                ratio = "1 | 1"
            print(f"| {n} | {name} | {wall:.3f} | {cpu:.3f} | {plan.objective:.2f} | {plan.rounds:.1f} | "
                  f"{plan.round_time:.2f} | {plan.k.mean():.2f} | {plan.q.sum():.2f} | {ratio} | "
                  f"{os.getloadavg()[0]:.2f} |", flush=True)
        if n > a.multistart_max_n:
            print(f"| {n} | multi-start | skipped (N > --multistart-max-n={a.multistart_max_n}) | | | | | | | | | |")


if __name__ == "__main__":
    main()
