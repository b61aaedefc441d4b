"""``fedsketch compare SUITE.toml``: several strategies x seeds on one harness, one table, one plot.

A suite file::

    name = "fig2-sampling"
    base = "../configs/suite-cpu.toml"   # relative to the suite file
    seeds = [0, 1, 2]
    target = 0.55                          # test accuracy to reach
    stop_at_target = true                  # optional: end each run at its first evaluation >= target
    sweep = [0.50, 0.55, 0.60]             # optional: also tabulate minutes to each of these accuracies
    loss_target = 3.0                      # optional: also the minutes to this test loss (less noisy)
    loss_sweep = [4.0, 3.5, 3.0]           # optional: minutes to each of these test losses
    reference = "full"                     # speed-ups are relative to this strategy
    output = "../results/fig2-sampling"    # relative to the suite file

    [[strategy]]
    name = "full"
    set = ["fl.sampling='full'"]

For a given seed, every strategy sees the same data partition and client profiles (both come
from the seed's streams). Finished runs are skipped and unfinished ones resume from their last
checkpoint, so an interrupted suite continues where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsketch.config import ConfigError, ExperimentConfig, did_you_mean, load_config, same_experiment
from fedsketch.io import atomic_write_text, atomic_write_with
from fedsketch.stopping import DIVERGENCE_FACTOR, divergence_onset, worse_than_start  # noqa: F401 - divergence_onset is part of the report API


SUITE_KEYS = ("name", "base", "seeds", "target", "reference", "output", "strategy", "set", "stop_at_target", "sweep",
              "loss_target", "loss_sweep")
"""Top-level keys of a suite file."""
STRATEGY_KEYS = ("name", "set")
"""Keys of a ``[[strategy]]`` table."""


@dataclass(frozen=True)
class Suite:
    name: str
    base: Path | None
    seeds: list[int]
    target: float
    reference: str
    output: Path
    strategies: list[tuple[str, list[str]]]
    overrides: list[str]
    sweep: tuple[float, ...] = ()
    loss_target: float | None = None
    loss_sweep: tuple[float, ...] = ()

    def config(self, strategy: str, seed: int) -> ExperimentConfig:
        sets = dict(self.strategies)[strategy]
        return load_config(self.base, [*self.overrides, *sets, f"seed={seed}",
                                       f"output.dir='{self.output / 'runs'}'", f"output.name='{strategy}-seed{seed}'"])


def load_suite(path: str | Path, overrides: list[str] | None = None, output: str | Path | None = None,
               seeds: list[int] | None = None) -> Suite:
    """Read and check a suite file; every problem is reported at once (ConfigError).

    ``seeds`` replaces the file's seed list (e.g. to run seed 0 of every strategy first).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: suite file not found"])
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    errors: list[str] = []
    errors += [f"{path}: unknown key {k!r}{did_you_mean(k, SUITE_KEYS)}; allowed: {', '.join(SUITE_KEYS)}"
               for k in raw if k not in SUITE_KEYS]
    top_set = raw.get("set", [])
    if not isinstance(top_set, list) or not all(isinstance(x, str) for x in top_set):
        errors.append(f"{path}: set must be a list of 'section.key=value' strings, e.g. set = [\"fl.rounds=20\"], "
                      f"got {top_set!r}")
        top_set = []
    seeds = raw.get("seeds", [0]) if seeds is None else list(seeds)
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds)):
        errors.append(f"{path}: seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    target = raw.get("target")
    if not isinstance(target, (int, float)) or not 0 < target <= 1:
        errors.append(f"{path}: target must be an accuracy in (0, 1], got {target!r}")
    sweep = raw.get("sweep", [])
    if not (isinstance(sweep, list) and all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                            and 0 < a <= 1 for a in sweep)):
        errors.append(f"{path}: sweep must be a list of accuracies in (0, 1], got {sweep!r}")
        sweep = []
    loss_target = raw.get("loss_target")
    if loss_target is not None and (isinstance(loss_target, bool) or not isinstance(loss_target, (int, float))
                                    or not loss_target > 0):
        errors.append(f"{path}: loss_target must be a test loss > 0, got {loss_target!r}")
        loss_target = None
    loss_sweep = raw.get("loss_sweep", [])
    if not (isinstance(loss_sweep, list) and all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                                 and a > 0 for a in loss_sweep)):
        errors.append(f"{path}: loss_sweep must be a list of test losses > 0, got {loss_sweep!r}")
        loss_sweep = []
    strategies = []
    raw_strategies = raw.get("strategy", [])
    if not isinstance(raw_strategies, list):
        errors.append(f"{path}: strategy must be an array of tables ([[strategy]] blocks)")
        raw_strategies = []
    for i, s in enumerate(raw_strategies):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            errors.append(f"{path}: strategy[{i}] needs a name")
            continue
        unknown = [k for k in s if k not in STRATEGY_KEYS]
        if unknown:
            errors += [f"{path}: strategy {s['name']!r}: unknown key {k!r}{did_you_mean(k, STRATEGY_KEYS)}; "
                       f"allowed: {', '.join(STRATEGY_KEYS)}" for k in unknown]
        sets = s.get("set", [])
        if not isinstance(sets, list) or not all(isinstance(x, str) for x in sets):
            errors.append(f"{path}: strategy {s['name']!r}: set must be a list of 'section.key=value' strings")
            continue
        strategies.append((s["name"], sets))
    names = [n for n, _ in strategies]
    if not strategies:
        errors.append(f"{path}: define at least one [[strategy]]")
    if len(set(names)) != len(names):
        errors.append(f"{path}: strategy names must be unique, got {names}")
    ref = raw.get("reference", names[0] if names else "")
    if names and ref not in names:
        errors.append(f"{path}: reference {ref!r} is not a strategy; choose one of {names}")
    stop = raw.get("stop_at_target", False)
    if not isinstance(stop, bool):
        errors.append(f"{path}: stop_at_target must be true or false, got {stop!r}")
    stop_set = [f"fl.stop_accuracy={float(target)!r}"] if stop is True and isinstance(target, (int, float)) else []
    base = (path.parent / raw["base"]).resolve() if raw.get("base") else None
    suite = Suite(name=raw.get("name", path.stem), base=base, seeds=seeds if isinstance(seeds, list) else [0],
                  target=float(target or 0), reference=ref,
                  output=Path(output).resolve() if output is not None else
                  (path.parent / raw.get("output", f"../results/{path.stem}")).resolve(),
                  strategies=strategies, overrides=list(top_set) + stop_set + list(overrides or []),
                  sweep=tuple(sorted(float(a) for a in sweep)),
                  loss_target=None if loss_target is None else float(loss_target),
                  loss_sweep=tuple(sorted((float(a) for a in loss_sweep), reverse=True)))
    if not errors:  # every strategy x seed must give a valid config
        for n, _ in strategies:
            try:
                suite.config(n, suite.seeds[0])
            except ConfigError as e:
                errors += [f"strategy {n!r}: {m}" for m in e.errors]
    if errors:
        raise ConfigError(errors)
    return suite


