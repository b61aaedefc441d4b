"""Reading a config: TOML and ``--set section.key=value`` overrides into an :class:`ExperimentConfig`.

Every field's allowed values sit in its metadata (``choices`` or ``range``, :mod:`.schema`), so each
message names the key and what is allowed, and :func:`collect` reports *all* errors at once (PEFT /
torchtune ``validate`` style). Experiments are small TOML deltas over the defaults;
``--set section.key=value`` overrides apply last.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import multiprocessing
import os
import tomllib
import typing
from pathlib import Path
from typing import Any

from fedsketch.config.readers import ReadError, short
from fedsketch.config.readers import read_toml as _read_toml_file
from fedsketch.config.schema import (
    EMBEDDED_MODELS,
    INF,
    RANDOM_MODELS,
    SECTIONS,
    ExperimentConfig,
    PlannerConfig,
    allowed_range,
    in_range,
)


def did_you_mean(word: str, allowed: typing.Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest allowed words, or ``""``."""
    allowed = list(allowed)
    close = difflib.get_close_matches(word, allowed, n=3, cutoff=0.6)
    close += [a for a in allowed if a.startswith(word[:3]) and a not in close and len(word) >= 3][: 3 - len(close)]
    return f" (did you mean {', '.join(close)}?)" if close else ""


class ConfigError(ValueError):
    """Raised with every problem found in a configuration, one per line."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(self.errors))


def _type_of(section: type, name: str) -> Any:
    return typing.get_type_hints(section)[name]


def _coerce(value: Any, typ: Any, key: str, errors: list[str]) -> Any:
    """Check ``value`` against the field type; ints are accepted for floats."""
    origin = typing.get_origin(typ) or typ
    if origin is bool:
        if isinstance(value, bool):
            return value
        errors.append(f"{key}: expected true or false, got {short(value)}")
    elif origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        errors.append(f"{key}: expected an integer, got {short(value)}")
    elif origin is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) > 2**1000:  # float() would overflow
                errors.append(f"{key}: {short(value)} is too large a number")
                return None
            return float(value)
        errors.append(f"{key}: expected a number, got {short(value)}")
    elif origin is str:
        if isinstance(value, str):
            return value
        errors.append(f"{key}: expected a string, got {short(value)}")
    elif origin is list:
        if isinstance(value, list):
            return value
        if isinstance(value, str):  # "a,b" on the command line: numbers stay numbers
            return [_scalar(v.strip()) for v in value.split(",") if v.strip()]
        errors.append(f"{key}: expected a list, got {short(value)}")
    else:  # pragma: no cover - all fields use the types above
        return value
    return None


def _scalar(text: str) -> Any:
    """A bare word from a comma list: a TOML number/bool if it parses as one, else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (ValueError, RecursionError):  # not TOML (TOMLDecodeError), or too many digits or brackets
        return text


def _check_field(key: str, value: Any, meta: typing.Mapping[str, Any], errors: list[str]) -> None:
    choices, rng = meta.get("choices"), meta.get("range")
    if choices is not None and value not in choices:
        errors.append(f"{key}: {short(value)} is not allowed; choose one of {', '.join(map(repr, choices))}")
    if rng is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and not in_range(value, rng):
        what = "is out of range" if isinstance(value, int) or math.isfinite(value) else "is not a finite number"
        errors.append(f"{key}: {short(value)} {what}; allowed {allowed_range(rng)}")


def _build_section(name: str, cls: type, raw: Any, errors: list[str]) -> Any:
    if not isinstance(raw, dict):
        errors.append(f"{name}: expected a table of keys, got {short(raw)}")
        return cls()
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{name}.{key}"
        if key not in known:
            errors.append(f"{full}: unknown key{did_you_mean(key, known)}; allowed keys: {', '.join(known)}")
            continue
        v = _coerce(value, _type_of(cls, key), full, errors)
        if v is not None:
            _check_field(full, v, known[key].metadata, errors)
            kwargs[key] = v
    return cls(**kwargs)


