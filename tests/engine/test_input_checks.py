"""Every input file is read by one checked reader (``fedsketch.config.readers``), and ``validate`` refuses
what ``run``, ``plan`` and ``estimate`` would refuse later: the cases of the reliability issue, one
test each, through the command line (exit code, one short message naming the file and line or the
key, no traceback).

Exit codes (``fedsketch.errors``): 0 ok, 1 a failed run, 2 bad input.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsketch.cli import app
from fedsketch.config.readers import ReadError, read_csv, read_json, read_json_lines, read_toml

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def sets(*pairs: str) -> list[str]:
    return [x for s in pairs for x in ("--set", s)]


def check(res, code: int, *fragments: str, max_lines: int = 3) -> None:
    out = res.output
    assert res.exit_code == code, out
    for f in fragments:
        assert f in out, (f, out)
    assert "Traceback" not in out and (res.exception is None or isinstance(res.exception, SystemExit)), out
    assert len([ln for ln in out.splitlines() if ln.strip()]) <= max_lines, out


# --------------------------------------------------------------------------- the readers themselves


def test_reader_names_file_byte_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "a.toml"
    bad.write_bytes(b"[fl]\nrounds = 2\nname = '\xff'\n")
    with pytest.raises(ReadError, match=r"a.toml: not UTF-8 text \(byte 24, line 3\)"):
        read_toml(bad)
    bad.write_text("[fl]\nrounds = = 2\n")
    with pytest.raises(ReadError, match=r"a.toml, line 2: not valid TOML: .*\(column 10\)"):
        read_toml(bad)
    bad.write_bytes(b"\xef\xbb\xbf[fl]\nrounds = 2\n")  # a byte-order mark is dropped
    assert read_toml(bad) == {"fl": {"rounds": 2}}
    bad.write_text('{"a": [1, 2,\n 3,, 4]}')
    with pytest.raises(ReadError, match=r"a.toml, line 2: not valid JSON: Expecting value \(column 4\)"):
        read_json(bad)
    bad.write_text("[" * 100_000)
    with pytest.raises(ReadError, match="nested too deeply"):
        read_json(bad)
    with pytest.raises(ReadError, match="file not found"):
        read_json(tmp_path / "none.json")
    with pytest.raises(ReadError, match="is a folder, not a file"):
        read_json(tmp_path)
    bad.write_text('client,tau_cp\n\n0,"1\n2",3\n1,"4\n')
    with pytest.raises(ReadError, match=r"a.toml, line 5: not valid CSV"):
        read_csv(bad)
    bad.write_text('client,tau_cp\n\n0,"1\n2",3\n1,4\n')
    rows = [(3, {"client": "0", "tau_cp": "1\n2"}), (5, {"client": "1", "tau_cp": "4"})]  # a record's first line
    assert read_csv(bad) == (["client", "tau_cp"], rows)


@pytest.mark.parametrize(
    ("tail", "truncated"),
    [
        ('{"round": 2, "sim_seconds": 1.', True),
        ('{"round": 2, "sim_sec', True),
        ('{"round": 2, "failed": [{"client": 1, "reason": "x"}', True),
        ('{"round": 2, "stop": tr', True),
        ('{"round": 2,', True),
        ('{"round": 2, "sim_seconds": 1.0} x', False),
        ('{"round": x}', False),
        ("garbage", False),
    ],
)
def test_json_lines_tell_a_cut_off_last_line_from_a_garbled_one(tmp_path: Path, tail: str, truncated: bool) -> None:
    f = tmp_path / "m.jsonl"
    f.write_text('{"round": 0}\n{"round": 1}\n' + tail)
    warnings: list[str] = []
    if truncated:
        assert [v for _, v in read_json_lines(f, warn=warnings.append)] == [{"round": 0}, {"round": 1}]
        assert warnings == [f"warning: {f}, line 3: the last line is cut off (an interrupted write); left out"]
        f.write_text('{"round": 0}\n' + tail + '\n{"round": 1}\n')  # the same line in the middle: rejected
        with pytest.raises(ReadError, match=r"m.jsonl, line 2: not valid JSON"):
            read_json_lines(f, warn=warnings.append)
    else:
        with pytest.raises(ReadError, match=r"m.jsonl, line 3: not valid JSON"):
            read_json_lines(f, warn=warnings.append)


def test_json_lines_cut_inside_a_character(tmp_path: Path) -> None:
    f = tmp_path / "m.jsonl"
    f.write_bytes(b'{"round": 0}\n{"round": 1, "stop": "caf' + "é".encode()[:1])
    warnings: list[str] = []
    assert len(read_json_lines(f, warn=warnings.append)) == 1 and len(warnings) == 1
    f.write_bytes(b'{"round": 0, "stop": "\xff"}\n{"round": 1}\n')
    with pytest.raises(ReadError, match=r"m.jsonl, line 1: not UTF-8 text \(byte 22\)"):
        read_json_lines(f)


# --------------------------------------------------------------------------- config and suite TOML


def test_config_not_utf8_or_not_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(TINY.read_bytes() + b"# caf\xe9\n")
    for command in ("validate", "run", "plan", "estimate", "defaults"):
        check(invoke(command, cfg, *sets(f"output.dir='{tmp_path}'")), 2, "c.toml: not UTF-8 text (byte")
    cfg.write_text("[fl]\nrounds = 2\n[fl\n")
    check(invoke("validate", cfg), 2, "c.toml, line 3: not valid TOML")


def _suite(tmp: Path, body: bytes) -> Path:
    p = tmp / "s.toml"
    p.write_bytes(f'base = "{TINY}"\ntarget = 0.5\noutput = "{tmp / "out"}"\n'.encode() + body)
    return p


def test_suite_not_utf8(tmp_path: Path) -> None:
    """A non-UTF-8 suite gave exit 1 and a UnicodeDecodeError."""
    suite = _suite(tmp_path, b'[[strategy]]\nname = "caf\xe9"\n')
    for args in (["compare", suite], ["compare", suite, "--report-only"], ["validate", suite]):
        check(invoke(*args), 2, "s.toml: not UTF-8 text (byte")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'name = 5\n[[strategy]]\nname = "a"\n', "name must be a non-empty string, got 5"),
        (b'name = ""\n[[strategy]]\nname = "a"\n', "name must be a non-empty string, got ''"),
        (b'[[strategy]]\nname = "a"\n[[strategy]]\nname = "b"\nset = ["fl.q=inf"]\n',
         "strategy 'b': fl.q: inf is not a finite number"),
    ],
)
def test_suite_values(tmp_path: Path, body: bytes, fragment: str) -> None:
    suite = _suite(tmp_path, body)
    for command in ("validate", "compare"):
        check(invoke(command, suite), 2, fragment)


# --------------------------------------------------------------------------- pilots and theta JSON


def _estimate(tmp: Path, pilots: Path):
    return invoke("estimate", TINY, "--pilots", pilots, *sets(f"output.dir='{tmp / 'out'}'"))


GOOD_PILOT = {"q": 1.0, "k": 8, "rounds": 5}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "--pilots: file not found"),
        (b'{"pilots": [', "p.json, line 1: not valid JSON"),
        (b'{"pilots": [{"q": 1.0, "k": 8, "rounds": "caf\xe9"}]}', "p.json: not UTF-8 text (byte 45, line 1)"),
        (b"[1, 2]", "p.json: expected a JSON object with a 'pilots' list"),
        (b'{"theta": [1, 2, 3, 4]}', "p.json: no 'pilots' list"),
        (b'{"pilots": {"q": 1}}', "p.json: no 'pilots' list"),
        (b'{"pilots": [5]}', "p.json: pilots[0]: expected an object"),
        (json.dumps({"pilots": [GOOD_PILOT, {"q": 2.0, "k": 8, "rounds": 5}]}).encode(),
         "p.json: pilots[1].q: got 2.0; allowed a number in (0, 1]"),
        (json.dumps({"pilots": [{"q": 1.0, "k": 2.5, "rounds": 5}]}).encode(), "pilots[0].k: got 2.5"),
        (json.dumps({"pilots": [{"q": 1.0, "k": "8", "rounds": 5}]}).encode(), "pilots[0].k: got '8'"),
        (b'{"pilots": [{"q": 1.0, "k": 8, "rounds": NaN}]}', "pilots[0].rounds: got nan; allowed a finite number > 0"),
        (b'{"pilots": [{"q": 1.0, "k": 8, "rounds": Infinity}]}', "pilots[0].rounds: got inf"),
        (json.dumps({"pilots": [{"q": 1.0, "k": 8}]}).encode(), "pilots[0].rounds: missing"),
        (json.dumps({"pilots": [{**GOOD_PILOT, "replicates": [1, -2]}]}).encode(), "pilots[0].replicates: got [1, -2]"),
        (json.dumps({"pilots": [{**GOOD_PILOT, "X": 0.5}]}).encode(), "pilots[0].Y: missing"),
        (json.dumps({"pilots": [{"q": True, "k": 8, "rounds": 5}]}).encode(), "pilots[0].q: got True"),
    ],
    ids=["missing", "not-json", "not-utf8", "a-list", "no-pilots", "pilots-not-a-list", "row-not-object", "q-range",
         "k-fraction", "k-string", "rounds-nan", "rounds-inf", "rounds-missing", "replicates", "x-without-y", "bool"],
)
def test_pilots_file(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    """``estimate --pilots FILE``: every bad file is bad input (it gave exit 1 or a traceback)."""
    pilots = tmp_path / "p.json"
    if content is not None:
        pilots.write_bytes(content)
    check(_estimate(tmp_path, pilots), 2, fragment)


def test_theta_file_not_utf8_or_with_bad_pilots(tmp_path: Path) -> None:
    """A theta file the config plans with (``fl.ranks = "optimized"``); one nothing plans with is not read."""
    plans = "fl.ranks='optimized'"
    theta = tmp_path / "t.json"
    theta.write_bytes(b'{"theta": [1, 0.1, 0.1, 10], "note": "\xe9"}')
    for command in ("validate", "run", "plan"):
        check(invoke(command, TINY, *sets(plans, f"planner.theta_file='{theta}'", f"output.dir='{tmp_path}'")), 2,
              "t.json: not UTF-8 text (byte")
    theta.write_text(json.dumps({"theta": [1, 0.1, 0.1, 10], "pilots": [{"q": 7, "k": 8, "rounds": 5}]}))
    check(invoke("plan", TINY, *sets(f"planner.theta_file='{theta}'", f"output.dir='{tmp_path}'")), 2,
          "t.json: pilots[0].q: got 7")
    theta.write_text(json.dumps({"theta": list(range(10_000))}))
    check(invoke("validate", TINY, *sets(plans, f"planner.theta_file='{theta}'")), 2, "must be a list of 4 finite numbers")


# --------------------------------------------------------------------------- metrics.jsonl


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished run folder of the tiny model (2 rounds)."""
    out = tmp_path_factory.mktemp("run")
    res = invoke("run", TINY, *sets(f"output.dir='{out}'", "output.name='r'", "output.plot=false"))
    assert res.exit_code == 0, res.output
    return out / "r"