def _finished_records(cfg: ExperimentConfig) -> list[dict[str, Any]] | None:
    """The records of a finished run (any stop rule) of this config, else None; the run may have used
    other execution settings (``config.EXECUTION_KEYS``: thread and worker counts)."""
    from fedsketch.report import read_metrics
    from fedsketch.runner import run_dir_for

    out = run_dir_for(cfg)
    try:
        stored = json.loads((out / "run.json").read_text()).get("config_hash")
        same = stored == cfg.hash() or same_experiment(cfg, stored, tomllib.loads((out / "config.toml").read_text()).get("train", {}))
        records = read_metrics(out / "metrics.jsonl") if same else []
    except (OSError, json.JSONDecodeError, tomllib.TOMLDecodeError):
        return None
    done = records and (records[-1].get("stop") or records[-1].get("round") == cfg.fl.rounds)
    return records if done else None


def check_only(suite: Suite, only: list[str] | None) -> None:
    """``only`` must name strategies of the suite (ConfigError naming the allowed ones)."""
    names = [n for n, _ in suite.strategies]
    unknown = [n for n in only or [] if n not in names]
    if unknown:
        raise ConfigError([f"--only: unknown strategy {n!r}{did_you_mean(n, names)}; the suite's strategies: "
                           f"{', '.join(names)}" for n in unknown])


