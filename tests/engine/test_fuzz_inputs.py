"""Fuzzing the inputs of the command line: whatever a user gives, a command ends with exit 0 or 2 (bad
input), one short plain-text message, no traceback, and writes nothing outside its output folder.

Drawn by hypothesis (bounded ``max_examples``, no deadline, so it fits CI):

- config overrides (``--set section.key=value``): every key of the config with values of every type
  (the documented bounds and just outside them, non-finite numbers, huge integers, unicode text,
  lists, nesting), unknown keys and malformed ``--set`` text, checked under ``validate`` and, when
  that accepts, a ``run`` of zero rounds on the tiny random model;
- corrupted input files (truncated, bytes inserted or replaced, another encoding, values of the
  wrong type): a config TOML, a profile CSV and a theta JSON (``validate`` and a zero-round ``run``),
  a pilots JSON (``estimate --pilots``), and a run's ``metrics.jsonl`` (``report``).

Commands run in process through typer's ``CliRunner`` with ``HF_HUB_OFFLINE=1`` (a string that looks
like a hub id fails at once instead of probing the network) and the working directory inside the
snapshot, so a stray relative write would be caught.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fedsketch.cli import app
from fedsketch.config import SECTIONS

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"
ENV = {"HF_HUB_OFFLINE": "1", "FEDSKETCH_DEBUG": "0"}
#: the error lines a failing command may print (a header and the problem; ``run`` also names its folder)
MAX_ERROR_LINES = 3
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
FILES = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

#: keys not drawn, and why
NOT_FUZZED = {
    "model.cache_dir": "where the tokenizer cache lives: written there by design, outside the run folder",
    "output.dir": "the output location (its checks are the output-path tests')",
    "output.name": "the output location (its checks are the output-path tests')",
    "train.threads": "sets torch's process-wide thread count for the rest of the session",
}
#: keys fuzzed under ``validate`` only: a zero-round run of a valid value would be slow, not wrong
VALIDATE_ONLY = {
    "fl.rounds": "a valid count trains that many rounds",
    "eval.num_samples": "0 scores the whole test set",
    "model.name": "the embedded model takes seconds to load",
    "data.task": "siqa parses 33,410 questions",
}


def _fields() -> dict[str, tuple[type, dict[str, typing.Any]]]:
    out = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            if key not in NOT_FUZZED:
                out[key] = (hints[f.name], dict(f.metadata))
    return out


FIELDS = _fields()


def toml_literal(v: typing.Any) -> str:
    """``v`` as a TOML value for ``--set``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else "inf" if v == math.inf else "-inf" if v == -math.inf else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_literal(x) for x in v) + "]"
    raise AssertionError(v)


