"""Command line: ``fedsketch run | validate | defaults | compare | report | plan | estimate``.

The only module that reads ``sys.argv``; each command parses, builds a config and calls the
library. Exit codes (``fedsketch.errors``): 0 success, 1 a run that failed, 2 bad input, 130
interrupted. Every error is one short plain-text message on standard error; ``--debug`` (or
``FEDSKETCH_DEBUG=1``) shows the traceback instead. Messages are printed as plain text, never as
rich markup, so names with ``[`` and ``]`` print as they are.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from fedsketch.config import ConfigError, ExperimentConfig, collect, load_config, read_toml, to_toml
from fedsketch.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, classify
from fedsketch.records import METRICS_FILE, RoundRecord

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Federated sketched-LoRA fine-tuning with independent client sampling (arXiv 2505.23555). "
    "Exit codes: 0 ok, 1 a run that failed, 2 bad input, 130 interrupted.",
)


def _env_debug() -> bool:
    return os.environ.get("FEDSKETCH_DEBUG", "").strip() not in ("", "0")


_STATE = {"debug": _env_debug()}

SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override: section.key=value (repeatable)")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="read a local folder of LLM-Adapters JSON files (data.source='local', data.data_dir)"
    ),
]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an error")] = False) -> None:
    _STATE["debug"] = debug or _env_debug()  # per invocation: a --debug call leaves no trace


def say(msg: str) -> None:
    """Our own line on standard output (plain text)."""
    typer.echo(msg)


def err(msg: str) -> None:
    """An error or warning line on standard error (plain text)."""
    typer.echo(msg, err=True)


@contextlib.contextmanager
def user_errors(on_interrupt: Callable[[], str] | None = None) -> Iterator[None]:
    """Turn an exception into its message and exit code (``fedsketch.errors.classify``)."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        err(on_interrupt() if on_interrupt is not None else "interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as e:  # noqa: BLE001 - the one place errors become messages
        if _STATE["debug"]:
            raise
        code, msg = classify(e)
        err(msg)
        raise typer.Exit(code) from None


def _with_data_dir(overrides: list[str] | None, data_dir: Path | None) -> list[str]:
    sets = list(overrides or [])
    if data_dir is not None:
        sets += ["data.source='local'", f"data.data_dir={json.dumps(str(data_dir))}"]
    return sets


def _print_problems(what: str, problems: list[str]) -> None:
    err(f"{what}: {len(problems)} problem(s)" if len(problems) > 1 else f"{what}:")
    for p in problems:
        err(f"  - {p}")


def load_or_exit(config: Path | None, overrides: list[str] | None, data_dir: Path | None = None) -> ExperimentConfig:
    try:
        return load_config(config, _with_data_dir(overrides, data_dir))
    except ConfigError as e:
        _print_problems(f"{config or 'config'}: invalid configuration", e.errors)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def preflight_or_exit(cfg: ExperimentConfig, source: Any, *, planner: bool | None = None) -> None:
    """Stop with exit code 2 before loading any model if the files the config names have problems."""
    from fedsketch.preflight import check_inputs

    with user_errors():
        problems = check_inputs(cfg, planner=planner)
    if problems:
        _print_problems(f"{source or 'config'}", problems)
        raise typer.Exit(EXIT_BAD_INPUT)


def _output_or_exit(problem: str | None) -> None:
    """Stop with exit code 2 (one line) when an output location (``fedsketch.preflight``) is unusable."""
    if problem:
        err(problem)
        raise typer.Exit(EXIT_BAD_INPUT)


def _interrupted_message(run_dir: Path, last_round: list[int]) -> Callable[[], str]:
    def message() -> str:
        from fedsketch import checkpoint

        found = checkpoint.find(run_dir / "checkpoint")
        saved = None
        if found is not None:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                saved = int(json.loads((found / "manifest.json").read_text())["round"])
        done = max(last_round[-1] if last_round else 0, saved or 0)
        if saved is None and done == 0:
            return "interrupted after round 0; run the same command again to start it"
        if saved is None:
            return (
                f"interrupted after round {done}; no checkpoint was written (output.checkpoint_every = 0), "
                "so running the same command again starts over"
            )
        if saved < done:
            return (
                f"interrupted after round {done} (last checkpoint: round {saved}); "
                f"run the same command again to resume from round {saved}"
            )
        return f"interrupted after round {saved}; run the same command again to resume"

    return message


