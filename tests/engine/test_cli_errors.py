"""Every user error: its documented exit code, one short plain-text message, no traceback.

Table-driven: each case builds its input in a temporary folder, runs the commands that must
reject it (``validate`` catches, before any model loads, what ``run`` and ``plan`` would reject
later) and checks the exit code, a message fragment, the message length and the absence of a
traceback. Exit codes (``fedsketch.errors``): 0 ok, 1 a failed run, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from fedsketch.cli import app
from fedsketch.records import read_metrics

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"
PAPER = REPO / "configs" / "paper.toml"


@dataclass
class Case:
    id: str
    commands: tuple[str, ...]  # which commands must reject it: validate, run, plan
    fragment: str
    sets: list[str] = field(default_factory=list)
    setup: Callable[[Path], list[str]] | None = None  # writes files, returns extra --set overrides
    config: Callable[[Path], Path] | None = None  # the config file (default: tiny.toml)
    code: int = 2


def _csv(rows: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "p.csv").write_text("client,tau_cp,tau_cm\n" + rows)
        return ["network.profile='csv'", f"network.profile_csv='{tmp / 'p.csv'}'"]
    return setup


def _theta(text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "t.json").write_text(text)
        return [f"planner.theta_file='{tmp / 't.json'}'"]
    return setup


def _file(name: str, text: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_text(text)
        return tmp / name
    return make


def _local_data(tmp: Path) -> list[str]:
    (tmp / "d" / "ARC-Easy").mkdir(parents=True)
    (tmp / "d" / "ARC-Easy" / "train.json").write_text("[]")
    (tmp / "d" / "ARC-Easy" / "test.json").write_text('[{"instruction": ')
    return ["data.source='local'", f"data.data_dir='{tmp / 'd'}'"]


def _output_is_file(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("x")
    return [f"output.dir='{tmp / 'afile' / 'runs'}'"]


VR, VRP = ("validate", "run"), ("validate", "run", "plan")
PLANS = ["fl.sampling='optimized'", "fl.ranks='optimized'"]  # a run that asks the planner, so reads theta
CASES = [
    Case("config-missing", VR, "config file not found", config=lambda t: t / "nope.toml"),
    Case("config-brackets-in-name", VR, "[old].toml: config file not found", config=lambda t: t / "[old].toml"),
    Case("config-not-toml", VR, "not valid TOML", config=_file("bad.toml", "[fl\nrounds = 2\n")),
    Case("unknown-key", VR, "fl.rouns: unknown key (did you mean rounds", sets=["fl.rouns=3"]),
    Case("unknown-section", VR, "unknown section (did you mean data", sets=["dta.task='arc_e'"]),
    Case("out-of-range", VR, "fl.q: 7.0 is out of range", sets=["fl.q=7"]),
    Case("brackets-in-value", VR, "fl.sampling: '[/x]' is not allowed", sets=["fl.sampling='[/x]'"]),
    Case("data-folder-missing", VR, "data.data_dir: folder", sets=["data.source='local'", "data.data_dir='/nonexistent/d'"]),
    Case("data-file-bad-json", VR, "test set", setup=_local_data),
    Case("num-samples-too-large", VR, "eval.num_samples: 5000 is larger than the 'arc_e' test set (2376",
         sets=["eval.num_samples=5000"]),
    Case("model-path-missing", VR, "local folder ./no-such-model does not exist", sets=["model.name='./no-such-model'"]),
    Case("model-embedded-unknown", VR, "embedded models: embedded:smollm2-135m-instruct",
         sets=["model.name='embedded:gpt5'"]),
    Case("profile-csv-missing", VRP, "network.profile_csv: file not found",
         sets=["network.profile='csv'", "network.profile_csv='/nonexistent/p.csv'"]),
    Case("profile-csv-duplicate", VRP, "client 1 appears twice", setup=_csv("0,1,1\n1,1,1\n1,24,1\n2,1,1\n3,1,1\n")),
    Case("profile-csv-missing-row", VRP, "no row for client(s) [3]", setup=_csv("0,1,1\n1,1,1\n2,1,1\n")),
    Case("profile-csv-extra-row", VRP, "client 4 is not one of", setup=_csv("0,1,1\n1,1,1\n2,1,1\n3,1,1\n4,1,1\n")),
    Case("profile-csv-inf", VRP, "tau_cp = 'inf' is not finite", setup=_csv("0,1,1\n1,inf,1\n2,1,1\n3,1,1\n")),
    Case("profile-csv-nonpositive", VRP, "tau_cm = 0.0 must be > 0", setup=_csv("0,1,1\n1,1,0\n2,1,1\n3,1,1\n")),
    Case("profile-csv-not-number", VRP, "tau_cp must be a number", setup=_csv("0,1,1\n1,fast,1\n2,1,1\n3,1,1\n")),
    Case("explicit-times-inf", VRP, "network.tau_cp[1] (client 1): inf",
         sets=["network.profile='explicit'", "network.tau_cp=[1.0, inf, 1.0, 1.0]", "network.tau_cm=[1.0, 1.0, 1.0, 1.0]"]),
    Case("theta-file-missing", VRP, "planner.theta_file: file not found",
         sets=[*PLANS, "planner.theta_file='/nonexistent/t.json'"]),
    Case("theta-file-bad-json", VRP, "not valid JSON", setup=_theta("{theta: 1"), sets=PLANS),
    Case("theta-file-number", VRP, "expected a JSON object", setup=_theta("5"), sets=PLANS),
    Case("theta-file-string", VRP, "expected a JSON object", setup=_theta('"theta"'), sets=PLANS),
    Case("theta-file-three-numbers", VRP, "'theta' must be a list of 4 finite numbers",
         setup=_theta('{"theta": [1, 2, 3]}'), sets=PLANS),
    Case("theta-file-bad-sign", VRP, "theta4 must be > 0", setup=_theta('{"theta": [1, 0.1, 0.1, -5]}'), sets=PLANS),
    Case("theta-count", VRP, "planner.theta: expected 4 numbers", sets=["planner.theta=[1.0, 2.0]"]),
    Case("theta-sign", VRP, "theta1 = -1.0 must be > 0", sets=["planner.theta=[-1.0, 0.1, 0.1, 10.0]"]),
    Case("theta-none-for-optimized", VRP, "no theta", sets=["fl.sampling='optimized'", "fl.ranks='optimized'"]),
    Case("pilot-lengths", VRP, "they pair up", sets=["planner.pilot_q=[1.0, 0.5, 0.25, 1.0, 0.5]"]),
    Case("pilot-too-few", VRP, "at least 4 pilot runs", sets=["planner.pilot_q=[1.0, 0.5]", "planner.pilot_k_frac=[1.0, 0.5]"]),
    Case("k-starts-negative", VRP, "planner.k_starts[1]: -0.5 is out of range", sets=["planner.k_starts=[1.0, -0.5]"]),
    Case("output-dir-is-file", VRP, "is a file, not a folder", setup=_output_is_file),
    Case("output-dir-unwritable", VRP, "output.dir: cannot write in /proc", sets=["output.dir='/proc/fedsketch-test/runs'"]),
]


def _invoke(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(app, args, env=env)


def _check(res, code: int, fragment: str, max_lines: int = 6) -> None:
    out = res.output
    assert res.exit_code == code, out
    assert fragment in out, out
    assert "Traceback" not in out and (res.exception is None or isinstance(res.exception, SystemExit)), out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) <= max_lines, out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    extra = case.setup(tmp_path) if case.setup else []
    config = case.config(tmp_path) if case.config else TINY
    sets = [f"output.dir='{tmp_path / 'runs'}'", *extra, *case.sets]  # later --set wins
    args = [x for s in sets for x in ("--set", s)]
    for command in case.commands:
        t0 = time.perf_counter()
        _check(_invoke([command, str(config), *args]), case.code, case.fragment)
        # rejected before any model loads (the tiny model alone takes seconds to build)
        assert time.perf_counter() - t0 < 5, f"{command} took {time.perf_counter() - t0:.1f} s"


def test_a_theta_file_that_nothing_plans_with_is_not_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/paper.toml plans nothing (uniform q and k) yet names planner.theta_file, which `fedsketch estimate`
    writes later: `validate` and `run` go on without it; `validate --plan`, `plan` and a run that plans ask for it."""
    import fedsketch.runner

    missing = tmp_path / "theta-paper.json"
    sets = [f"planner.theta_file='{missing}'", "model.name='random:tiny-llama'", f"output.dir='{tmp_path / 'runs'}'"]
    args = [x for s in sets for x in ("--set", s)]
    res = _invoke(["validate", str(PAPER), *args])
    assert res.exit_code == 0 and f"{PAPER}: OK" in res.output, res.output

    def reached(cfg, **kw):
        raise RuntimeError("the run started")

    monkeypatch.setattr(fedsketch.runner, "run_experiment", reached)  # past the preflight is all this needs
    res = _invoke(["run", str(PAPER), *args])
    assert res.exit_code == 1 and "the run started" in res.output and "planner." not in res.output, res.output
    for command in (["validate", "--plan"], ["plan"]):
        _check(_invoke([*command, str(PAPER), *args]), 2, f"planner.theta_file: file not found: {missing}")
    for command in ("validate", "run"):
        _check(_invoke([command, str(PAPER), *args, "--set", "fl.ranks='optimized'"]), 2,
               "planner.theta_file: file not found")