SCALARS = st.one_of(
    st.integers(-3, 10),
    st.integers(-(10**40), 10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
)
ANY_VALUE = st.one_of(SCALARS, st.lists(SCALARS, max_size=5), st.lists(st.lists(SCALARS, max_size=2), max_size=2))


@st.composite
def value_for(draw: st.DrawFn, key: str) -> typing.Any:
    """A value for ``key``: near its documented range or choices most of the time, anything otherwise."""
    typ, meta = FIELDS[key]
    near: list[typing.Any] = []
    if meta.get("range"):
        lo, hi = meta["range"]
        near += [lo, math.inf, -math.inf, math.nan, (lo - 1) if typ is int else math.nextafter(lo, -math.inf)]
        if hi != math.inf:
            near += [hi, (hi + 1) if typ is int else math.nextafter(hi, math.inf), (lo + hi) / 2]
        else:
            near += [lo + 1, 10**30 if typ is int else 1e300]
        if typ is int:
            near = [int(x) if isinstance(x, (int, float)) and math.isfinite(x) else x for x in near]
    if meta.get("choices"):
        near += list(meta["choices"]) + [c.upper() for c in meta["choices"] if isinstance(c, str)]
    if key == "eval.num_samples":
        return draw(st.sampled_from([-1, 1, 2, 3, 10**30, 2.5, "2", math.nan]))
    if key == "model.name":
        return draw(st.sampled_from(["random:tiny-llama", "random:x", "embedded:gpt", "a/b/c", "/", "./nope",
                                     "someone/model", "ünï/cödé", ""]))
    if near and draw(st.integers(0, 3)):  # 3 in 4 near the documented range or choices
        return draw(st.sampled_from(near))
    return draw(ANY_VALUE)


@st.composite
def override(draw: st.DrawFn) -> tuple[str, str | None]:
    """(the ``--set`` text, the key it sets when it is a known key)."""
    kind = draw(st.sampled_from(["known", "known", "known", "unknown", "raw"]))
    if kind == "known":
        key = draw(st.sampled_from(sorted(FIELDS)))
        return f"{key}={toml_literal(draw(value_for(key)))}", key
    if kind == "unknown":
        section = draw(st.sampled_from([*SECTIONS, "dta", "ünï", ""]))
        name = draw(st.text(st.characters(codec="utf-8", exclude_characters="=\n\r"), max_size=10))
        return f"{section}.{name}={toml_literal(draw(SCALARS))}", None
    return draw(st.text(max_size=30)), None


# --------------------------------------------------------------------------- the harness


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d == skip or skip in d.parents:
            dirnames[:] = []
            continue
        for name in filenames:
            st_ = (d / name).stat()
            out[str(d / name)] = (st_.st_size, st_.st_mtime_ns)
    return out


class Harness:
    """Runs commands with the working directory in ``root``; everything but ``root/out`` is watched."""

    def __init__(self, root: Path, cache: Path) -> None:
        self.root, self.out, self.cache = root, root / "out", cache

    def base_sets(self) -> list[str]:
        return [f"output.dir='{self.out}'", f"model.cache_dir='{self.cache}'", "fl.rounds=0", "eval.num_samples=2",
                "output.plot=false", "output.progress=false"]

    def invoke(self, args: list[str], codes: tuple[int, ...] = (0, 2)) -> typing.Any:
        before = _snapshot(self.root, self.out)
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            res = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
        finally:
            os.chdir(cwd)
        shown = f"fedsketch {' '.join(map(str, args))}\n--- output:\n{res.output}"
        event(f"{args[0]} exit {res.exit_code}")  # --hypothesis-show-statistics: how often each command passed
        assert res.exit_code in codes, shown
        assert res.exception is None or isinstance(res.exception, SystemExit), shown
        assert "Traceback" not in res.output, shown
        if res.exit_code:
            errors = [ln for ln in res.stderr.splitlines() if ln.strip()]
            assert len(errors) <= MAX_ERROR_LINES, shown
        after = _snapshot(self.root, self.out)
        assert after == before, (shown, set(after) ^ set(before))
        return res

    def validate_and_run(self, config: Path, sets: list[str], run: bool = True) -> None:
        """``validate``, then a zero-round ``run`` of the same config (the drawn settings last, so they win)."""
        s = [x for v in [*self.base_sets(), *sets] for x in ("--set", v)]
        res = self.invoke(["validate", config, *s])
        if run and res.exit_code == 0:
            self.invoke(["run", config, *s])
        elif run:  # what validate refuses, run refuses too, before any model loads
            assert self.invoke(["run", config, *s]).exit_code == 2


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, Path]:
    """A root folder for the commands and a shared model cache outside it."""
    return tmp_path_factory.mktemp("fuzz"), tmp_path_factory.mktemp("cache")


def _fresh(workspace: tuple[Path, Path]) -> Harness:
    root, cache = workspace
    for child in root.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    (root / "in").mkdir()
    return Harness(root, cache)


# --------------------------------------------------------------------------- overrides


FLOAT_KEYS = sorted(k for k, (typ, _) in FIELDS.items() if typ is float)


def _with_non_finite_examples(test: typing.Callable[..., None]) -> typing.Callable[..., None]:
    """Besides the drawn ones, every float key at inf, -inf and nan (refused at once, so cheap): a run
    that would break on one of them (today ``network.step_seconds`` and ``network.payload_mbit`` at zero
    rounds) is found whichever keys the draws happen to visit."""
    for key in FLOAT_KEYS:
        for v in ("inf", "-inf", "nan"):
            test = example(first=(f"{key}={v}", key), second=None)(test)
    return test


@_with_non_finite_examples
@FUZZ
@given(first=override(), second=st.one_of(st.none(), st.none(), st.none(), override()))
def test_fuzz_overrides(
    workspace: tuple[Path, Path], first: tuple[str, str | None], second: tuple[str, str | None] | None
) -> None:
    h = _fresh(workspace)
    if second is None:
        h.validate_and_run(TINY, [first[0]], run=first[1] not in VALIDATE_ONLY)
        return
    # two settings at once may give two problems, two lines each: validate only, with room for both
    texts = [first[0], second[0]]
    res = CliRunner().invoke(app, ["validate", str(TINY), *[x for t in texts for x in ("--set", t)]], env=ENV)
    assert res.exit_code in (0, 2) and "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) <= 1 + 2 * len(texts), res.output


# --------------------------------------------------------------------------- corrupted files