def _corrupt(run: Path, tmp: Path, how: str) -> Path:
    copy = tmp / "r"
    shutil.copytree(run, copy)
    m = copy / "metrics.jsonl"
    lines = m.read_text().splitlines(keepends=True)
    if how == "truncated-last":
        text = "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]
    elif how == "truncated-middle":
        text = lines[0] + lines[1][: len(lines[1]) // 2] + "\n" + "".join(lines[2:])
    elif how == "garbled":
        text = lines[0] + lines[1].replace('"round"', "round") + "".join(lines[2:])
    elif how == "wrong-type":
        text = lines[0] + lines[1].replace('"sampled": [', '"sampled": ["x", ') + "".join(lines[2:])
    elif how == "not-utf8":
        m.write_bytes(lines[0].encode() + b"\xff\n" + "".join(lines[1:]).encode())
        return copy
    else:
        raise AssertionError(how)
    m.write_text(text)
    return copy


BAD_METRICS = [
    ("truncated-middle", "metrics.jsonl, line 2: not valid JSON"),
    ("garbled", "metrics.jsonl, line 2: not valid JSON"),
    ("wrong-type", "metrics.jsonl, line 2: sampled must be a list of integers, got ['x'"),
    ("not-utf8", "metrics.jsonl, line 2: not UTF-8 text"),
]


@pytest.mark.parametrize(("how", "fragment"), BAD_METRICS, ids=[h for h, _ in BAD_METRICS])
def test_report_refuses_a_bad_metrics_line(finished_run: Path, tmp_path: Path, how: str, fragment: str) -> None:
    run = _corrupt(finished_run, tmp_path, how)
    check(invoke("report", run), 2, fragment)
    assert not (run / "report.html").exists()


def test_report_skips_a_cut_off_last_line_with_a_warning(finished_run: Path, tmp_path: Path) -> None:
    run = _corrupt(finished_run, tmp_path, "truncated-last")
    res = invoke("report", run)
    check(res, 0, f"warning: {run / 'metrics.jsonl'}, line 3: the last line is cut off", "report:")
    assert (run / "report.html").is_file()


def test_report_of_a_corrupt_run_json(finished_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "q": info["q"][:-1]}))
    check(invoke("report", run), 2, "run.json: k must be a list of 3 finite numbers")
    (run / "run.json").write_bytes(b"\xff")
    check(invoke("report", run), 2, "run.json: not UTF-8 text (byte 0")


