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

- :mod:`.load`: the suite file -> :class:`Suite`;
- :mod:`.layout`: the run folders of a suite's output, ``runs/<strategy>-seed<k>/``;
- :mod:`.run`: running every strategy x seed, reusing finished runs;
- :mod:`.statistics`: time to a level, mean ± SE, paired speed-ups, Theorem 1's step-size factor;
- :mod:`.write`: the tables and plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsketch.compare.load import Suite, load_suite
from fedsketch.compare.run import FailedRun, SeedRun, SuiteFailed, SuiteRuns, finished_records, run_suite
from fedsketch.compare.statistics import paired_rows, stability_rows, summarise, sweep_rows
from fedsketch.compare.write import plot_suite, write_paired, write_stability, write_sweep, write_tables
from fedsketch.config import ConfigError

__all__ = [
    "FailedRun",
    "SeedRun",
    "Suite",
    "SuiteFailed",
    "SuiteRuns",
    "check_suite_inputs",
    "compare",
    "finished_records",
    "load_suite",
    "run_suite",
]


def compare(
    path: str | Path,
    overrides: list[str] | None = None,
    output: str | Path | None = None,
    log: Any = print,
    seeds: list[int] | None = None,
    run: bool = True,
    only: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Run a suite and write ``table.md``, ``table.csv``, ``accuracy_vs_time.png``,
    ``loss_vs_time.png`` and ``report.html`` to its output, ``paired.md``/``.csv`` (speed-ups paired by
    seed), ``stability.md``/``.csv`` (Theorem 1's step-size factor per run), and ``sweep.md``/``.csv``
    if the suite has a sweep. ``run=False`` only reports finished runs; ``only`` trains just the named
    strategies (:func:`run_suite`). Returns the rows of ``table.csv``.

    The output folder, and the files of every strategy to train, are checked before any run starts
    (:func:`check_suite_inputs`). A run that fails is left out, the suite goes on, its tables mark it, and
    :class:`SuiteFailed` (exit 1) is raised once everything else is written."""
    suite = load_suite(path, overrides, output, seeds)
    check_suite_inputs(suite, "--output" if output is not None else "output", run, only)
    failures: list[FailedRun] = []
    by_seed = run_suite(suite, log, run, only, failures)
    runs = {name: [recs for _, recs in seed_runs] for name, seed_runs in by_seed.items()}
    rows = summarise(suite, runs)
    write_tables(suite, rows, failures)
    if suite.sweep:
        write_sweep(suite, sweep_rows(suite, runs))
    write_paired(suite, paired_rows(suite, by_seed))
    plot_suite(suite, runs)
    plot_suite(suite, runs, "test_loss")
    write_stability(suite, stability_rows(suite, by_seed))
    from fedsketch.html_report import write_suite_report

    write_suite_report(suite.output)
    if failures:
        first = failures[0]
        more = f" and {len(failures) - 1} more" if len(failures) > 1 else ""
        raise SuiteFailed(
            f"suite {suite.name!r}: {len(failures)} run(s) failed: {first.strategy} seed {first.seed} "
            f"({first.reason}){more}; {suite.output / 'table.md'} lists them, and the same command runs them again"
        )
    return rows


def check_suite_inputs(suite: Suite, what: str, run: bool = True, only: list[str] | None = None) -> None:
    """Before any run: the suite's output folder must be writable (``InputError`` naming ``what``), and the
    files each strategy to train names must be usable (``ConfigError``, one line per problem, as
    ``fedsketch validate SUITE`` reports them)."""
    from fedsketch.errors import InputError
    from fedsketch.preflight import check_inputs, check_output_dir

    problem = check_output_dir(suite.output, what)
    if problem:
        raise InputError(problem)
    if not run:
        return
    names = [n for n, _ in suite.strategies if only is None or n in only]
    where: dict[str, list[str]] = {}  # a problem shared by strategies (the base's model, say) is listed once
    for name in names:
        for msg in check_inputs(suite.config(name, suite.seeds[0])):
            where.setdefault(msg, []).append(name)
    if where:
        raise ConfigError(
            [
                f"{'every strategy' if len(ns) == len(names) > 1 else 'strategy ' + ', '.join(map(repr, ns))}: {msg}"
                for msg, ns in where.items()
            ]
        )
