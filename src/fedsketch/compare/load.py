"""Reading and checking a suite file (the format: :mod:`fedsketch.compare`): :class:`Suite` and
:func:`load_suite`. Every problem of a suite file is reported at once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedsketch.compare.layout import run_name, runs_dir
from fedsketch.config import ConfigError, ExperimentConfig, did_you_mean, load_config, read_toml

SUITE_KEYS = (
    "name",
    "base",
    "seeds",
    "target",
    "reference",
    "output",
    "strategy",
    "set",
    "stop_at_target",
    "sweep",
    "loss_target",
    "loss_sweep",
)
"""Top-level keys of a suite file."""
STRATEGY_KEYS = ("name", "set")
"""Keys of a ``[[strategy]]`` table."""
#: a strategy's name becomes one folder name inside the suite's runs/ (``compare.layout.run_name``): printable,
#: at most 100 characters, not starting with a dot or a space, and none of / \ ' " (a quote would end the
#: TOML string that carries the run folder's name)
STRATEGY_NAME = re.compile(r"[^.\s/\\'\"][^/\\'\"]{0,99}")


@dataclass(frozen=True)
class Suite:
    """A checked suite file: the base config, seeds, levels, reference, output folder and strategies."""

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
        """The config of ``strategy``'s run at ``seed``, writing to its folder under the output (:mod:`.layout`)."""
        sets = dict(self.strategies)[strategy]
        return load_config(
            self.base,
            [
                *self.overrides,
                *sets,
                f"seed={seed}",
                f"output.dir='{runs_dir(self.output)}'",
                f"output.name='{run_name(strategy, seed)}'",
            ],
        )


def load_suite(
    path: str | Path,
    overrides: list[str] | None = None,
    output: str | Path | None = None,
    seeds: list[int] | None = None,
) -> Suite:
    """Read and check a suite file; every problem is reported at once (ConfigError).

    ``seeds`` replaces the file's seed list (e.g. to run seed 0 of every strategy first).
    """
    path = Path(path)
    raw = read_toml(path, "suite file")
    errors: list[str] = []
    errors += [
        f"{path}: unknown key {k!r}{did_you_mean(k, SUITE_KEYS)}; allowed: {', '.join(SUITE_KEYS)}"
        for k in raw
        if k not in SUITE_KEYS
    ]
    top_set = raw.get("set", [])
    if not isinstance(top_set, list) or not all(isinstance(x, str) for x in top_set):
        errors.append(
            f"{path}: set must be a list of 'section.key=value' strings, e.g. set = [\"fl.rounds=20\"], got {top_set!r}"
        )
        top_set = []
    seeds = raw.get("seeds", [0]) if seeds is None else list(seeds)
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds)):
        errors.append(f"{path}: seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    target = raw.get("target")
    if not isinstance(target, (int, float)) or not 0 < target <= 1:
        errors.append(f"{path}: target must be an accuracy in (0, 1], got {target!r}")
    sweep = raw.get("sweep", [])
    if not (
        isinstance(sweep, list)
        and all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 < a <= 1 for a in sweep)
    ):
        errors.append(f"{path}: sweep must be a list of accuracies in (0, 1], got {sweep!r}")
        sweep = []
    loss_target = raw.get("loss_target")
    if loss_target is not None and (
        isinstance(loss_target, bool) or not isinstance(loss_target, (int, float)) or not loss_target > 0
    ):
        errors.append(f"{path}: loss_target must be a test loss > 0, got {loss_target!r}")
        loss_target = None
    loss_sweep = raw.get("loss_sweep", [])
    if not (
        isinstance(loss_sweep, list)
        and all(isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0 for a in loss_sweep)
    ):
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
        if not (STRATEGY_NAME.fullmatch(s["name"]) and s["name"].isprintable() and s["name"] == s["name"].strip()):
            errors.append(
                f"{path}: strategy name {s['name'][:40]!r} is not allowed; it names the run folder "
                "runs/<name>-seed<k>: one folder name of at most 100 printable characters, without / \\ ' \" and not "
                "starting with '.' or a space"
            )
            continue
        unknown = [k for k in s if k not in STRATEGY_KEYS]
        if unknown:
            errors += [
                f"{path}: strategy {s['name']!r}: unknown key {k!r}{did_you_mean(k, STRATEGY_KEYS)}; "
                f"allowed: {', '.join(STRATEGY_KEYS)}"
                for k in unknown
            ]
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
    for key in ("name", "base", "output"):
        if key in raw and not (isinstance(raw[key], str) and raw[key].strip()):
            errors.append(f"{path}: {key} must be a non-empty string, got {raw[key]!r}")
            del raw[key]
    base = (path.parent / raw["base"]).resolve() if raw.get("base") else None
    suite = Suite(
        name=raw.get("name", path.stem),
        base=base,
        seeds=seeds if isinstance(seeds, list) else [0],
        target=float(target or 0),
        reference=ref,
        output=Path(output).resolve()
        if output is not None
        else (path.parent / raw.get("output", f"../results/{path.stem}")).resolve(),
        strategies=strategies,
        overrides=list(top_set) + stop_set + list(overrides or []),
        sweep=tuple(sorted(float(a) for a in sweep)),
        loss_target=None if loss_target is None else float(loss_target),
        loss_sweep=tuple(sorted((float(a) for a in loss_sweep), reverse=True)),
    )
    if not errors:  # every strategy x seed must give a valid config
        for n, _ in strategies:
            try:
                suite.config(n, suite.seeds[0])
            except ConfigError as e:
                errors += [f"strategy {n!r}: {m}" for m in e.errors]
    if errors:
        raise ConfigError(errors)
    return suite