def _report_only_suite(tmp: Path) -> tuple[Path, Path]:
    """A suite of one strategy whose only run finished (written by hand, as ``compare`` leaves it)."""
    from fedsketch.compare import load_suite
    from fedsketch.runner import run_dir_for

    suite = tmp / "s.toml"
    suite.write_text(f'base = "{TINY}"\ntarget = 0.5\noutput = "{tmp / "out"}"\n[[strategy]]\nname = "a"\n')
    cfg = load_suite(suite).config("a", 0)
    run = run_dir_for(cfg)
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"config_hash": cfg.hash(), "p": [0.25] * 4, "q": [0.75] * 4,
                                              "k": [4] * 4}))
    rows = [{"round": t, "sim_seconds": 60.0 * t, "accuracy": 0.3 + 0.1 * t, "test_loss": 3.0 - t} for t in (0, 1, 2)]
    rows[-1]["stop"] = "rounds"
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return suite, run / "metrics.jsonl"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"round": 0}\n{"round": 1, garbled}\n{"round": 2, "stop": "rounds"}\n', "metrics.jsonl, line 2: not valid"),
        ('{"round": 0}\n{"round": 1, "sim_seconds": "1"}\n', "metrics.jsonl, line 2: sim_seconds must be a number"),
        ('{"round": 0}\n{"round": 1, "sim_sec\n{"round": 2, "stop": "rounds"}\n', "metrics.jsonl, line 2: not valid"),
        ('[1, 2]\n', "metrics.jsonl, line 1: expected a JSON object"),
        ('{"round": -1}\n', "metrics.jsonl, line 1: round must be >= 0"),
    ],
    ids=["garbled", "wrong-type", "truncated-middle", "not-an-object", "negative-round"],
)
def test_compare_report_only_refuses_a_bad_metrics_line(tmp_path: Path, text: str, fragment: str) -> None:
    """``compare --report-only`` trains nothing, so a run it cannot read is bad input (it was exit 1)."""
    suite, metrics = _report_only_suite(tmp_path)
    metrics.write_text(text)
    check(invoke("compare", suite, "--report-only"), 2, fragment)