@st.composite
def corrupt(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, with bytes inserted or replaced, or in another encoding."""
    how = draw(st.sampled_from(["none", "benign", "benign", "truncate", "insert", "replace", "encoding", "empty",
                                "random"]))
    if how == "none":
        return data
    if how == "benign":  # what editors do: a byte-order mark, CRLF line ends, a blank line at the end
        return draw(st.sampled_from([b"\xef\xbb\xbf" + data, data.replace(b"\n", b"\r\n"), data + b"\n\n"]))
    if how == "empty":
        return b""
    if how == "random":
        return draw(st.binary(max_size=200))
    if how == "encoding":
        text = data.decode() + draw(st.text(st.characters(min_codepoint=0x80, max_codepoint=0x2FF), min_size=1,
                                            max_size=3))
        return text.encode(draw(st.sampled_from(["utf-16", "latin-1", "cp1252"])), errors="replace")
    at = draw(st.integers(0, max(len(data) - 1, 0)))
    if how == "truncate":
        return data[:at]
    junk = draw(st.one_of(st.binary(min_size=1, max_size=4), st.sampled_from([b"\xff", b"\x00", b"\n", b'"', b",",
                                                                               b"[", b"}", b"=", b"nan", b"-"])))
    if how == "insert":
        return data[:at] + junk + data[at:]
    return data[:at] + junk + data[at + len(junk):]


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))


@st.composite
def retyped_json(draw: st.DrawFn, value: typing.Any) -> typing.Any:
    """``value`` with one entry (at any depth) replaced by a value of a drawn type."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: draw(retyped_json(value[key]))}
    if isinstance(value, list) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], draw(retyped_json(value[i])), *value[i + 1:]]
    return draw(st.one_of(JSON_LEAF, st.lists(JSON_LEAF, max_size=4), st.dictionaries(st.text(max_size=4), JSON_LEAF,
                                                                                           max_size=3)))


@st.composite
def json_file(draw: st.DrawFn, good: typing.Any) -> bytes:
    data = json.dumps(good, indent=1).encode()
    if draw(st.booleans()):
        return json.dumps(draw(retyped_json(good))).encode()
    return draw(corrupt(data))


GOOD_CONFIG = TINY.read_bytes() + b'\n[network]\nprofile = "lognormal"\nbandwidth_mbps = 50.0\n'
GOOD_CSV = b"client,tau_cp,tau_cm,tau_0\n0,1.5,2,0.1\n1,2,3,\n2,3,1,0\n3,1,1,0.5\n"
GOOD_THETA = {"theta": [1.0, 0.1, 0.1, 10.0], "ok": True, "problems": [],
              "pilots": [{"q": 1.0, "k": 8, "rounds": 5.0, "replicates": [4.0, 6.0]}, {"q": 0.5, "k": 8, "rounds": 8.0},
                         {"q": 1.0, "k": 2, "rounds": 7.0}, {"q": 0.25, "k": 4, "rounds": 20.0}]}


@FILES
@given(data=st.data())
def test_fuzz_config_file(workspace: tuple[Path, Path], data: st.DataObject) -> None:
    h = _fresh(workspace)
    cfg = h.root / "in" / "c.toml"
    cfg.write_bytes(data.draw(corrupt(GOOD_CONFIG)))
    h.validate_and_run(cfg, [])


@FILES
@given(data=st.data())
def test_fuzz_profile_csv(workspace: tuple[Path, Path], data: st.DataObject) -> None:
    h = _fresh(workspace)
    f = h.root / "in" / "p.csv"
    f.write_bytes(data.draw(corrupt(GOOD_CSV)))
    h.validate_and_run(TINY, ["network.profile='csv'", f"network.profile_csv='{f}'"])


@FILES
@given(data=st.data())
def test_fuzz_theta_file(workspace: tuple[Path, Path], data: st.DataObject) -> None:
    h = _fresh(workspace)
    f = h.root / "in" / "t.json"
    f.write_bytes(data.draw(json_file(GOOD_THETA)))
    h.validate_and_run(TINY, [f"planner.theta_file='{f}'"])


@FILES
@given(data=st.data())
def test_fuzz_pilots_file(workspace: tuple[Path, Path], data: st.DataObject) -> None:
    h = _fresh(workspace)
    f = h.root / "in" / "t.json"
    f.write_bytes(data.draw(json_file(GOOD_THETA)))
    res = h.invoke(["estimate", TINY, "--pilots", f, "--set", f"output.dir='{h.out}'"], codes=(0, 1, 2))
    if res.exit_code == 1:  # an estimate that ran on well-formed pilots and failed its own checks, not a bad file
        assert f.name not in res.stderr, res.output


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    res = CliRunner().invoke(app, ["run", str(TINY), "--set", f"output.dir='{out}'", "--set", "output.name='r'",
                                   "--set", "output.plot=false", "--set", "fl.rounds=2"])
    assert res.exit_code == 0, res.output
    return out / "r"


@FILES
@given(data=st.data())
def test_fuzz_metrics_jsonl(workspace: tuple[Path, Path], finished_run: Path, data: st.DataObject) -> None:
    h = _fresh(workspace)
    run = h.out / "r"
    shutil.copytree(finished_run, run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = json.dumps(data.draw(retyped_json(json.loads(lines[i]))))
        text = ("\n".join(lines) + "\n").encode()
    else:
        text = data.draw(corrupt(("\n".join(lines) + "\n").encode()))
    (run / "metrics.jsonl").write_bytes(text)
    h.invoke(["report", run])
