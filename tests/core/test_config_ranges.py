"""The documented ranges are what the code accepts, derived from the documentation itself.

For every numeric key, the allowed column of :func:`fedsketch.config.describe` (what ``fedsketch
defaults`` and the README print, ``[lo, hi]`` or ``[lo, inf)``) is parsed back, and

- each documented bound (for ``[lo, inf)``: a large finite value) is accepted by the config's
  validation and by the preflight of a run (:func:`fedsketch.preflight.check_inputs`: the data, the
  client split, the model's shape, the output folder), on ``configs/tiny.toml`` plus the companion
  settings in :data:`COMPANIONS` where the bound only makes sense with other keys (a data set large
  enough for 100000 clients, a model with that many layers);
- the values just outside (the next float, the next integer), ``inf``, ``-inf`` and ``nan`` are
  refused by ``fedsketch validate`` with exit 2 and a message naming the key.

The README's configuration reference is checked to be :func:`describe` row for row.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsketch.cli import app
from fedsketch.config import SECTIONS, collect, describe, read_toml
from fedsketch.preflight import check_inputs

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"
#: what "[lo, inf)" is tested with: a large finite value (10^5 clients need a data set of 10^5 examples)
BIG_INT, BIG_FLOAT = 100_000, 1e12
_RANGE = re.compile(r"^\[(?P<lo>[^,]+), (?P<hi>[^\]\)]+)(?P<close>[\]\)])$")


def _types() -> dict[str, str]:
    return {f"{s}.{f.name}": typing.get_type_hints(cls)[f.name].__name__ for s, cls in SECTIONS.items()
            for f in dataclasses.fields(cls)}


def documented_ranges() -> list[tuple[str, bool, float, float | None]]:
    """(key, is_int, lo, hi or None for no upper bound), parsed from describe()'s allowed column."""
    types, out = _types(), []
    for key, _, allowed, _ in describe():
        m = _RANGE.match(allowed)
        if m is None:
            continue
        is_int = types[key] == "int"
        conv = int if is_int else float
        out.append((key, is_int, conv(float(m["lo"])), None if m["hi"] == "inf" else conv(float(m["hi"]))))
    return out


RANGES = documented_ranges()


def test_no_upper_bound_is_written_as_open() -> None:
    """inf is never allowed, so "no upper bound" reads ``[lo, inf)``, never ``[lo, inf]``."""
    closed = [(k, a) for k, _, a, _ in describe() if a.endswith("inf]")]
    assert not closed, closed


def test_every_number_has_a_documented_range() -> None:
    numeric = {k for k, t in _types().items() if t in ("int", "float")}
    assert {k for k, *_ in RANGES} == numeric


def test_the_readme_reference_is_describe_row_for_row() -> None:
    readme = (REPO / "README.md").read_text()
    rows = [f"| `{k}` | `{d}` | {a} | {doc} |" for k, d, a, doc in describe()]
    missing = [r for r in rows if r not in readme.splitlines()]
    assert not missing, missing


@pytest.fixture(scope="module")
def big_data(tmp_path_factory) -> Path:
    """A local ARC-Easy folder of BIG_INT train and test questions (the shipped sets hold at most 33410)."""
    folder = tmp_path_factory.mktemp("data")
    (folder / "ARC-Easy").mkdir()
    rec = {"instruction": "Please choose the correct answer to the question: q\n\nAnswer1: a Answer2: b\n\n"
                          "Answer format: answer1/answer2", "input": "", "output": "the correct answer is answer1",
           "answer": "answer1"}
    text = json.dumps([rec] * BIG_INT)
    for split in ("train", "test"):
        (folder / "ARC-Easy" / f"{split}.json").write_text(text)
    return folder


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory) -> Path:
    """A model folder whose config.json declares BIG_INT layers (the preflight reads only that)."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": BIG_INT}))
    return folder


def _big_data(folder: Path) -> list[str]:
    return ["data.source='local'", f"data.data_dir='{folder}'", "data.partition='iid'", "data.min_client_size=1",
            "data.max_train_examples=0"]


#: (key, value) -> companion settings, given the fixtures; why each is needed is in its comment
COMPANIONS: dict[tuple[str, int | float], typing.Callable[[Path, Path], list[str]]] = {
    # N clients need N x min_client_size train examples
    ("data.num_clients", 100_000): lambda data, model: _big_data(data),
    ("data.min_client_size", BIG_INT): lambda data, model: [*_big_data(data), "data.num_clients=1"],
    # at most data.num_clients
    ("fl.clients_per_round", BIG_INT): lambda data, model: [*_big_data(data), f"data.num_clients={BIG_INT}"],
    # at most the test set
    ("eval.num_samples", BIG_INT): lambda data, model: _big_data(data),
    # at most the model's layers
    ("model.num_layers", BIG_INT): lambda data, model: [f"model.name='{model}'"],
}


def _cases() -> list[tuple[str, int | float]]:
    out = []
    for key, is_int, lo, hi in RANGES:
        out.append((key, lo))
        out.append((key, hi if hi is not None else (BIG_INT if is_int else BIG_FLOAT)))
    return out


def _literal(v: int | float) -> str:
    return repr(v) if not isinstance(v, float) or math.isfinite(v) else {math.inf: "inf", -math.inf: "-inf"}.get(
        v, "nan")


@pytest.mark.parametrize(("key", "value"), _cases(), ids=[f"{k}={v}" for k, v in _cases()])
def test_documented_bound_is_accepted(key: str, value: int | float, big_data: Path, deep_model: Path,
                                      tmp_path: Path) -> None:
    extra = COMPANIONS.get((key, value), lambda d, m: [])(big_data, deep_model)
    cfg, errors = collect(read_toml(TINY), [f"output.dir='{tmp_path}'", *extra, f"{key}={_literal(value)}"])
    assert errors == [], errors
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) == value
    assert check_inputs(cfg) == []


def _outside() -> list[tuple[str, str]]:
    out = []
    for key, is_int, lo, hi in RANGES:
        out.append((key, _literal(lo - 1 if is_int else math.nextafter(lo, -math.inf))))
        if hi is not None:
            out.append((key, _literal(hi + 1 if is_int else math.nextafter(hi, math.inf))))
        if not is_int:
            out += [(key, "inf"), (key, "-inf"), (key, "nan")]
        else:
            out.append((key, "inf"))  # a float where an integer belongs
    return out


@pytest.mark.parametrize(("key", "value"), _outside(), ids=[f"{k}={v}" for k, v in _outside()])
def test_just_outside_is_refused_naming_the_key(key: str, value: str) -> None:
    res = CliRunner().invoke(app, ["validate", str(TINY), "--set", f"{key}={value}"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[1].startswith(f"  - {key}: "), res.output
    assert "Traceback" not in res.output