def test_compare_report_only_skips_a_cut_off_last_line(tmp_path: Path) -> None:
    suite, metrics = _report_only_suite(tmp_path)
    assert invoke("compare", suite, "--report-only").exit_code == 0
    metrics.write_text(metrics.read_text()[:-12])  # the last record cut off: that run is unfinished now
    res = invoke("compare", suite, "--report-only")
    assert res.exit_code == 0, res.output
    assert res.output.count("the last line is cut off") == 1 and "left out of the report" in res.output


# --------------------------------------------------------------------------- profile CSV


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"client,tau_cp,tau_cm\n0,1,1\n1,1,1\n2,\xff,1\n3,1,1\n", "p.csv: not UTF-8 text (byte"),
        (b"client,tau_cp\n0,1\n1,1\n2,1\n3,1\n", "p.csv: the header lacks column(s) tau_cm"),
        (b"client,tau_cp,tau_cm\n", "p.csv: no rows"),
        (b"client,tau_cp,tau_cm\n0,1,1\n\n1,1,1\n2,x,1\n3,1,1\n", "p.csv, line 5 (client 2): tau_cp must be a number"),
        (b"client,tau_cp,tau_cm\n0,1,1\n1,1,1\n2,nan,1\n3,1,1\n",
         "p.csv, line 4 (client 2): tau_cp = 'nan' is not finite"),
        (b"client,tau_cp,tau_cm\n0,1,1\n1,1,-1\n2,1,1\n3,1,1\n", "p.csv, line 3 (client 1): tau_cm = -1.0 must be > 0"),
        (b"client,tau_cp,tau_cm,tau_0\n0,1,1,2\n1,1,1,\n2,1,1,\n3,1,1,\n", "tau_0 = 2.0 must lie in [0, tau_cp=1.0]"),
        (b"client,tau_cp,tau_cm\n0,1,1\n1,1,1\n2,1,1\n", "p.csv: no row for client(s) [3]"),
        (b"client,tau_cp,tau_cm\n0,1,1\n1,1,1\n2,1\n3,1,1\n",
         "p.csv, line 4 (client 2): tau_cm must be a number, got None"),
        (b"client,tau_cp,tau_cm\n0,1,1\n1,1,1\n1.5,1,1\n3,1,1\n",
         "p.csv, line 4: client must be an integer id, got '1.5'"),
        (b'client,tau_cp,tau_cm\n0,1,1\n1,1,1\n2,"1,1\n3,1,1\n',
         "p.csv, line 4: not valid CSV: unexpected end of data"),
    ],
    ids=["not-utf8", "no-column", "no-rows", "not-a-number", "nan", "negative", "tau0", "count", "short-row",
         "client-id", "bad-quote"],
)
def test_profile_csv(tmp_path: Path, content: bytes, fragment: str) -> None:
    csv_file = tmp_path / "p.csv"
    csv_file.write_bytes(content)
    s = sets("network.profile='csv'", f"network.profile_csv='{csv_file}'", f"output.dir='{tmp_path}'",
             "planner.theta=[1.0, 0.1, 0.1, 10.0]")
    for command in ("validate", "run", "plan"):
        check(invoke(command, TINY, *s), 2, fragment)