def run_suite(suite: Suite, log: Any = print, run: bool = True,
              only: list[str] | None = None) -> dict[str, list[list[dict[str, Any]]]]:
    """Run every strategy x seed (skipping finished runs); return records per strategy.

    With ``run=False`` nothing is trained: only the runs that finished earlier are read, and the
    others are left out (logged), e.g. to tabulate a suite that was run on another machine.
    ``only`` trains just the strategies it names (e.g. more seeds of one factor bucket); the
    other strategies' finished runs are still read and reported, as with ``run=False``.
    """
    from fedsketch.runner import run_experiment

    check_only(suite, only)
    out: dict[str, list[list[dict[str, Any]]]] = {name: [] for name, _ in suite.strategies}
    for seed in suite.seeds:  # seed-major: an interrupted suite has whole seeds done
        for name, _ in suite.strategies:
            cfg = suite.config(name, seed)
            recs = _finished_records(cfg)
            if recs is not None:
                log(f"[{suite.name}] {name} seed {seed}: finished earlier, reusing")
            elif run and (only is None or name in only):
                log(f"[{suite.name}] running {name} seed {seed}")
                recs = run_experiment(cfg).records
            else:
                why = " (not in --only)" if run else ""
                log(f"[{suite.name}] {name} seed {seed}: no finished run{why}, left out of the report")
                continue
            out[name].append(recs)
    return out


def time_to_target(records: list[dict[str, Any]], target: float) -> float | None:
    """Simulated seconds at the first evaluation with accuracy >= target (None if never)."""
    for r in records:
        if r.get("accuracy") is not None and r["accuracy"] >= target:
            return float(r["sim_seconds"])
    return None


def time_to_loss(records: list[dict[str, Any]], level: float) -> float | None:
    """Simulated seconds at the first evaluation with test loss <= level (None if never)."""
    for r in records:
        if r.get("test_loss") is not None and r["test_loss"] <= level:
            return float(r["sim_seconds"])
    return None


def _mean_se(xs: list[float]) -> tuple[float | None, float | None]:
    """Mean and standard error (std with ddof 1 over sqrt(n); None for fewer than 2 values)."""
    if not xs:
        return None, None
    return float(np.mean(xs)), (float(np.std(xs, ddof=1) / np.sqrt(len(xs))) if len(xs) > 1 else None)


def paired_rows(suite: Suite) -> list[dict[str, Any]]:
    """Speed-up over the reference, paired by seed: for every seed where both the strategy and the
    reference finished and reached the level, ratio_s = t_reference,s / t_strategy,s; mean ± SE
    over those seeds (and how many seeds were paired). Levels: the accuracy target and sweep, and
    the test-loss target and sweep."""
    by_seed: dict[str, dict[int, list[dict[str, Any]]]] = {name: {} for name, _ in suite.strategies}
    for name, _ in suite.strategies:
        for seed in suite.seeds:
            recs = _finished_records(suite.config(name, seed))
            if recs is not None:
                by_seed[name][seed] = recs
    levels = [("accuracy", a, time_to_target) for a in sorted({suite.target, *suite.sweep})]
    levels += [("test_loss", x, time_to_loss) for x in sorted({*([suite.loss_target] if suite.loss_target else []),
                                                              *suite.loss_sweep}, reverse=True)]
    ref = by_seed[suite.reference]
    rows = []
    for name, _ in suite.strategies:
        for metric, level, when in levels:
            ratios, n_both = [], 0
            for seed, recs in by_seed[name].items():
                if seed not in ref:
                    continue
                n_both += 1
                t_ref, t = when(ref[seed], level), when(recs, level)
                if t_ref is not None and t is not None and t > 0:
                    ratios.append(t_ref / t)
            mean, se = _mean_se(ratios)
            rows.append({"strategy": name, "metric": metric, "level": level, "paired_seeds": len(ratios),
                         "seeds_both_finished": n_both, "speedup_mean": mean, "speedup_se": se,
                         "speedup_min": min(ratios) if ratios else None, "speedup_max": max(ratios) if ratios else None})
    return rows


