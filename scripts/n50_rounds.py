"""Rounds against round time in a compare suite's runs (results/n50/README.md, "Why Proposed is not first").

Time to a level = (rounds to reach it) x (seconds per round). This script splits the two for every
finished run of a suite folder, and sets the measured round time beside the system model's
(eq. 11 through its Theorem 2 bound, eqs. 14-15: E[max t_cp] + sum q t_cm / W) at the run's own
q, k and client profiles (run.json), with the largest compute time among the clients it may
sample. A fixed-size cohort (fl.clients_per_round = m) is entered as q_n = m / N (what its sampler draws;
the model's E max then treats its clients as independent, an approximation for m of N without
replacement). The what-if uses the linear compute model (tau_0 = 0), as configs/n50.toml does.

    python scripts/n50_rounds.py results/n50/table1 [--levels 3.5,3.0] [--acc 0.58] [--what-if configs/n50.toml]
        [--final-against results/n50/fig2-sampling/runs/full]

A summary per strategy follows (mean ± SE over seeds; the last of --levels is its loss level).
With ``--what-if CONFIG`` it also scores, under the planner's model (``planner.baselines.score``, the
rounds of eq. 21 x the round time) at each seed's profiles from a capability-rank run's run.json, the
plan of CONFIG's planner (stability constrain and none) against the capability ranks (k 1-8) and
those ranks clipped to k >= 2 and >= 3, all at q = 0.25, with the step factor and feasibility.
With ``--speedup-over NAME`` (repeatable) it pairs every strategy's minutes to the accuracy and loss levels by
seed with row NAME of the same suite: NAME's time / the strategy's, per seed and mean ± SE over the seeds
where both reached the level (compare's paired.md does this against the suite's reference only).
With ``--final-against RUNS/NAME`` it pairs every strategy's final accuracy by seed with NAME's runs of
another suite (the claim "final accuracy within 1 point of full sampling at full rank").
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics as st
import tomllib
from pathlib import Path

import numpy as np

from fedsketch.compare.layout import parse_run_name, run_name, runs_dir
from fedsketch.network.round_time import expected_max_compute
from fedsketch.records import METRICS_FILE, RoundRecord, evaluations, read_metrics
from fedsketch.strategies.methods import inclusion


@functools.cache
def load(run: Path) -> tuple[dict, dict, list[RoundRecord]]:
    """run.json, config.toml and metrics.jsonl of a run folder, read once."""
    return (json.loads((run / "run.json").read_text()), tomllib.loads((run / "config.toml").read_text()),
            read_metrics(run / METRICS_FILE))


def strategy_seed(run: Path) -> tuple[str, int]:
    """The strategy and seed of a suite's run folder."""
    parsed = parse_run_name(run.name)
    assert parsed is not None, run  # main() keeps only run folders
    return parsed


def first_at(evals: list[RoundRecord], ok) -> RoundRecord | None:
    return next((e for e in evals if ok(e)), None)


def minutes_to(run: Path, acc: float, loss: float) -> tuple[float | None, float | None]:
    """Simulated minutes to the first evaluation after round 0 at accuracy >= ``acc`` and at test loss <= ``loss``
    (None where the run never got there)."""
    ev = evaluations(load(run)[2])[1:]
    a = first_at(ev, lambda e: e.accuracy >= acc)
    b = first_at(ev, lambda e: e.test_loss is not None and e.test_loss <= loss)
    return (a.sim_seconds / 60 if a else None), (b.sim_seconds / 60 if b else None)


def describe(run: Path, levels: list[float], acc: float) -> dict:
    info, cfg, recs = load(run)
    rounds = [r for r in recs if r.round_sim_seconds is not None]
    evals = [r for r in recs if r.evaluated and r.round > 0]
    fl = cfg.get("fl", {})
    q = inclusion(fl.get("method", "independent"), info["q"], fl.get("clients_per_round", 0))
    t_cp, t_cm = np.asarray(info["t_cp"], float), np.asarray(info["t_cm"], float)
    W = float(cfg.get("network", {}).get("bandwidth_mbps", 100.0))
    out = {
        "run": run.name,
        "k": f"{min(info['k'])}-{max(info['k'])} (median {int(np.median(info['k']))})",
        "cohort": st.mean(len(r.sampled) for r in rounds),
        "round_s": st.mean(r.round_sim_seconds for r in rounds),
        "model_cp": expected_max_compute(q, t_cp),
        "model_cm": float(np.dot(q, t_cm)) / W,
        "max_t_cp": float(t_cp.max()),
        "rounds_done": len(rounds),
    }
    for lv in levels:
        e = first_at(evals, lambda e, lv=lv: e.test_loss is not None and e.test_loss <= lv)
        out[f"loss{lv}"] = (e.round, e.sim_seconds) if e else None  # (first_at skips unevaluated losses)
    e = first_at(evals, lambda e: e.accuracy >= acc)
    out["acc"] = (e.round, e.sim_seconds) if e else None
    first = evals[0] if evals else None
    out["first_eval"] = (first.round, first.sim_seconds, first.accuracy, first.test_loss) if first else None
    return out


