"""Does a theta predict the rounds measured at other pilots? (results/n50/theta/README.md, "transfer check").

For every pilot of PILOTS (the JSON `fedsketch estimate` writes, or its `pilots-<hash>.json` cache of
finished replicates, read while the estimate still runs) it prints the measured rounds to F_s (mean ±
SE over seeds) and what each THETA file's rounds model predicts there (eq. 21, R = theta4 / (theta1 -
theta2 X - theta3 Y), X = P/q, Y = P r/(q k), P = 1/N for equal client sizes), each as a ratio to the
first pilot: theta is defined up to scale and a theta fitted to another loss level differs in
theta4, so only the shape across (q, k) compares.

    python scripts/theta_check.py results/n50/theta/pilots-<hash>.json --theta results/theta-default-v3.json \
        [--theta results/n50/theta/theta-n50.json] [--clients 50] [--rank 8] \
        [--plan configs/n50.toml --profiles results/n50/table1/runs/proposed-seed0]

With ``--plan CONFIG --profiles RUN`` it also makes each theta's plan (CONFIG's planner, the client
profiles and weights of RUN's run.json) and scores every plan under every theta (rounds x round
time, eq. 21 and Theorem 2): the table results/n50/theta/README.md's decision rule reads.
"""
from __future__ import annotations

import argparse
import json
import statistics as st
from pathlib import Path

from fedsketch.planner.bound import rounds_model
from fedsketch.planner.estimate import load_theta_file


def pilots(path: Path) -> list[tuple[float, int, list[float], float | None, float | None]]:
    """(q, k, per-seed rounds, X, Y) per pilot, from an estimate's JSON or its replicate cache.
    X and Y are given only for a verification pilot at a per-client plan."""
    data = json.loads(path.read_text())
    if "pilots" in data:
        return [(p["q"], p["k"], p.get("replicates") or [p["rounds"]], p.get("X"), p.get("Y")) for p in data["pilots"]]
    rows: dict[tuple[float, int], list[float]] = {}
    for key, rounds in data["replicates"].items():
        k = json.loads(key)
        if len(k["q"]) == 1 and rounds is not None:  # homogeneous pilots; a plan's verification pilot needs p
            rows.setdefault((k["q"][0], k["k"][0]), []).append(rounds)
    return [(q, k, r, None, None) for (q, k), r in rows.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pilots", type=Path)
    ap.add_argument("--theta", type=Path, action="append", required=True)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--plan", default=None, help="config whose planner makes each theta's plan")
    ap.add_argument("--profiles", type=Path, default=None, help="a run folder whose run.json gives profiles and p")
    a = ap.parse_args()
    P, r = 1.0 / a.clients, a.rank
    rows = pilots(a.pilots)
    thetas = [(t.name, load_theta_file(t)) for t in a.theta]
    head = ["q", "k", "seeds", "rounds measured (mean ± SE)", "ratio to first"] + [f"{n}: ratio" for n, _ in thetas]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    base = None
    for q, k, reps, X, Y in rows:
        X = P / q if X is None else X
        Y = P * r / (q * k) if Y is None else Y
        m = st.mean(reps)
        se = st.stdev(reps) / len(reps) ** 0.5 if len(reps) > 1 else None
        pred = [rounds_model(th, th.theta2 * X + th.theta3 * Y) for _, th in thetas]
        base = base or (m, pred)
        cells = [f"{q:g}", str(k), str(len(reps)), f"{m:.2f}" + (f" ± {se:.2f}" if se is not None else ""),
                 f"{m / base[0]:.2f}"] + [f"{p / b:.2f}" for p, b in zip(pred, base[1])]
        print("| " + " | ".join(cells) + " |")
    if a.plan:
        if a.profiles is None:
            raise SystemExit("theta_check: --plan needs --profiles <run folder>")
        plans(a.plan, a.profiles, thetas, a.theta)


def plans(config: str, profiles: Path, thetas: list[tuple[str, object]], files: list[Path]) -> None:
    import numpy as np

    from fedsketch.config import load_config
    from fedsketch.network.profiles import ClientProfiles
    from fedsketch.planner.api import build_problem, plan_problem
    from fedsketch.planner.baselines import score

    info = json.loads((profiles / "run.json").read_text())
    n = len(info["p"])
    prof = ClientProfiles(np.asarray(info["tau_cp"]), np.asarray(info["tau_cm"]), np.zeros(n))
    probs, made = [], []
    for (name, _), f in zip(thetas, files):
        cfg = load_config(config, [f"planner.theta_file='{f}'", f"seed={info['seed']}"])
        prob = build_problem(cfg.planner, prof, np.asarray(info["p"]), cfg.lora.rank, cfg.network.bandwidth_mbps,
                             cfg.network.compute_model)
        plan, _ = plan_problem(prob, cfg.planner, np.random.default_rng(0))
        probs.append(prob)
        made.append((f"plan of {name}", np.asarray(plan.q), np.asarray(plan.k)))
    made.append(("run's allocation", np.asarray(info["q"]), np.asarray(info["k"])))
    head = ["allocation", "sum q", "k", "step factor"] + [f"{name}: rounds x round [s] = total [s]" for name, _ in thetas]
    print(f"\nPlans at {profiles.name}'s profiles (seed {info['seed']}), each scored under every theta "
          "(each plan held to its theta's pilot region, planner.extrapolate = false)\n")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, q, k in made:
        cells = [name, f"{q.sum():.2f}", f"{k.min()}-{k.max()}", f"{probs[0].stability_report(q, k)['step_factor']:.2f}"]
        for prob in probs:
            b = score(prob, name, "check", q, k)
            cells.append(f"{b.rounds:.2f} x {b.round_time:.1f} = {b.total_time:.1f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