def write_paired(suite: Suite, rows: list[dict[str, Any]]) -> None:
    """``paired.md`` and ``paired.csv``: per-seed paired speed-ups over the reference."""
    md = [f"# {suite.name}: speed-up over {suite.reference}, paired by seed", "",
          f"For each seed where both runs finished and reached the level: (minutes of {suite.reference}) / "
          "(minutes of the strategy); mean ± standard error over those seeds, [min, max], and n = paired seeds "
          "/ seeds where both finished. Accuracy levels and test-loss levels (the first evaluation at or below it).", "",
          "| strategy | level | speed-up (mean ± SE) | [min, max] | n |", "|---|---|---|---|---|"]
    for r in rows:
        lvl = f"acc {100 * r['level']:.0f}%" if r["metric"] == "accuracy" else f"loss {r['level']:g}"
        sp = "—" if r["speedup_mean"] is None else f"{r['speedup_mean']:.2f}×" + (
            f" ± {r['speedup_se']:.2f}" if r["speedup_se"] is not None else "")
        rng = "—" if r["speedup_min"] is None else f"[{r['speedup_min']:.2f}, {r['speedup_max']:.2f}]"
        md.append(f"| {r['strategy']} | {lvl} | {sp} | {rng} | {r['paired_seeds']}/{r['seeds_both_finished']} |")
    atomic_write_text(suite.output / "paired.md", "\n".join(md) + "\n")
    if rows:
        _write_csv(suite.output / "paired.csv", rows)