def _cross_checks(cfg: ExperimentConfig) -> list[str]:
    """Constraints that involve more than one key."""
    errs: list[str] = []
    n, r = cfg.data.num_clients, cfg.lora.rank
    if cfg.fl.sampling == "explicit":
        if len(cfg.fl.q_list) != n:
            errs.append(f"fl.q_list: sampling='explicit' needs {n} values (data.num_clients), got {len(cfg.fl.q_list)}")
        errs += _first_of(
            f"fl.q_list[{i}] (client {i}): {short(q)} is out of range; allowed (0, 1]"
            for i, q in enumerate(cfg.fl.q_list)
            if not _is_number(q) or not (0 < q <= 1)
        )
    if cfg.fl.clients_per_round > n:
        errs.append(
            f"fl.clients_per_round: {cfg.fl.clients_per_round} is more than data.num_clients={n}; "
            f"allowed 0 (= round(sum q)) to {n}"
        )
    if cfg.fl.ranks == "fixed" and not (1 <= cfg.fl.k <= r):
        errs.append(f"fl.k: ranks='fixed' needs 1 <= k <= lora.rank={r}, got {cfg.fl.k}")
    if cfg.fl.ranks == "explicit":
        if len(cfg.fl.k_list) != n:
            errs.append(f"fl.k_list: ranks='explicit' needs {n} values (data.num_clients), got {len(cfg.fl.k_list)}")
        errs += _first_of(
            f"fl.k_list[{i}] (client {i}): {short(k)} is out of range; allowed integers [1, lora.rank={r}]"
            for i, k in enumerate(cfg.fl.k_list)
            if not isinstance(k, int) or isinstance(k, bool) or not (1 <= k <= r)
        )
    if cfg.network.profile == "explicit":
        for key in ("tau_cp", "tau_cm"):
            vals = getattr(cfg.network, key)
            if len(vals) != n:
                errs.append(f"network.{key}: profile='explicit' needs {n} values (data.num_clients), got {len(vals)}")
            errs += _first_of(
                f"network.{key}[{i}] (client {i}): {short(v)} is out of range; allowed finite numbers > 0"
                for i, v in enumerate(vals)
                if not _is_number(v) or not 0 < v < INF
            )
    if cfg.network.profile == "csv" and not cfg.network.profile_csv:
        errs.append("network.profile_csv: profile='csv' needs a file path")
    if not cfg.lora.target_modules or not all(isinstance(m, str) and m for m in cfg.lora.target_modules):
        errs.append(
            f"lora.target_modules: expected a non-empty list of module names, got {short(cfg.lora.target_modules)}"
        )
    if cfg.train.workers > 1:  # 0 (auto) steps aside on its own: for client_batch, a GPU, no fork
        if cfg.train.client_batch != 1:
            errs.append(
                f"train.workers: {cfg.train.workers} forked workers and "
                f"train.client_batch={cfg.train.client_batch} "
                "(fused clients) exclude each other; set one of them to 1 (or workers to 0, auto)"
            )
        if cfg.train.device == "cuda":
            errs.append(
                "train.workers: forked workers need train.device='cpu' (a CUDA context does not survive fork); "
                "on a GPU use train.client_batch, or workers 0 (auto) or 1"
            )
        if "fork" not in multiprocessing.get_all_start_methods():
            errs.append("train.workers: this platform has no 'fork' start method; allowed here: 0 (auto) or 1")
    if cfg.data.source == "local" and not cfg.data.data_dir:
        errs.append("data.data_dir: source='local' needs a folder")
    name = cfg.model.name
    if name.startswith("embedded:") and name not in EMBEDDED_MODELS:
        errs.append(
            f"model.name: {short(name)} is not an embedded model; embedded models: {', '.join(EMBEDDED_MODELS)}"
        )
    if name.startswith("random:") and name not in RANDOM_MODELS:
        errs.append(f"model.name: {short(name)} is not a built-in random model; choose {', '.join(RANDOM_MODELS)}")
    errs.extend(_planner_checks(cfg.planner))
    errs.extend(_output_name_checks(cfg.output.name, cfg.output.dir))
    return errs


