"""Planner benchmark: reference vs fast q-step, and the whole Algorithm 2, for N = 50 ... 1,000,000.

Synthetic instance of PAPER.md §5 "Alternating Algorithm 2": r = 16, data sizes
lognormal(0, 0.5), tau_cp ~ U(2, 20) s, tau_cm ~ U(20, 400) Mbit, W = 100 Mbps,
theta = (1, 0.5, 0.5, 100), feasibility 'exact' (the default) unless --feasibility is given.

Two tables:
1. q-step at k = r: the reference (geometric grid + golden section over T_bar, SCA, cvxpy
   Clarabel -> SCS) against the fast solver (preconditioned projected L-BFGS on log J), time
   ratio and the objective gap (fast - reference) / reference. The reference is not started
   where it cannot finish: its size and time are estimated up front (cvxpy's canonicalisation
   of the N-vector P3 grows as ~16 N^2 bytes: it tried to allocate 37 GiB at N = 50,000; its
   time as ~2 s (N / 50)^0.95, measured at N = 50 and 500) and a row whose estimate exceeds
   --ref-mem-cap GiB or --ref-cap seconds prints the reason instead; a started one is still
   aborted past --ref-cap seconds.
2. Whole Algorithm 2, side by side in one run: the default solver (above
   planner.multistart_max_n = 20,000 clients the large-N path: a systematic subsample of 2,000
   clients fixes the rank floor, s and the dual price, then one q-step and k-step on all N)
   against (a) the small-N path forced at every N (``multistart_max_n`` = inf: one
   best-response start per rank floor, the multi-start, the full s scan under scale_lr) up to
   --small-path-max-n, and (b) the multi-start alternation from k0 = r, r/2, r/4 alone up to
   --multistart-max-n, with wall and CPU time (the CPU is shared: CPU time is the steadier
   number), J, and the ratios.
   The reference q-step runs inside Algorithm 2 for N <= --ref-full-max-n (not under scale_lr).
   A last line gives the default solver's CPU per client at each N (flat = linear in N).

Usage: python bench/planner.py [--sizes 50 500 5000 50000 1000000] [--stability constrain]
                               [--ref-cap 300] [--ref-mem-cap 4] [--ref-full-max-n 50]
                               [--small-path-max-n 50000] [--multistart-max-n 50000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from fedsketch.network import ClientProfiles
from fedsketch.planner.bound import PlanProblem, Theta
from fedsketch.planner.qstep_fast import q_step_fast
from fedsketch.planner.qstep_problem import SolverError
from fedsketch.planner.qstep_reference import q_step_reference
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


#: reference q-step seconds at N = 50 and the growth exponent (bench/results/planner.md: 2.0 s at
#: N = 50, 17.6 s at N = 500 on this 2-core machine)
REF_SECONDS_AT_50, REF_EXPONENT = 2.0, 0.95


def reference_seconds(n: int) -> float:
    """Estimated time of one reference q-step at N clients (``2 s (N / 50)^0.95``)."""
    return REF_SECONDS_AT_50 * (n / 50.0) ** REF_EXPONENT


def reference_skip_reason(n: int, stability: str, mem_cap: float, time_cap: float, inside: int = 1) -> str | None:
    """Why the reference should not be started at N clients (None: start it). ``inside`` = number
    of q-steps the caller runs (Algorithm 2 runs ~10)."""
    if stability == "scale_lr":
        return "reference solves P3 for none/constrain only"
    mem, sec = reference_memory_gib(n), inside * reference_seconds(n)
    if mem > mem_cap:
        return f"not started: estimated {mem:.3g} GiB > --ref-mem-cap {mem_cap:g}"
    if sec > time_cap:
        return f"not started: estimated {sec:.3g} s > --ref-cap {time_cap:g}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 500, 5000, 50000, 1000000])
    ap.add_argument("--ref-cap", type=float, default=300.0, help="time cap (s) of one reference q-step")
    ap.add_argument("--ref-mem-cap", type=float, default=4.0,
                    help="do not start the reference q-step when its estimated memory exceeds this (GiB)")
    ap.add_argument("--multistart-max-n", type=int, default=50000,
                    help="run the multi-start-only comparison up to this N")
    ap.add_argument("--small-path-max-n", type=int, default=50000,
                    help="run the small-N path (all floors / full scan on all N clients) up to this N")
    ap.add_argument("--ref-full-max-n", type=int, default=50, help="run the reference Algorithm 2 up to this N")
    ap.add_argument("--feasibility", default="exact", choices=("per_client", "p_weighted", "exact"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stability", default="none", choices=("none", "constrain", "scale_lr"),
                    help="planner.stability of the instances (PAPER.md §8; max_step_factor 1.3)")
    ap.add_argument("--skip-qstep", action="store_true", help="only the whole-Algorithm-2 table")
    ap.add_argument("--scale-lr-qstep-max-n", type=int, default=50000,
                    help="stand-alone scale_lr q-step (a scan over ~18 values of s on all N) only up to this N")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the fast timings (best is reported)")
    a = ap.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"feasibility={a.feasibility}, stability={a.stability}, r={R}, W={W:g}, theta={THETA.as_array().tolist()}, seed={a.seed}")
    print(f"reference q-step caps: {a.ref_cap:g} s, estimated memory {a.ref_mem_cap:g} GiB (~16 N^2 bytes), "
          f"estimated time {REF_SECONDS_AT_50:g} s (N/50)^{REF_EXPONENT:g}")
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs\n")
    sizes_q = [] if a.skip_qstep else a.sizes
    print("## q-step at k = r\n")
    print("| N | reference [s] | fast [s] | ref/fast | J reference | J fast | gap (fast-ref)/ref |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes_q:
        if a.stability == "scale_lr" and n > a.scale_lr_qstep_max_n:
            print(f"| {n} | - | not run: the stand-alone scale_lr q-step scans ~18 values of s on all N clients "
                  f"(N > --scale-lr-qstep-max-n {a.scale_lr_qstep_max_n}); the solver does that scan on its subsample | - | - | - | - |")
            continue
        prob = instance(n, a.seed, a.feasibility, a.stability)
        k = np.full(n, R)
        tf, fast = np.inf, None
        for _ in range(a.reps):
            t0 = time.perf_counter()
            fast = q_step_fast(prob, k)
            tf = min(tf, time.perf_counter() - t0)
        why = reference_skip_reason(n, a.stability, a.ref_mem_cap, a.ref_cap)
        if why:
            print(f"| {n} | {why} | {tf:.4f} | - | - | {fast.objective:.4f} | - |")
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
    print("default = this commit's solver (large-N path above N = 20,000); small-N path = the same solver with "
          "multistart_max_n = inf (the algorithm of c139507: every floor, multi-start, full s scan, on all N); "
          "multi-start = the alternation from k0 = r, r/2, r/4 alone (the pre-issue-13 algorithm). "
          "Ratios are row / default.\n")
    print("| N | solver | wall [s] | CPU [s] | J | rounds | round time [s] | mean k | E|K| | Phi | s | J ratio | CPU ratio | load |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    per_client = []
    for n in a.sizes:
        prob = instance(n, a.seed, a.feasibility, a.stability)
        rows = [("default", "fast", {})]
        if n <= a.small_path_max_n and n > 20_000:
            rows.append(("small-N path", "fast", {"multistart_max_n": 10**12}))
        if n <= a.multistart_max_n:
            rows.append(("multi-start", "fast", {"best_response": False}))
        why = reference_skip_reason(n, a.stability, a.ref_mem_cap, a.ref_cap, inside=10)
        if n <= a.ref_full_max_n and why is None:
            rows.append(("default, reference q-step", "reference", {}))
        elif n <= a.ref_full_max_n:
            print(f"| {n} | default, reference q-step | {why} | | | | | | | | | | | |")
        base = None
        for name, solver, kw in rows:
            best = (np.inf, np.inf, None)
            for _ in range(a.reps if solver == "fast" and n < 10**6 else 1):
                t0, c0 = time.perf_counter(), time.process_time()
                plan = solve(prob, q_solver=solver, **kw)
                best = min(best, (time.process_time() - c0, time.perf_counter() - t0, plan), key=lambda x: x[0])
            cpu, wall, plan = best
            ratio = "" if base is None else f"{plan.objective / base[0]:.6f} | {cpu / base[1]:.1f}x"
            if base is None:
                base = (plan.objective, cpu)
                ratio = "1 | 1"
                per_client.append((n, cpu))
            print(f"| {n} | {name} | {wall:.3f} | {cpu:.3f} | {plan.objective:.2f} | {plan.rounds:.1f} | "
                  f"{plan.round_time:.2f} | {plan.k.mean():.2f} | {plan.q.sum():.2f} | "
                  f"{plan.stability['step_factor']:.3f} | {plan.stability['lr_scale']:.4f} | {ratio} | "
                  f"{os.getloadavg()[0]:.2f} |", flush=True)
        if n > 20_000 and n > a.small_path_max_n:
            print(f"| {n} | small-N path | skipped (N > --small-path-max-n={a.small_path_max_n}) | | | | | | | | | | | |")
        if n > a.multistart_max_n:
            print(f"| {n} | multi-start | skipped (N > --multistart-max-n={a.multistart_max_n}) | | | | | | | | | | | |")
    print("\ndefault solver, CPU per client [us]: " + ", ".join(f"N={n}: {1e6 * c / n:.2f}" for n, c in per_client))


if __name__ == "__main__":
    main()
