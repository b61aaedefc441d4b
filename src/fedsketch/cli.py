"""Command line: ``fedsketch run | validate | defaults | plan | estimate``.

The only module that reads ``sys.argv``; each command parses, builds a config and calls the
library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from fedsketch.checkpoint import CheckpointError
from fedsketch.config import ConfigError, ExperimentConfig, load_config, to_toml, validate_file

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Federated sketched-LoRA fine-tuning with independent client sampling (arXiv 2505.23555).")
console = Console(stderr=True)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override: section.key=value (repeatable)")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="folder of the LLM-Adapters JSON data (data.data_dir)")]


def load_or_exit(config: Optional[Path], overrides: Optional[list[str]], data_dir: Optional[Path] = None) -> ExperimentConfig:
    sets = list(overrides or [])
    if data_dir is not None:
        sets.append(f"data.data_dir={str(data_dir)!r}")
    try:
        return load_config(config, sets)
    except ConfigError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


@app.command()
def run(config: Annotated[Optional[Path], typer.Argument(help="TOML config (default: the embedded default)")] = None,
        set_: SetOpt = None, data_dir: DataDirOpt = None,
        fresh: Annotated[bool, typer.Option(help="ignore an existing checkpoint of this run")] = False,
        backend: Annotated[str, typer.Option(help="inprocess or flower")] = "inprocess") -> None:
    """Run (or resume) one experiment and write its run folder."""
    cfg = load_or_exit(config, set_, data_dir)
    if backend == "flower":
        from fedsketch.flower.run import run_flower

        result = run_flower(cfg, fresh=fresh)
    elif backend == "inprocess":
        from fedsketch.server import run_experiment

        result = run_experiment(cfg, fresh=fresh)
    else:
        console.print(f"[red]--backend: {backend!r} is not allowed; choose 'inprocess' or 'flower'[/red]")
        raise typer.Exit(2)
    evals = result.evaluations
    first, last = evals[0], evals[-1]
    console.print(f"run folder: {result.run_dir}")
    console.print(f"round {first['round']:>3}: accuracy {100 * first['accuracy']:.1f}%  test loss {first['test_loss']:.4f}")
    console.print(f"round {last['round']:>3}: accuracy {100 * last['accuracy']:.1f}%  test loss {last['test_loss']:.4f}  "
                  f"(most frequent prediction {100 * last['pred_max_share']:.0f}% of answers)")
    fin = result.records[-1]
    console.print(f"simulated time {fin['sim_seconds'] / 60:.2f} min, real time {fin['real_seconds'] / 60:.2f} min")


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="TOML config to check")], set_: SetOpt = None) -> None:
    """Check a config; report every error at once (exit code 1 if any)."""
    errors = validate_file(config, list(set_ or []))
    if errors:
        console.print(f"[red]{config}: {len(errors)} error(s)[/red]")
        for e in errors:
            console.print(f"  - {e}")
        raise typer.Exit(1)
    console.print(f"{config}: OK")


@app.command()
def defaults(config: Annotated[Optional[Path], typer.Argument(help="show this config resolved instead")] = None,
             set_: SetOpt = None) -> None:
    """Print the fully resolved config (all keys with their values) as TOML."""
    typer.echo(to_toml(load_or_exit(config, set_)))


@app.command()
def compare(suite: Annotated[Path, typer.Argument(help="suite TOML (see suites/)")], set_: SetOpt = None,
            data_dir: DataDirOpt = None,
            output: Annotated[Optional[Path], typer.Option(help="write results here instead of the suite's output")] = None,
            seeds: Annotated[Optional[str], typer.Option(help="comma-separated seeds replacing the suite's list, e.g. 0,1")] = None,
            run: Annotated[bool, typer.Option("--run/--report-only",
                                              help="--report-only: train nothing, tabulate the finished runs")] = True) -> None:
    """Run several strategies x seeds on one partition; write a time-to-target table and plot."""
    from fedsketch.compare import compare as run_compare

    sets = list(set_ or []) + ([f"data.data_dir={str(data_dir)!r}"] if data_dir is not None else [])
    try:
        seed_list = [int(x) for x in seeds.split(",")] if seeds else None
    except ValueError:
        console.print(f"[red]--seeds must be comma-separated integers, got {seeds!r}[/red]")
        raise typer.Exit(2) from None
    try:
        rows = run_compare(suite, sets, output, log=console.print, seeds=seed_list, run=run)
    except ConfigError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    except CheckpointError as e:  # a run folder of an earlier, different version of the suite
        console.print(f"[red]{e}[/red]\nmove the suite's runs/ folder away (or set --output) to start the suite afresh")
        raise typer.Exit(1) from None
    for r in rows:
        console.print(r)


def _register_optional() -> None:
    try:
        from fedsketch.planner.commands import register
    except ImportError:  # planner not installed in this checkout
        return
    register(app)


_register_optional()


def main() -> None:
    import logging

    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)])
    for noisy in ("httpx", "urllib3", "filelock", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app()