def summarise(suite: Suite, runs: dict[str, list[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per strategy: minutes to target (mean and standard error over seeds, when all reached it), speed-up."""
    rows = []
    for name, seed_runs in runs.items():
        times = [time_to_target(r, suite.target) for r in seed_runs]
        hit = [t / 60 for t in times if t is not None]
        final = [r[-1].get("accuracy") for r in seed_runs if r[-1].get("accuracy") is not None]
        complete = bool(times) and len(hit) == len(times)
        mean, se = _mean_se(hit) if complete else (None, None)
        row_loss = {}
        if suite.loss_target is not None:
            lt = [time_to_loss(r, suite.loss_target) for r in seed_runs]
            lhit = [t / 60 for t in lt if t is not None]
            lmean, lse = _mean_se(lhit) if lhit and len(lhit) == len(lt) else (None, None)
            row_loss = {"loss_target": suite.loss_target, "loss_reached": len(lhit),
                        "loss_minutes_mean": lmean, "loss_minutes_se": lse}
        rows.append({"strategy": name, "target": suite.target, "reached": len(hit), "seeds": len(times),
                     "minutes_mean": mean, "minutes_se": se,
                     "minutes_mean_reached": float(np.mean(hit)) if hit else None,
                     "final_accuracy_mean": float(np.mean(final)) if final else None,
                     "total_sim_minutes_mean": float(np.mean([r[-1]["sim_seconds"] / 60 for r in seed_runs]))
                     if seed_runs else None, **row_loss})
    ref = next(r for r in rows if r["strategy"] == suite.reference)
    for r in rows:
        ok = r["minutes_mean"] is not None and ref["minutes_mean"] is not None and r["minutes_mean"] > 0
        r["speedup_vs_" + suite.reference] = ref["minutes_mean"] / r["minutes_mean"] if ok else None
    return rows


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def _pm(mean: float | None, se: float | None) -> str:
    """``mean ± se``; the mean alone where there is no standard error (one seed)."""
    return _fmt(mean) if se is None else f"{_fmt(mean)} ± {se:.2f}"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_tables(suite: Suite, rows: list[dict[str, Any]]) -> None:
    key = "speedup_vs_" + suite.reference
    md = [f"# {suite.name}: simulated minutes to {100 * suite.target:.0f}% test accuracy", "",
          f"Seeds {', '.join(map(str, suite.seeds))}. A run that stops at its simulated-time budget ends with the first "
          "round that reaches it, so its last round may run past the budget by less than one round.", "",
          f"| strategy | target | minutes to target (mean ± SE) | reached | final accuracy | speed-up vs {suite.reference} |",
          "|---|---|---|---|---|---|"]
    if suite.loss_target is not None:
        md[-2] += f" minutes to test loss {suite.loss_target:g} (mean ± SE, reached) |"
        md[-1] += "---|"
    for r in rows:
        t = (_pm(r["minutes_mean"], r["minutes_se"]) if r["minutes_mean"] is not None
             else "no finished run" if r["seeds"] == 0 else f"not reached in {r['seeds'] - r['reached']} of {r['seeds']} seeds"
             + (f" (the others: {_fmt(r['minutes_mean_reached'])})" if r["reached"] else ""))
        acc = _fmt(100 * r["final_accuracy_mean"] if r["final_accuracy_mean"] is not None else None, ".1f")
        speed = f"{r[key]:.2f}×" if r[key] is not None else "—"
        md.append(f"| {r['strategy']} | {100 * suite.target:.0f}% | {t} | {r['reached']}/{r['seeds']} | {acc}% | {speed} |"
                  + (f" {_pm(r['loss_minutes_mean'], r['loss_minutes_se'])} ({r['loss_reached']}/{r['seeds']}) |"
                     if suite.loss_target is not None else ""))
    atomic_write_text(suite.output / "table.md", "\n".join(md) + "\n")
    _write_csv(suite.output / "table.csv", rows)


def sweep_rows(suite: Suite, runs: dict[str, list[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Minutes to each accuracy of ``suite.sweep``, per strategy (mean and standard error over the seeds that reached it)."""
    rows = []
    for name, seed_runs in runs.items():
        for level in suite.sweep:
            hit = [t / 60 for t in (time_to_target(r, level) for r in seed_runs) if t is not None]
            mean, se = _mean_se(hit)
            rows.append({"strategy": name, "accuracy": level, "reached": len(hit), "seeds": len(seed_runs),
                         "minutes_mean": mean, "minutes_se": se})
    return rows


def write_sweep(suite: Suite, rows: list[dict[str, Any]]) -> None:
    """``sweep.md`` (strategies x accuracy levels) and ``sweep.csv`` (one row per pair)."""
    levels = list(suite.sweep)
    md = [f"# {suite.name}: simulated minutes to each test accuracy", "",
          "Mean ± standard error (std with ddof 1 over sqrt(n); the mean alone for one seed) over the seeds that reached "
          "the level, and how many of the strategy's finished runs did; — where none did.", "",
          "| strategy | " + " | ".join(f"{100 * a:g}%" for a in levels) + " |",
          "|---|" + "---|" * len(levels)]
    for name, _ in suite.strategies:
        cells = []
        for r in (r for r in rows if r["strategy"] == name):
            t = _pm(r["minutes_mean"], r["minutes_se"])
            cells.append(f"{t} ({r['reached']}/{r['seeds']})")
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    atomic_write_text(suite.output / "sweep.md", "\n".join(md) + "\n")
    _write_csv(suite.output / "sweep.csv", rows)


def stability_rows(suite: Suite) -> list[dict[str, Any]]:
    """Per run: Theorem 1's step-size factor ``kappa_max * Omega`` of its plan and whether it diverged.

    ``q``, ``k`` and ``p`` come from the run's ``run.json``, with q replaced by what the method's sampler
    draws (``strategies.methods.inclusion``: m/N for a fixed cohort of m, whatever ``fl.q`` says);
    ``kappa_n`` is the LoRA scale the method trains client n at (``strategies.methods.client_scale``: r/k_n for the sketched methods, 1 for
    HeteroLoRA and FLoRA). Sorted by the factor, so a threshold between stable and diverged runs
    shows at a glance.
    """
    from fedsketch.planner.bound import step_size_factor
    from fedsketch.runner import run_dir_for
    from fedsketch.strategies.methods import client_scale, inclusion

    rows = []
    for name, _ in suite.strategies:
        for seed in suite.seeds:
            cfg = suite.config(name, seed)
            recs = _finished_records(cfg)
            if recs is None:  # not run, or unfinished: not part of the report
                continue
            info = json.loads((run_dir_for(cfg) / "run.json").read_text())
            kappa = [client_scale(cfg.fl.method, int(k), cfg.lora.rank) for k in info["k"]]
            q = inclusion(cfg.fl.method, info["q"], cfg.fl.clients_per_round)
            factor, omega, kmax = step_size_factor(info["p"], q, kappa)
            onset = divergence_onset(recs, cfg.fl.stop_divergence or DIVERGENCE_FACTOR)  # the run's own rule
            worse = worse_than_start(recs)
            rows.append({"strategy": name, "seed": seed, "step_factor": factor, "omega": omega, "kappa_max": kmax,
                         "sum_q": float(np.sum(q)),
                         "diverged_at_minutes": None if onset is None else onset / 60,
                         "worse_than_start_at_minutes": None if worse is None else worse / 60})
    return sorted(rows, key=lambda x: (x["step_factor"], x["strategy"], x["seed"]))


def write_stability(suite: Suite, rows: list[dict[str, Any]]) -> None:
    """``stability.md`` and ``stability.csv``: one row per finished run, by step-size factor."""
    md = [f"# {suite.name}: Theorem 1 step-size factor and divergence, per run", "",
          "`kappa_max * Omega` with `Omega = sum_n p_n (1 - p_n) + p_n^2 / q_n` and `kappa_n` the LoRA scale "
          "client n trains at; Theorem 1 needs `eta <= 1 / (32 L H beta kappa_max Omega)`. A run counts "
          "as diverged at its first evaluation whose test loss exceeds `fl.stop_divergence` (default 2) times its "
          "best so far, or is NaN: the run's own stop rule (`fedsketch.stopping`). \"Worse than round 0\" dates the "
          "first evaluation whose test loss is above the untrained model's: a collapse the rule misses when it "
          "starts at once (report only; the stop rule is unchanged).", "",
          "| strategy | seed | kappa_max * Omega | Omega | kappa_max | sum q | diverged at (min) | worse than round 0 at (min) |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['strategy']} | {r['seed']} | {r['step_factor']:.2f} | {r['omega']:.2f} | "
                  f"{r['kappa_max']:.0f} | {r['sum_q']:.2f} | {_fmt(r['diverged_at_minutes'])} | "
                  f"{_fmt(r['worse_than_start_at_minutes'])} |")
    atomic_write_text(suite.output / "stability.md", "\n".join(md) + "\n")
    if rows:
        _write_csv(suite.output / "stability.csv", rows)


def plot_suite(suite: Suite, runs: dict[str, list[list[dict[str, Any]]]], metric: str = "accuracy") -> None:
    """``metric`` (accuracy or test_loss) vs simulated minutes, one curve per strategy: mean over
    seeds and a ±std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, seed_runs in runs.items():
        if not seed_runs:
            continue
        scale = 100 if metric == "accuracy" else 1
        curves = [[(r["sim_seconds"] / 60, scale * r[metric]) for r in recs if r.get(metric) is not None]
                  for recs in seed_runs]
        end = max(c[-1][0] for c in curves)  # a finished run holds its last value to the end
        grid = np.linspace(0, end, 200)
        # the accuracy a run shows at time x is that of its last evaluation at or before x
        ys = np.array([[c[max(i for i, (t, _) in enumerate(c) if t <= x)][1] for x in grid] for c in curves])
        mean, std = ys.mean(0), ys.std(0)
        line, = ax.plot(grid, mean, label=name, drawstyle="steps-post")
        for c in curves:  # where each seed's run ended
            ax.plot([c[-1][0]], [c[-1][1]], marker="|", color=line.get_color(), ms=8)
        ax.fill_between(grid, mean - std, mean + std, alpha=0.2, step="post")
    if metric == "accuracy":
        ax.axhline(100 * suite.target, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("simulated wall-clock time (min)")
    ax.set_ylabel("test accuracy (%)" if metric == "accuracy" else "test loss (answer NLL per token)")
    ax.set_title(f"{suite.name} (mean ± std over {len(suite.seeds)} seeds)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    name = "accuracy_vs_time.png" if metric == "accuracy" else "loss_vs_time.png"
    atomic_write_with(suite.output / name, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def compare(path: str | Path, overrides: list[str] | None = None, output: str | Path | None = None,
            log: Any = print, seeds: list[int] | None = None, run: bool = True,
            only: list[str] | None = None) -> list[dict[str, Any]]:
    """Run a suite and write ``table.md``, ``table.csv``, ``accuracy_vs_time.png``,
    ``loss_vs_time.png`` and ``report.html`` to its output, ``stability.md``/``.csv`` (Theorem 1's step-size factor per
    run), and ``sweep.md``/``.csv`` if the suite has a sweep. ``run=False`` only reports finished runs;
    ``only`` trains just the named strategies (:func:`run_suite`)."""
    suite = load_suite(path, overrides, output, seeds)
    runs = run_suite(suite, log, run, only)
    rows = summarise(suite, runs)
    write_tables(suite, rows)
    if suite.sweep:
        write_sweep(suite, sweep_rows(suite, runs))
    write_paired(suite, paired_rows(suite))
    plot_suite(suite, runs)
    plot_suite(suite, runs, "test_loss")
    write_stability(suite, stability_rows(suite))
    from fedsketch.html_report import write_suite_report

    write_suite_report(suite.output)
    return rows