def _mse(xs: list[float]) -> str:
    if not xs:
        return "—"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{st.mean(xs):.2f} ± {st.stdev(xs) / len(xs) ** 0.5:.2f}"


def summary(runs: list[Path], acc: float, loss: float) -> None:
    """Per strategy over its finished seeds: minutes to ``acc`` and to ``loss`` (mean ± SE over the seeds
    that reached it, and how many did), final accuracy (mean ± SE), diverged (the stop rule) and worse
    than round 0 (fedsketch.stopping), each as a count of seeds."""
    from fedsketch.stopping import divergence_onset, worse_than_start

    by: dict[str, list[Path]] = {}
    for run in runs:
        by.setdefault(strategy_seed(run)[0], []).append(run)
    print(f"\n| strategy | seeds | minutes to {100 * acc:.0f} % (mean ± SE, reached) | minutes to loss {loss} (mean ± SE, reached) "
          "| final accuracy (mean ± SE) | diverged (rule) | worse than round 0 |\n|---|---|---|---|---|---|---|")
    for name, rs in by.items():
        ta, tl, fin, div, worse = [], [], [], 0, 0
        for run in rs:
            _, cfg, recs = load(run)
            ev = evaluations(recs)
            a, b = minutes_to(run, acc, loss)
            ta += [a] if a is not None else []
            tl += [b] if b is not None else []
            fin.append(100 * ev[-1].accuracy)
            factor = cfg.get("fl", {}).get("stop_divergence", 2.0) or 2.0
            div += divergence_onset(ev, factor) is not None  # the run's own rule
            worse += worse_than_start(ev) is not None
        n = len(rs)
        seeds = ",".join(str(strategy_seed(r)[1]) for r in rs)
        print(f"| {name} | {seeds} | {_mse(ta)} ({len(ta)}/{n}) | {_mse(tl)} ({len(tl)}/{n}) | {_mse(fin)} | {div}/{n} | {worse}/{n} |")


def final_against(runs: list[Path], ref: Path) -> None:
    """Final accuracy of every strategy against ``ref`` (a run folder name without its seed, e.g.
    results/n50/fig2-sampling/runs/full: full sampling at full rank), paired by seed: mean ± SE of the
    difference in points, and on how many seeds it is within 1 point or above."""
    def final(run: Path) -> float:
        return 100 * evaluations(load(run)[2])[-1].accuracy

    by: dict[str, dict[int, Path]] = {}
    for run in runs:
        name, seed = strategy_seed(run)
        by.setdefault(name, {})[seed] = run
    print(f"\n| strategy | seeds paired with {ref.name} | final accuracy minus {ref.name}'s, points (mean ± SE) "
          "| per seed | within 1 point or above |\n|---|---|---|---|---|")
    for name, seeds in by.items():
        pairs = [(s, final(run) - final(ref.with_name(run_name(ref.name, s)))) for s, run in sorted(seeds.items())
                 if (ref.with_name(run_name(ref.name, s)) / METRICS_FILE).is_file()]
        diffs = [d for _, d in pairs]
        print(f"| {name} | {','.join(str(s) for s, _ in pairs) or '—'} | {_mse(diffs)} | "
              f"{', '.join(f'{d:+.1f}' for d in diffs) or '—'} | {sum(d >= -1 for d in diffs)}/{len(diffs)} |")


def speedup_over(runs: list[Path], ref: str, acc: float, loss: float) -> None:
    """Paired by seed: ``ref``'s minutes to ``acc`` and to ``loss`` / each strategy's (both must reach it)."""
    by: dict[str, dict[int, Path]] = {}
    for run in runs:
        name, seed = strategy_seed(run)
        by.setdefault(name, {})[seed] = run
    if ref not in by:
        raise SystemExit(f"n50_rounds: --speedup-over {ref!r}: no finished run of that row; rows: {sorted(by)}")
    print(f"\n| strategy | speed-up over {ref} to {100 * acc:.0f} % (mean ± SE, per seed) "
          f"| speed-up over {ref} to loss {loss} (mean ± SE, per seed) |\n|---|---|---|")
    for name, seeds in by.items():
        if name == ref:
            continue
        pairs = [(s, minutes_to(by[ref][s], acc, loss), minutes_to(run, acc, loss))
                 for s, run in sorted(seeds.items()) if s in by[ref]]
        cells = []
        for i in (0, 1):  # the accuracy level, then the loss level
            both = [(s, a[i] / b[i]) for s, a, b in pairs if a[i] is not None and b[i] is not None]
            per = ", ".join(f"{s}: {x:.2f}" for s, x in both)
            m = _mse([x for _, x in both])
            m = m.replace(" ±", "x ±") if "±" in m else (m + "x" if both else m)
            cells.append(f"{m} ({len(both)}/{len(pairs)}; {per or '—'})")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