def test_profile_csv_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    from fedsketch.network.profiles import load_profiles_csv

    csv_file = tmp_path / "p.csv"
    csv_file.write_bytes(b"\xef\xbb\xbfclient,tau_cp,tau_cm\n0,1,2\n1,3,4\n")
    prof = load_profiles_csv(csv_file, 2)
    assert prof.tau_cp.tolist() == [1.0, 3.0] and prof.tau_cm.tolist() == [2.0, 4.0]


# --------------------------------------------------------------------------- config values


#: the keys the issue named: inf passed ``validate`` and failed at run time
INF_KEYS = ["network.bandwidth_mbps", "network.payload_mbit", "network.step_seconds", "lora.alpha", "fl.server_lr",
            "data.dirichlet_alpha", "train.max_grad_norm", "fl.sim_budget_minutes", "eval.every_sim_seconds"]


@pytest.mark.parametrize("key", INF_KEYS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_numbers_are_refused(tmp_path: Path, key: str, value: str) -> None:
    for command in ("validate", "run"):
        check(invoke(command, TINY, *sets(f"output.dir='{tmp_path}'", f"{key}={value}")), 2,
              f"{key}: {value} is not a finite number; allowed [")
    assert not any(tmp_path.iterdir())


def test_huge_numbers_do_not_crash(tmp_path: Path) -> None:
    check(invoke("validate", TINY, *sets("eval.num_samples=1000000000000000000000000000000")), 2,
          "eval.num_samples: 1000000000000000000000000000000 is larger than the 'arc_e' test set")
    check(invoke("validate", TINY, *sets("fl.server_lr=" + "9" * 400)), 2, "... is too large a number")
    check(invoke("validate", TINY, *sets("fl.rounds=" + "9" * 5000)), 2, "fl.rounds: expected an integer, got '999")
    check(invoke("validate", TINY, *sets("fl.rounds=" + "[" * 5000)), 2, "fl.rounds: expected an integer")
    check(invoke("validate", TINY, *sets(f"fl.q_list={list(range(10_000))}", "fl.sampling='explicit'")), 2,
          "fl.q_list: sampling='explicit' needs 4 values", max_lines=12)


def test_model_shape_is_checked_before_the_model_loads(tmp_path: Path) -> None:
    """``model.num_layers`` beyond the model and unknown ``lora.target_modules`` failed only in ``run``."""
    for command in ("validate", "run", "estimate"):
        check(invoke(command, TINY, *sets(f"output.dir='{tmp_path}'", "model.num_layers=3")), 2,
              "model.num_layers: 3 is more than the model's 2 layers")
        check(invoke(command, TINY, *sets(f"output.dir='{tmp_path}'", "lora.target_modules=['q_proj', 'qkv']")), 2,
              "lora.target_modules: 'qkv' not in the model")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    check(invoke("validate", TINY, *sets(f"model.name='{folder}'", "model.num_layers=5")), 2,
          "model.num_layers: 5 is more than the model's 4 layers")


def test_known_model_shapes_match_the_models() -> None:
    """:data:`fedsketch.preflight.KNOWN_MODEL_SHAPES` against the tiny model built, and the embedded model's
    config read from its GGUF file (shapes only, no weights)."""
    import torch

    from fedsketch.config import ModelConfig
    from fedsketch.engine.model import base_config, load_base_model
    from fedsketch.preflight import KNOWN_MODEL_SHAPES

    model, _ = load_base_model(ModelConfig(name="random:tiny-llama"))
    layers, modules = KNOWN_MODEL_SHAPES["random:tiny-llama"]
    assert len(model.model.layers) == layers
    assert {n.rsplit(".", 1)[-1] for n, m in model.model.layers.named_modules() if isinstance(m, torch.nn.Linear)} \
        == set(modules)
    name = "embedded:smollm2-135m-instruct"
    assert base_config(ModelConfig(name=name)).num_hidden_layers == KNOWN_MODEL_SHAPES[name][0]


def test_cuda_without_cuda_is_refused_by_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train.device = "cuda"`` on a torch without CUDA passed ``validate`` and failed in ``run`` (exit 1)."""
    import fedsketch.preflight as preflight

    asked: list[bool] = []

    def no_cuda() -> bool:
        asked.append(True)
        return False

    monkeypatch.setattr(preflight, "cuda_available", no_cuda)
    for command in ("validate", "run", "estimate"):
        check(invoke(command, TINY, *sets(f"output.dir='{tmp_path}'", "train.device='cuda'")), 2,
              "train.device: 'cuda', but torch sees no CUDA device")
    assert not any(tmp_path.iterdir())
    asked.clear()
    check(invoke("validate", TINY, *sets("train.device='cpu'")), 0, "OK")
    assert not asked  # cpu: torch is not even asked
    check(invoke("validate", TINY, *sets("train.device='auto'", "train.workers=2")), 0, "OK")
    monkeypatch.setattr(preflight, "cuda_available", lambda: True)
    check(invoke("validate", TINY, *sets("train.device='auto'", "train.workers=2")), 2,
          "train.workers: 2 forked workers, but train.device = 'auto' picks the GPU")
    check(invoke("validate", TINY, *sets("train.device='cuda'")), 0, "OK")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["data.num_clients=100"], "data: cannot give each of N=100 clients at least min_size=8 examples"),
        (["data.partition='dirichlet'", "data.num_clients=10", "data.dirichlet_alpha=1e-6"],
         "data: Dirichlet(alpha=1e-06) split of 200 examples over N=10 clients"),
    ],
    ids=["too-many-clients", "dirichlet-fails"],
)
def test_impossible_partition_is_exit_2_for_every_command(tmp_path: Path, overrides: list[str], fragment: str) -> None:
    """``plan`` gave exit 1 and ``run`` exit 2 after opening the run folder; now every command refuses it
    in the preflight, before any model or run folder."""
    s = sets(f"output.dir='{tmp_path / 'out'}'", "planner.theta=[1.0, 0.1, 0.1, 10.0]", *overrides)
    for command in ("validate", "run", "plan", "estimate"):
        check(invoke(command, TINY, *s), 2, fragment)
    assert not (tmp_path / "out").exists()


def test_plan_with_injected_weights_skips_the_split() -> None:
    from fedsketch.config import load_config
    from fedsketch.preflight import check_inputs

    cfg = load_config(TINY, ["data.num_clients=100"])
    assert check_inputs(cfg, output=False, partition=False) == []
    assert check_inputs(cfg, output=False)[0].startswith("data: cannot give each of N=100 clients")