def _name_max(folder: str) -> int:
    """Longest file name (bytes) where ``folder`` (or its nearest existing parent) lives; 255 if unknown."""
    p = Path(folder or ".").absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        return int(os.pathconf(p, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _output_name_checks(name: str, folder: str) -> list[str]:
    """``output.name`` is one folder name inside ``output.dir``: never a path that leads out of it."""
    if name == "":  # the default: <task>-<strategy>-seed<seed>-<config hash>
        return []
    limit = _name_max(folder)
    allowed = f"allowed: one folder name inside output.dir (no / or \\ or NUL, not . or .., at most {limit} bytes)"
    why = None
    if not name.strip():
        why = "is blank"
    elif name in (".", ".."):
        why = "is not a folder name"
    elif "\0" in name:
        why = "contains a NUL character"
    elif "/" in name or "\\" in name or Path(name).is_absolute():
        why = "is a path, not one name"
    else:
        size = len(name.encode("utf-8", "surrogateescape"))
        if size > limit:
            why = f"is {size} bytes long"
    shown = f"{name[:40]!r}{'...' if len(name) > 40 else ''}"
    return [] if why is None else [f"output.name: {shown} {why}; {allowed}, or '' for the default name"]


def _first_of(problems: typing.Iterable[str]) -> list[str]:
    """The first problem with the entries of one list, and how many more there are (one line, not one per entry)."""
    found = list(problems)
    if len(found) > 1:
        return [f"{found[0]} (and {len(found) - 1} more entries of that list)"]
    return found


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _planner_checks(pl: PlannerConfig) -> list[str]:
    """List-valued planner keys: theta (count and signs), pilot lists, k starts."""
    errs: list[str] = []
    if pl.theta:
        if not all(_is_number(v) and math.isfinite(v) for v in pl.theta):
            errs.append(f"planner.theta: expected 4 finite numbers (theta1..theta4), got {short(pl.theta)}")
        elif len(pl.theta) != 4:
            errs.append(f"planner.theta: expected 4 numbers (theta1..theta4), got {len(pl.theta)}")
        else:
            t1, t2, t3, t4 = pl.theta
            if not t1 > 0:
                errs.append(
                    f"planner.theta: theta1 = {short(t1)} must be > 0 (else the target is never reachable, eq. 21)"
                )
            if t2 < 0 or t3 < 0:
                errs.append(f"planner.theta: theta2 and theta3 must be >= 0, got {short(t2)} and {short(t3)}")
            if not t4 > 0:
                errs.append(f"planner.theta: theta4 = {short(t4)} must be > 0 (it is 4(F(X0)-F*)/(eta H))")
    if len(pl.pilot_q) != len(pl.pilot_k_frac):
        errs.append(
            f"planner.pilot_q has {len(pl.pilot_q)} entries but planner.pilot_k_frac has "
            f"{len(pl.pilot_k_frac)}; they pair up, one per pilot run"
        )
    elif len(pl.pilot_q) < 4:
        errs.append(
            f"planner.pilot_q: eq. 22 has 4 unknowns, so at least 4 pilot runs are needed, got {len(pl.pilot_q)}"
        )
    for key in ("pilot_q", "pilot_k_frac", "k_starts"):
        errs += _first_of(
            f"planner.{key}[{i}]: {short(v)} is out of range; allowed (0, 1]"
            for i, v in enumerate(getattr(pl, key))
            if not (_is_number(v) and 0 < v <= 1)
        )
    if not pl.k_starts:
        errs.append("planner.k_starts: needs at least one start (fractions of r in (0, 1])")
    return errs


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value``; the value is read as TOML (bare words are strings)."""
    if "=" not in text:
        raise ConfigError([f"--set {short(text)}: expected section.key=value"])
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (ValueError, RecursionError):  # not TOML (TOMLDecodeError), or too many digits or brackets
        value = raw
    return key, value


def _merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in delta.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def collect(raw: dict[str, Any], overrides: typing.Sequence[str] = ()) -> tuple[ExperimentConfig, list[str]]:
    """Build a config from a raw TOML dict plus overrides; return it with every error found."""
    errors: list[str] = []
    raw = dict(raw)
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ConfigError as e:
            errors.extend(e.errors)
            continue
        parts = key.split(".")
        if len(parts) == 1:
            raw[parts[0]] = value
        elif len(parts) == 2:
            raw = _merge(raw, {parts[0]: {parts[1]: value}})
        else:
            errors.append(f"--set {short(text)}: keys are section.key, e.g. fl.rounds=20")
    sections: dict[str, Any] = {}
    seed = raw.pop("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        errors.append(f"seed: expected an integer >= 0, got {short(seed)}")
        seed = 0
    for key, value in raw.items():
        if key not in SECTIONS:
            errors.append(
                f"{key}: unknown section{did_you_mean(key, ['seed', *SECTIONS])}; allowed: seed, {', '.join(SECTIONS)}"
            )
            continue
        sections[key] = _build_section(key, SECTIONS[key], value, errors)
    cfg = ExperimentConfig(seed=seed, **sections)
    errors.extend(_cross_checks(cfg))
    return cfg, errors


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A config (or suite, ``what``) file as a dict: :func:`fedsketch.config.readers.read_toml` (UTF-8, the
    line of a syntax error), every problem a :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError([f"{path}: {what} not found"])
    try:
        return _read_toml_file(path)
    except ReadError as e:
        raise ConfigError([str(e)]) from None


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> ExperimentConfig:
    """Load and validate; raise :class:`ConfigError` listing every problem."""
    raw = read_toml(path) if path is not None else {}
    cfg, errors = collect(raw, overrides)
    if errors:
        raise ConfigError(errors)
    return cfg


def validate_file(path: str | Path, overrides: typing.Sequence[str] = ()) -> list[str]:
    """Every error in a config file (empty list when valid)."""
    try:
        raw = read_toml(path)
    except ConfigError as e:
        return e.errors
    return collect(raw, overrides)[1]