def test_hub_model_offline_fails_fast_with_one_message(tmp_path: Path) -> None:
    """An unreachable hub (a closed local port stands in for no internet) fails within 5 s, once."""
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}
    for command in ("validate", "run"):
        t0 = time.perf_counter()
        res = _invoke([command, str(TINY), "--set", "model.name='someone/no-such-model'",
                       "--set", f"output.dir='{tmp_path}'"], env=env)
        took = time.perf_counter() - t0
        _check(res, 2, "could not reach the Hugging Face hub", max_lines=3)
        assert "embedded:smollm2-135m-instruct" in res.output and "local folder" in res.output
        assert res.output.count("could not reach") == 1 and took < 5, (took, res.output)


def test_hub_model_offline_in_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model loader itself (not only the preflight) fails fast offline with the same message."""
    from fedsketch.config import load_config
    from fedsketch.engine.model import ModelError, load_base_model

    import transformers  # noqa: F401 - its import time is not the loader's

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="could not reach the Hugging Face hub"):
        load_base_model(load_config(overrides=["model.name='someone/no-such-model'"]).model)
    assert time.perf_counter() - t0 < 5


def _suite(tmp: Path, body: str) -> Path:
    p = tmp / "s.toml"
    p.write_text(f'base = "{TINY}"\ntarget = 0.5\n' + body)
    return p


@pytest.mark.parametrize(("body", "fragment", "count"), [
    ('[[strategy]]\nname = "a"\nsets = ["fl.q=0.5"]\n', "strategy 'a': unknown key 'sets' (did you mean set?)", 1),
    ('tagret = 0.6\n[[strategy]]\nname = "a"\n', "unknown key 'tagret' (did you mean target?)", 1),
    ('set = "fl.rounds=3"\n[[strategy]]\nname = "a"\n', "set must be a list", 1),
], ids=["strategy-typo", "top-level-typo", "set-as-string"])
def test_suite_errors(tmp_path: Path, body: str, fragment: str, count: int) -> None:
    res = _invoke(["compare", str(_suite(tmp_path, body)), "--output", str(tmp_path / "out")])
    _check(res, 2, fragment)
    assert res.output.count("  - ") == count, res.output  # one error, not one per character
    assert not (tmp_path / "out" / "runs").exists()  # nothing ran


@pytest.mark.parametrize(("body", "fragment", "count"), [
    ('[[strategy]]\nname = "a"\nsets = ["fl.q=0.5"]\n', "strategy 'a': unknown key 'sets' (did you mean set?)", 1),
    ('[[strategy]]\nname = "a"\n[[strategy]]\nname = "b"\nset = ["fl.q=7"]\n', "strategy 'b': fl.q: 7.0 is out of range", 1),
    ('[[strategy]]\nname = "a"\n[[strategy]]\nname = "b"\nset = ["planner.theta_file=\'/nonexistent/t.json\'", '
     '"fl.sampling=\'optimized\'"]\n',
     "strategy 'b': planner.theta_file: file not found: /nonexistent/t.json (`fedsketch estimate", 1),
    ('set = ["planner.theta_file=\'/nonexistent/t.json\'", "fl.ranks=\'optimized\'"]\n[[strategy]]\nname = "a"\n'
     '[[strategy]]\nname = "b"\n',
     "every strategy: planner.theta_file: file not found", 1),
], ids=["strategy-typo", "strategy-value", "strategy-file", "shared-file-once"])
def test_validate_checks_a_suite_as_compare_runs_it(tmp_path: Path, body: str, fragment: str, count: int) -> None:
    """`fedsketch validate SUITE`: the suite's keys, then each strategy's config and the files it names."""
    res = _invoke(["validate", str(_suite(tmp_path, f'output = "{tmp_path / "out"}"\n' + body))])
    _check(res, 2, fragment)
    assert res.output.count("  - ") == count, res.output


def test_validate_a_good_suite(tmp_path: Path) -> None:
    res = _invoke(["validate", str(_suite(tmp_path, f'output = "{tmp_path / "out"}"\nseeds = [0, 1]\n'
                                                    '[[strategy]]\nname = "a"\n[[strategy]]\nname = "b"\n'))])
    assert res.exit_code == 0 and "OK (suite 's': 2 strategies x 2 seeds)" in res.output, res.output


def test_other_cli_inputs(tmp_path: Path) -> None:
    _check(_invoke(["run", str(TINY), "--backend", "bogus"]), 2, "--backend: 'bogus' is not allowed")
    _check(_invoke(["compare", str(REPO / "suites" / "smoke.toml"), "--seeds", "0,x"]), 2, "--seeds must be")
    _check(_invoke(["report", str(tmp_path / "nope")]), 2, "folder not found")
    _check(_invoke(["compare", str(tmp_path / "[none].toml")]), 2, "[none].toml: suite file not found")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from fedsketch.errors import InputError

    res = _invoke(["--debug", "report", str(tmp_path / "nope")])
    assert isinstance(res.exception, InputError)


# --------------------------------------------------------------------------- runs that start

def _run(tmp: Path, *sets: str, env: dict[str, str] | None = None):
    args = [x for s in (f"output.dir='{tmp}'", "output.name='r'", *sets) for x in ("--set", s)]
    return _invoke(["run", str(TINY), *args], env=env)


def test_checkpoint_mismatch_and_corruption(tmp_path: Path) -> None:
    from fedsketch.config import load_config
    from fedsketch.runner import run_experiment

    cfg = load_config(TINY, [f"output.dir='{tmp_path}'", "output.name='r'", "output.plot=false"])
    run_experiment(cfg, stop_after=1)
    res = _run(tmp_path, "output.plot=false", "train.lr=0.1", "fl.local_steps=3")
    _check(res, 2, "train.lr: 0.5 -> 0.1")
    assert "fl.local_steps: 2 -> 3" in res.output and "--fresh" in res.output
    blob = tmp_path / "r" / "checkpoint" / "state.safetensors"
    blob.write_bytes(blob.read_bytes()[:-3] + b"xyz")
    res = _run(tmp_path, "output.plot=false")
    _check(res, 2, f"{blob}: checksum mismatch")
    assert "--fresh" in res.output
    res = _run(tmp_path, "output.plot=false", "output.progress=false")  # still refused: the file was not touched
    assert res.exit_code == 2
    assert _invoke(["run", str(TINY), "--fresh", *[x for s in (f"output.dir='{tmp_path}'", "output.name='r'",
                                                               "output.plot=false") for x in ("--set", s)]]).exit_code == 0


def test_every_client_failing_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client fails, each with its own error: the run goes on to fl.rounds (or to fl.min_completion)."""
    from fedsketch.engine.runtime import TorchEngine

    def boom(self, state, client, *a, **k):
        raise RuntimeError(f"injected failure of client {client}")

    monkeypatch.setattr(TorchEngine, "train_client", boom)
    _check(_run(tmp_path, "output.plot=false"), 1, "every sampled client failed in every round", max_lines=8)
    assert [r.round for r in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [0, 1, 2]
    _check(_run(tmp_path, "output.plot=false", "output.name='abort'", "fl.min_completion=1", "fl.rounds=3"),
           1, "run failed: 1 consecutive rounds in which every sampled client failed", max_lines=8)


def test_the_same_error_in_every_client_stops_the_run_after_that_round(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every sampled client of round 1 fails with one error: exit 1 at once with that error in one line,
    instead of running the rounds left (fl.min_completion = 0, never); the records and checkpoint of round 1 stay."""
    from fedsketch import checkpoint
    from fedsketch.engine.runtime import TorchEngine

    error = "CUDA error: an illegal memory access was encountered"

    def boom(self, *a, **k):
        raise RuntimeError(error)

    monkeypatch.setattr(TorchEngine, "train_client", boom)
    res = _run(tmp_path, "output.plot=false", "fl.sampling='full'", "fl.rounds=4", "train.workers=1")
    _check(res, 1, f"run failed: every sampled client of round 1 failed with the same error: RuntimeError: {error}")
    assert sum(error in line for line in res.output.splitlines()) == 1, res.output
    recs = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert [r.round for r in recs] == [0, 1] and recs[1].sampled == [0, 1, 2, 3] and recs[1].all_failed
    assert checkpoint.load(tmp_path / "r" / "checkpoint").round == 1
    assert not (tmp_path / "r" / "adapter").exists()  # the run did not finish


def test_a_round_where_only_some_clients_fail_with_one_error_goes_on(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from fedsketch.engine.runtime import TorchEngine

    real = TorchEngine.train_client

    def flaky(self, state, client, *a, **k):
        if client != 0:
            raise RuntimeError("out of memory")
        return real(self, state, client, *a, **k)

    monkeypatch.setattr(TorchEngine, "train_client", flaky)
    res = _run(tmp_path, "output.plot=false", "fl.sampling='full'", "fl.rounds=2")
    assert res.exit_code == 0, res.output
    recs = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert [r.round for r in recs] == [0, 1, 2] and [len(r.failed) for r in recs[1:]] == [3, 3]


def test_interrupt_prints_round_exits_130_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during round 3 of 4: message, exit 130, checkpoint of round 2 intact; the same command resumes."""
    from fedsketch import checkpoint
    from fedsketch.engine.runtime import TorchEngine

    real = TorchEngine.train_client

    def interrupt_in_round_3(self, state, n, t, *a, **k):
        if t == 3:
            raise KeyboardInterrupt
        return real(self, state, n, t, *a, **k)

    monkeypatch.setattr(TorchEngine, "train_client", interrupt_in_round_3)
    sets = ("output.plot=false", "output.progress=true", "fl.rounds=4", "fl.q=1.0")
    res = _run(tmp_path, *sets)
    assert res.exit_code == 130, res.output
    assert "interrupted after round 2; run the same command again to resume" in res.output
    assert "Traceback" not in res.output and "Aborted" not in res.output
    assert checkpoint.load(tmp_path / "r" / "checkpoint").round == 2
    monkeypatch.setattr(TorchEngine, "train_client", real)
    res = _run(tmp_path, *sets)
    assert res.exit_code == 0, res.output
    recs = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert [r.round for r in recs] == [0, 1, 2, 3, 4]
    assert "round 3/4" in res.output and "round 1/4" not in res.output  # resumed, not restarted


def test_flower_backend_says_which_settings_it_does_not_use():
    """Forked workers and fused clients are the in-process engine's; on Flower an explicit W or C > 1 gets a note
    (and auto, 0, none). The missing data folder stops the run in the preflight, after the note, before any model."""
    bad_data = ["-s", "data.source='local'", "-s", "data.data_dir='/nonexistent/d'"]

    def run(backend: str, setting: str):
        res = _invoke(["run", str(TINY), "--backend", backend, "-s", setting, *bad_data])
        assert res.exit_code == 2 and "data.data_dir: folder" in res.output, res.output
        return res.output

    assert "train.workers = 2 is not used by --backend flower" in run("flower", "train.workers=2")
    assert "train.client_batch = 3 is not used by --backend flower" in run("flower", "train.client_batch=3")
    for backend, setting in (("flower", "train.workers=0"), ("inprocess", "train.workers=2")):
        assert "is not used by --backend" not in run(backend, setting)