def _progress_line(total: int) -> Callable[[Any, RoundRecord], None]:
    last_acc: list[float] = []

    def line(sess: Any, rec: RoundRecord) -> None:
        if rec.accuracy is not None:
            last_acc.append(rec.accuracy)
        elif not last_acc:
            first = sess.records[0].accuracy
            if first is not None:
                last_acc.append(first)
        acc = f"  last accuracy {100 * last_acc[-1]:.1f}%" if last_acc else ""
        failed = f" ({len(rec.failed)} failed)" if rec.failed else ""
        say(
            f"round {rec.round:>{len(str(total))}}/{total}  sim {rec.sim_seconds / 60:6.2f} min  "
            f"sampled {len(rec.sampled)}{failed}{acc}"
        )

    return line


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="TOML config (default: the embedded default)")] = None,
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    fresh: Annotated[bool, typer.Option(help="ignore an existing checkpoint of this run")] = False,
    backend: Annotated[str, typer.Option(help="inprocess or flower")] = "inprocess",
) -> None:
    """Run (or resume) one experiment and write its run folder (with report.html)."""
    from fedsketch.console import third_party_to_log
    from fedsketch.lock import run_folder_lock
    from fedsketch.preflight import check_output_dir
    from fedsketch.runner import run_dir_for

    cfg = load_or_exit(config, set_, data_dir)
    if backend not in ("inprocess", "flower"):
        err(f"--backend: {backend!r} is not allowed; choose 'inprocess' or 'flower'")
        raise typer.Exit(EXIT_BAD_INPUT)
    for note in _unused_on_backend(cfg, backend):
        err(note)
    preflight_or_exit(cfg, config)
    out = run_dir_for(cfg)
    _output_or_exit(check_output_dir(out, "run folder"))
    rounds_done: list[int] = []
    progress = _progress_line(cfg.fl.rounds) if cfg.output.progress else None

    def on_round(sess: Any, rec: RoundRecord) -> None:
        rounds_done.append(rec.round)
        if progress is not None:
            progress(sess, rec)

    # the lock (one writer per run folder) is taken before any model loads; a run whose input fails before
    # it wrote anything removes the run folder it created (fedsketch.lock)
    with user_errors(on_interrupt=_interrupted_message(out, rounds_done)), run_folder_lock(out):
        say(f"run folder: {out}  (third-party output: {out / 'run.log'})")
        with third_party_to_log(out / "run.log"):
            if backend == "flower":
                from fedsketch.flower.run import run_flower

                result = run_flower(cfg, fresh=fresh)
            else:
                from fedsketch.runner import run_experiment

                result = run_experiment(cfg, fresh=fresh, on_round=on_round)
    _summary(result)
    trained = [r for r in result.records[1:] if r.sampled]
    if trained and all(r.all_failed for r in trained):
        reasons = sorted({f["reason"] for r in trained for f in r.failed})
        err(
            f"run failed: every sampled client failed in every round ({'; '.join(reasons[:3])}); "
            f"see {out / METRICS_FILE} and {out / 'run.log'}"
        )
        raise typer.Exit(EXIT_FAILED)


def _unused_on_backend(cfg: Any, backend: str) -> list[str]:
    """Notes for settings the chosen backend does not use (explicit ones only: 0 = auto is silent)."""
    if backend != "flower":
        return []
    return [
        f"note: train.{key} = {val} is not used by --backend flower (each client trains in its own ClientApp, "
        "one Ray actor per CPU, which is Flower's parallelism); it applies to --backend inprocess"
        for key, val in (("workers", cfg.train.workers), ("client_batch", cfg.train.client_batch))
        if val > 1
    ]


def _summary(result: Any) -> None:
    evals = result.evaluations
    first, last = evals[0], evals[-1]
    fin = result.records[-1]
    say(
        f"accuracy {100 * first.accuracy:.1f}% (round {first.round}) -> {100 * last.accuracy:.1f}% "
        f"(round {last.round}), test loss {first.test_loss:.4f} -> {last.test_loss:.4f}; "
        f"most frequent prediction {100 * last.pred_max_share:.0f}% of answers"
    )
    say(
        f"simulated time {fin.sim_seconds / 60:.2f} min, real time {fin.real_seconds / 60:.2f} min"
        + (f", stopped by {fin.stop}" if fin.stop else "")
    )
    report = result.run_dir / "report.html"
    if report.is_file():
        say(f"report: {report}")


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="TOML config to check")],
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    plan: Annotated[bool, typer.Option("--plan", help="also require what `fedsketch plan` needs (theta)")] = False,
) -> None:
    """Check a config and every file it names, before loading any model; report every problem at once (exit 2).

    A suite file (one with ``[[strategy]]`` blocks, see ``fedsketch compare``) is checked as ``compare``
    would run it: every strategy's config, and the files each one names."""
    from fedsketch.preflight import check_inputs

    with user_errors():
        try:
            raw = read_toml(config)
        except ConfigError as e:
            _print_problems(str(config), e.errors)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        if "strategy" in raw:
            _validate_suite(config, _with_data_dir(set_, data_dir), plan)
            return
        cfg, problems = collect(raw, _with_data_dir(set_, data_dir))
        if not problems:
            problems = check_inputs(cfg, planner=True if plan else None)
    if problems:
        _print_problems(str(config), problems)
        raise typer.Exit(EXIT_BAD_INPUT)
    say(f"{config}: OK")


