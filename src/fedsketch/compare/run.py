"""Running a suite: every strategy x seed, reusing the runs that finished earlier.

A run counts as this suite's finished run when its folder holds the records of a finished run
(:func:`fedsketch.records.run_finished`) written by the same experiment: the same config hash, or
one that differs only in the execution settings (``config.EXECUTION_KEYS``: thread and worker
counts, :func:`fedsketch.config.same_experiment`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from fedsketch.compare.load import Suite
from fedsketch.config import ConfigError, ExperimentConfig, did_you_mean, same_experiment
from fedsketch.config.readers import ReadError, read_json, read_toml
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


def finished_records(cfg: ExperimentConfig, *, strict: bool = False) -> list[RoundRecord] | None:
    """The records of a finished run (any stop rule) of this config, else None; the run may have used
    other execution settings (``config.EXECUTION_KEYS``: thread and worker counts).

    A run folder whose ``run.json``, ``config.toml`` or ``metrics.jsonl`` cannot be read counts as
    unfinished (running it again resumes from its checkpoint and writes them anew), unless ``strict``
    (the run will not be trained here, e.g. ``--report-only``): then the
    :class:`~fedsketch.config.readers.ReadError` naming the file and line goes through.
    """
    from fedsketch.runner import run_dir_for

    out = run_dir_for(cfg)
    if not ((out / "run.json").is_file() and (out / METRICS_FILE).is_file()):
        return None
    try:
        info = read_json(out / "run.json")
        stored = info.get("config_hash") if isinstance(info, dict) else None
        same = stored == cfg.hash() or (  # config.toml is read only when the hash differs
            isinstance(stored, str)
            and (out / "config.toml").is_file()
            and same_experiment(cfg, stored, _train_section(read_toml(out / "config.toml")))
        )
        # no warning for a cut-off last line here: the report, which reads every run folder, gives it
        records = read_metrics(out / METRICS_FILE, warn=None) if same else []
    except ReadError:
        if strict:
            raise
        return None
    return records if run_finished(records, cfg.fl.rounds) else None


def _train_section(raw: dict[str, Any]) -> dict[str, Any]:
    train = raw.get("train", {})
    return train if isinstance(train, dict) else {}


def run_info(cfg: ExperimentConfig) -> dict[str, Any]:
    """The ``run.json`` of this config's run folder."""
    from fedsketch.runner import run_dir_for

    return read_json(run_dir_for(cfg) / "run.json")


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
            trains = run and (only is None or name in only)
            recs = finished_records(cfg, strict=not trains)  # a run not trained here must read cleanly
            if recs is not None:
                log(f"[{suite.name}] {name} seed {seed}: finished earlier, reusing")
            elif trains:
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