def what_if(runs: list[Path], config: str) -> None:
    from fedsketch.config import load_config
    from fedsketch.network.profiles import ClientProfiles
    from fedsketch.planner.api import build_problem, plan_problem
    from fedsketch.planner.baselines import score

    cap = [r for r in runs if load(r)[0]["allocation_info"].get("ranks") == "capability"]
    seen = set()
    print("\n| seed | stability | allocation | rounds | round [s] | total [s] | step factor | feasible |\n|---|---|---|---|---|---|---|---|")
    for run in cap:
        info = load(run)[0]
        if info["seed"] in seen:
            continue
        seen.add(info["seed"])
        n = len(info["p"])
        prof = ClientProfiles(np.asarray(info["tau_cp"]), np.asarray(info["tau_cm"]), np.zeros(n))
        kcap = np.asarray(info["k"], dtype=np.int64)
        for stab in ("constrain", "none"):
            cfg = load_config(config, [f"planner.stability='{stab}'", f"seed={info['seed']}"])
            prob = build_problem(cfg.planner, prof, np.asarray(info["p"]), cfg.lora.rank, cfg.network.bandwidth_mbps,
                                 cfg.network.compute_model)
            plan, _ = plan_problem(prob, cfg.planner, np.random.default_rng(0))
            q4 = np.full(n, 0.25)
            for name, q, k in (("plan", np.asarray(plan.q), np.asarray(plan.k)), ("capability k", q4, kcap),
                               ("capability k >= 2", q4, np.maximum(kcap, 2)), ("capability k >= 3", q4, np.maximum(kcap, 3))):
                b = score(prob, name, "what-if", q, k)
                phi = prob.stability_report(q, k)["step_factor"]
                print(f"| {info['seed']} | {stab} | {name} (k {k.min()}-{k.max()}) | {b.rounds:.3f} | {b.round_time:.2f} | "
                      f"{b.total_time:.1f} | {phi:.2f} | {'yes' if b.feasible else 'no'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite_dir", type=Path)
    ap.add_argument("--levels", default="3.5,3.0")
    ap.add_argument("--acc", type=float, default=0.58)
    ap.add_argument("--what-if", default=None, help="config whose planner scores the capability allocation")
    ap.add_argument("--final-against", type=Path, default=None,
                    help="runs/<name> of another suite (e.g. results/n50/fig2-sampling/runs/full): final accuracy paired by seed")
    ap.add_argument("--speedup-over", action="append", default=[], metavar="NAME",
                    help="a row of this suite: every strategy's speed-up over it, paired by seed")
    a = ap.parse_args()
    levels = [float(x) for x in a.levels.split(",")]
    if not runs_dir(a.suite_dir).is_dir():
        raise SystemExit(f"n50_rounds: {a.suite_dir} has no runs/ folder; give a suite's output folder, "
                         "e.g. results/n50/table1")
    runs = sorted(p for p in runs_dir(a.suite_dir).iterdir()
                  if parse_run_name(p.name) and (p / "run.json").exists() and (p / METRICS_FILE).exists())
    fmt = lambda v: "never" if v is None else f"round {v[0]}, {v[1]:.0f} s"  # noqa: E731
    head = ["run", "k", "cohort", "round [s] measured", "model: E max t_cp + sum q t_cm / W", "largest t_cp",
            "first evaluation (round, s, acc, loss)", f"{100 * a.acc:.0f} %"] + [f"loss {lv}" for lv in levels]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for run in runs:
        d = describe(run, levels, a.acc)
        fe = d["first_eval"]
        cells = [d["run"], d["k"], f"{d['cohort']:.1f}", f"{d['round_s']:.1f}",
                 f"{d['model_cp'] + d['model_cm']:.1f} = {d['model_cp']:.1f} + {d['model_cm']:.1f}", f"{d['max_t_cp']:.1f}",
                 f"{fe[0]}, {fe[1]:.0f} s, {100 * fe[2]:.1f} %, {fe[3]:.2f}" if fe else "-", fmt(d["acc"])]
        cells += [fmt(d[f"loss{lv}"]) for lv in levels]
        print("| " + " | ".join(cells) + " |")
    summary(runs, a.acc, levels[-1])
    for ref in a.speedup_over:
        speedup_over(runs, ref, a.acc, levels[-1])
    if a.final_against:
        final_against(runs, a.final_against)
    if a.what_if:
        what_if(runs, a.what_if)


if __name__ == "__main__":
    main()