def _validate_suite(path: Path, overrides: list[str], plan: bool) -> None:
    """``validate`` of a suite: its own keys, then each strategy's config at the suite's first seed (the
    seed changes no file a config names) and the files it names."""
    from fedsketch.compare.load import load_suite
    from fedsketch.preflight import check_inputs

    try:
        suite = load_suite(path, overrides)
    except ConfigError as e:
        _print_problems(str(path), e.errors)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    names = [n for n, _ in suite.strategies]
    where: dict[str, list[str]] = {}  # a problem shared by strategies (the base's model, say) is listed once
    for name in names:
        for msg in check_inputs(suite.config(name, suite.seeds[0]), planner=True if plan else None):
            where.setdefault(msg, []).append(name)
    problems = [
        f"{'every strategy' if len(ns) == len(names) > 1 else 'strategy ' + ', '.join(map(repr, ns))}: {msg}"
        for msg, ns in where.items()
    ]
    if problems:
        _print_problems(str(path), problems)
        raise typer.Exit(EXIT_BAD_INPUT)
    say(f"{path}: OK (suite {suite.name!r}: {len(suite.strategies)} strategies x {len(suite.seeds)} seeds)")


@app.command()
def defaults(
    config: Annotated[Path | None, typer.Argument(help="show this config resolved instead")] = None,
    set_: SetOpt = None,
) -> None:
    """Print the fully resolved config (all keys with their values) as TOML."""
    typer.echo(to_toml(load_or_exit(config, set_)))


COMPARE_INTERRUPTED = (
    "interrupted; run the same command again to resume: the finished runs are reused, and the interrupted run "
    "resumes from its last checkpoint (it starts over if it wrote none)"
)


@app.command()
def compare(
    suite: Annotated[Path, typer.Argument(help="suite TOML (see suites/)")],
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    output: Annotated[Path | None, typer.Option(help="write results here instead of the suite's output")] = None,
    seeds: Annotated[
        str | None, typer.Option(help="comma-separated seeds replacing the suite's list, e.g. 0,1")
    ] = None,
    run: Annotated[
        bool, typer.Option("--run/--report-only", help="--report-only: train nothing, tabulate the finished runs")
    ] = True,
    only: Annotated[
        str | None,
        typer.Option(
            help="comma-separated strategies to train, e.g. k3,k4; the others' finished runs are still reported"
        ),
    ] = None,
) -> None:
    """Run several strategies x seeds on one partition; write a time-to-target table, plots and report.html."""
    from fedsketch.checkpoint import CheckpointError
    from fedsketch.compare import SuiteFailed
    from fedsketch.compare import compare as run_compare

    sets = _with_data_dir(set_, data_dir)
    try:
        seed_list = [int(x) for x in seeds.split(",")] if seeds else None
    except ValueError:
        err(f"--seeds must be comma-separated integers, got {seeds!r}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    with user_errors(on_interrupt=lambda: COMPARE_INTERRUPTED):
        try:
            rows = run_compare(
                suite,
                sets,
                output,
                log=say,
                seeds=seed_list,
                run=run,
                only=[x.strip() for x in only.split(",") if x.strip()] if only else None,
            )
        except ConfigError as e:
            _print_problems(f"{suite}: invalid suite", e.errors)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except CheckpointError as e:  # a run folder of an earlier, different version of the suite
            err(f"{e}\nmove the suite's runs/ folder away (or set --output) to start the suite afresh")
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except SuiteFailed as e:  # the other runs finished and their tables are written
            err(str(e))
            raise typer.Exit(EXIT_FAILED) from None
    for r in rows:
        say(str(r))


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="a run folder (metrics.jsonl) or a suite output folder (table.csv)")],
    out: Annotated[Path | None, typer.Option("--out", help="where to write (default: FOLDER/report.html)")] = None,
) -> None:
    """Write one self-contained report.html (figures embedded) for a run or a suite folder."""
    from fedsketch.html_report import write_report
    from fedsketch.preflight import check_output_file

    if out is not None:
        _output_or_exit(check_output_file(out, "--out"))
    with user_errors():
        path = write_report(folder, out)
    say(f"report: {path}")


def _register_planner() -> None:
    from fedsketch.cli.planner import register

    register(app, debug=lambda: _STATE["debug"])


_register_planner()


def _terminate_as_interrupt() -> None:
    """SIGTERM (``kill``, a job scheduler, a container stop) ends a command as Ctrl-C does: exit 130, the
    checkpoint intact, the same "run the same command again" line. The handler raises KeyboardInterrupt in
    the main thread of this process only; a forked child (a client worker) that inherited it before it
    set its own dies of the signal, as it would without the handler."""
    import signal

    main_pid = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _terminate_as_interrupt()
    app()
