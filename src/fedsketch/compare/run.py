"""Running a suite: every strategy x seed, reusing the runs that finished earlier.

A run counts as this suite's finished run when its folder holds the records of a finished run
(:func:`fedsketch.records.run_finished`) written by the same experiment: the same config hash, or
one that differs only in the execution settings (``config.EXECUTION_KEYS``: thread and worker
counts, :func:`fedsketch.config.same_experiment`).
"""

from __future__ import annotations

import json
import tomllib
from typing import Any, NamedTuple

from fedsketch.compare.load import Suite
from fedsketch.config import ConfigError, ExperimentConfig, did_you_mean, same_experiment
from fedsketch.errors import RunFailed, classify
from fedsketch.records import METRICS_FILE, RoundRecord, read_metrics, run_finished


class SeedRun(NamedTuple):
    """One finished run of a strategy: its seed and records."""

    seed: int
    records: list[RoundRecord]


SuiteRuns = dict[str, list[SeedRun]]
"""The finished runs of a suite per strategy (suite order), each strategy's in seed order."""


class FailedRun(NamedTuple):
    """A run of the suite that raised: its strategy, seed and the one-line reason."""

    strategy: str
    seed: int
    reason: str


class SuiteFailed(RunFailed):
    """Some runs of a suite failed; the others finished and are tabulated (exit 1)."""


def failure_reason(exc: BaseException) -> str:
    """The first line of the message the command line gives for ``exc`` (``fedsketch.errors.classify``)."""
    return classify(exc)[1].splitlines()[0]


def finished_records(cfg: ExperimentConfig) -> list[RoundRecord] | None:
    """The records of a finished run (any stop rule) of this config, else None; the run may have used
    other execution settings (``config.EXECUTION_KEYS``: thread and worker counts)."""
    from fedsketch.runner import run_dir_for

    out = run_dir_for(cfg)
    try:
        stored = json.loads((out / "run.json").read_text()).get("config_hash")
        same = stored == cfg.hash() or same_experiment(  # config.toml is read only when the hash differs
            cfg, stored, tomllib.loads((out / "config.toml").read_text()).get("train", {})
        )
        records = read_metrics(out / METRICS_FILE) if same else []
    except (OSError, json.JSONDecodeError, tomllib.TOMLDecodeError):
        return None
    return records if run_finished(records, cfg.fl.rounds) else None


def run_info(cfg: ExperimentConfig) -> dict[str, Any]:
    """The ``run.json`` of this config's run folder."""
    from fedsketch.runner import run_dir_for

    return json.loads((run_dir_for(cfg) / "run.json").read_text())


def check_only(suite: Suite, only: list[str] | None) -> None:
    """``only`` must name strategies of the suite (ConfigError naming the allowed ones)."""
    names = [n for n, _ in suite.strategies]
    unknown = [n for n in only or [] if n not in names]
    if unknown:
        raise ConfigError(
            [
                f"--only: unknown strategy {n!r}{did_you_mean(n, names)}; the suite's strategies: {', '.join(names)}"
                for n in unknown
            ]
        )


def run_suite(
    suite: Suite,
    log: Any = print,
    run: bool = True,
    only: list[str] | None = None,
    failures: list[FailedRun] | None = None,
) -> SuiteRuns:
    """Run every strategy x seed (skipping finished runs); return the finished runs per strategy.

    With ``run=False`` nothing is trained: only the runs that finished earlier are read, and the
    others are left out (logged), e.g. to tabulate a suite that was run on another machine.
    ``only`` trains just the strategies it names (e.g. more seeds of one factor bucket); the
    other strategies' finished runs are still read and reported, as with ``run=False``.

    A run that raises is logged, appended to ``failures`` (when given) and left out; the suite goes on
    with the next run. A checkpoint of another experiment in a run folder (``CheckpointError``: the
    folder of an earlier version of the suite) and an interruption stop the suite.
    """
    from fedsketch.checkpoint import CheckpointError
    from fedsketch.runner import run_experiment

    check_only(suite, only)
    out: SuiteRuns = {name: [] for name, _ in suite.strategies}
    for seed in suite.seeds:  # seed-major: an interrupted suite has whole seeds done
        for name, _ in suite.strategies:
            cfg = suite.config(name, seed)
            recs = finished_records(cfg)
            if recs is not None:
                log(f"[{suite.name}] {name} seed {seed}: finished earlier, reusing")
            elif run and (only is None or name in only):
                log(f"[{suite.name}] running {name} seed {seed}")
                try:
                    recs = run_experiment(cfg).records
                except CheckpointError:
                    raise
                except Exception as e:  # noqa: BLE001 - a failed run is recorded; the suite goes on
                    why = failure_reason(e)
                    log(f"[{suite.name}] {name} seed {seed} failed: {why}")
                    if failures is not None:
                        failures.append(FailedRun(name, seed, why))
                    continue
            else:
                why = " (not in --only)" if run else ""
                log(f"[{suite.name}] {name} seed {seed}: no finished run{why}, left out of the report")
                continue
            out[name].append(SeedRun(seed, recs))
    return out
