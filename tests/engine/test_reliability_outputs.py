"""Where and how every command writes: the output locations, the run folder lock, suites that go on past
a failed run, SIGTERM, and interruptions that say how the same command resumes.

Each test checks the exit code (0 ok, 1 failed, 2 bad input, 130 interrupted), that the error is one
plain line with no traceback, and that nothing computed earlier is lost or written outside its place.
The tests run as root here, so a read-only folder is simulated (an ``EROFS`` from the file system calls
of that folder) and a full disk too (the write of that folder fails with ``ENOSPC`` half-way).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from fedsketch.cli import app
from fedsketch.cli.planner import register

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"
N = 12
THETA = np.array([1.0, 0.5, 0.5, 100.0])
W = np.random.default_rng(0).lognormal(0, 0.5, N)


def _one_line(res, code: int, *fragments: str) -> str:
    """The command exited with ``code`` and said one plain line on standard error holding ``fragments``."""
    assert res.exit_code == code, res.output
    assert isinstance(res.exception, SystemExit) or res.exception is None, repr(res.exception)
    assert "Traceback" not in res.output, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- plan / estimate --out


def _planner_app(calls: list | None = None, pilot=None):
    """``plan`` and ``estimate`` with injected weights and synthetic pilots (eq. 21 with THETA; no torch)."""
    P = np.sum((W / W.sum()) ** 2)

    def factory(cfg):
        r = cfg.lora.rank

        def run_pilot(q, k):
            if calls is not None:
                calls.append((q, k))
            return THETA[3] / (THETA[0] - THETA[1] * P / q - THETA[2] * P * r / (q * k))

        return run_pilot

    a = typer.Typer()
    register(a, weights_fn=lambda cfg: W, pilot_factory=pilot or factory)
    return a


def _planner_config(tmp: Path) -> Path:
    path = tmp / "c.toml"
    path.write_text(
        f"seed = 3\n[data]\nnum_clients = {N}\n[lora]\nrank = 8\n[network]\npayload_mbit = 50.0\n"
        f'[output]\ndir = "{tmp / "runs"}"\n[planner]\nmax_step_factor = 1.3\ntheta = {THETA.tolist()}\n'
    )
    return path


@pytest.mark.parametrize("command", ["plan", "estimate"])
def test_out_under_a_file_is_refused_before_any_pilot(tmp_path, command):
    """``--out`` below a file: exit 2 naming --out, before any pilot runs; before, a 40-line traceback
    (for estimate after every pilot had run)."""
    (tmp_path / "afile").write_text("x")
    calls: list = []
    res = CliRunner().invoke(
        _planner_app(calls), [command, str(_planner_config(tmp_path)), "--out", str(tmp_path / "afile" / "t.json")]
    )
    _one_line(res, 2, "--out", "afile is a file, not a folder")
    assert calls == [] and (tmp_path / "afile").read_text() == "x"


def _read_only(monkeypatch, folder: Path) -> None:
    """Every way of writing into ``folder`` fails with EROFS, as on a read-only mount."""
    err = OSError(errno.EROFS, "Read-only file system")
    real_mkstemp, real_wt, real_wb = tempfile.mkstemp, pathlib.Path.write_text, pathlib.Path.write_bytes

    def inside(p) -> bool:
        return Path(p).absolute().is_relative_to(folder)

    def mkstemp(*a, dir=None, **k):
        if dir is not None and inside(dir):
            raise err
        return real_mkstemp(*a, dir=dir, **k)

    def write_text(self, *a, **k):
        if inside(self):
            raise err
        return real_wt(self, *a, **k)

    def write_bytes(self, *a, **k):
        if inside(self):
            raise err
        return real_wb(self, *a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


@pytest.mark.parametrize("command", ["plan", "estimate"])
def test_out_on_a_read_only_folder_is_refused_before_any_pilot(tmp_path, monkeypatch, command):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "t.json").write_text('{"earlier": true}\n')
    _read_only(monkeypatch, ro)
    calls: list = []
    res = CliRunner().invoke(
        _planner_app(calls), [command, str(_planner_config(tmp_path)), "--out", str(ro / "t.json")]
    )
    _one_line(res, 2, "--out: cannot write in", "Read-only file system")
    assert calls == [] and os.listdir(ro) == ["t.json"] and (ro / "t.json").read_text() == '{"earlier": true}\n'


def _full_disk(monkeypatch, folder: Path) -> None:
    """A write into ``folder`` stops half-way with ENOSPC (the disk fills up during it)."""
    real_wt, real_wb = pathlib.Path.write_text, pathlib.Path.write_bytes

    def partial(self, data, mode):
        with open(self, mode) as fh:  # what the file system keeps of a write that ran out of space
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def write_text(self, data, *a, **k):
        return partial(self, data, "w") if self.parent == folder else real_wt(self, data, *a, **k)

    def write_bytes(self, data):
        return partial(self, data, "wb") if self.parent == folder else real_wb(self, data)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


@pytest.mark.parametrize("command", ["plan", "estimate"])
def test_full_disk_keeps_the_earlier_file_and_exits_1(tmp_path, monkeypatch, command):
    """Before, a full disk replaced an existing plan by a truncated, invalid JSON (and a traceback)."""
    cfg = _planner_config(tmp_path)
    out = tmp_path / "res" / "t.json"
    a = _planner_app()
    res = CliRunner().invoke(a, [command, str(cfg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    earlier = out.read_bytes()
    json.loads(earlier)
    _full_disk(monkeypatch, out.parent)
    res = CliRunner().invoke(a, [command, str(cfg), "--out", str(out), "--set", "seed=4"])
    _one_line(res, 1, f"cannot write {out}", "No space left on device", "earlier version of that file is intact")
    assert out.read_bytes() == earlier and os.listdir(out.parent) == ["t.json"]  # no temporary file left


def test_estimate_interrupted_says_the_finished_pilots_are_reused(tmp_path):
    cache = tmp_path / "pilots.json"
    cache.write_text(json.dumps({"initial_loss": 1.0, "target_loss": 0.9, "replicates": {"a": 3.0, "b": 4.0}}))

    def factory(cfg):
        def run_pilot(q, k):
            raise KeyboardInterrupt

        run_pilot.cache = cache
        return run_pilot

    res = CliRunner().invoke(_planner_app(pilot=factory), ["estimate", str(_planner_config(tmp_path))])
    _one_line(
        res, 130, "run the same command again to resume", f"the 2 finished pilot replicate(s) in {cache} are reused"
    )


# --------------------------------------------------------------------------- output.name and output locations


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _sets(*sets: str) -> list[str]:
    return [x for s in sets for x in ("--set", s)]


@pytest.mark.parametrize("name", ["..", ".", "ABS", "a/b", "a\\b", "   ", "x" * 300], ids=lambda n: n[:8])
def test_output_name_must_be_one_folder_name(tmp_path, name):
    """Before, ``..`` or an absolute name made a run write config.toml and report.html over the user's files."""
    name = name.replace("ABS", str(tmp_path / "elsewhere"))
    (tmp_path / "runs").mkdir()
    before = _tree(tmp_path)
    for command in ("validate", "run"):
        res = _invoke(command, str(TINY), *_sets(f"output.dir='{tmp_path / 'runs'}'", f"output.name='{name}'"))
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        problems = [ln for ln in res.stderr.splitlines() if ln.startswith("  - ")]
        assert len(problems) == 1 and problems[0].startswith("  - output.name: "), res.stderr
        assert "allowed: one folder name inside output.dir" in problems[0]
    assert _tree(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["runs"]


def test_run_folder_that_is_a_file_and_output_dir_under_a_file(tmp_path):
    (tmp_path / "f").write_text("mine")
    res = _invoke("run", str(TINY), *_sets(f"output.dir='{tmp_path}'", "output.name='f'"))
    assert res.exit_code == 2 and "output.name: " in res.stderr and "is a file" in res.stderr, res.output
    res = _invoke("run", str(TINY), *_sets(f"output.dir='{tmp_path / 'f' / 'runs'}'"))
    assert res.exit_code == 2 and "output.dir: " in res.stderr and "is a file, not a folder" in res.stderr
    assert (tmp_path / "f").read_text() == "mine" and os.listdir(tmp_path) == ["f"]


def test_compare_output_and_report_out_are_checked_first(tmp_path):
    (tmp_path / "f").write_text("mine")
    suite = tmp_path / "s.toml"
    suite.write_text(f'base = "{TINY}"\ntarget = 0.5\n[[strategy]]\nname = "a"\n')
    _one_line(_invoke("compare", str(suite), "--output", str(tmp_path / "f" / "out")), 2, "--output: ", "is a file")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"round": 0, "sim_seconds": 0.0, "accuracy": 0.5}) + "\n")
    _one_line(_invoke("report", str(run), "--out", str(tmp_path / "f" / "r.html")), 2, "--out: ", "is a file")
    _one_line(_invoke("report", str(run), "--out", str(tmp_path / ("x" * 300))), 2, "--out: ", "300 bytes long")
    assert (tmp_path / "f").read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["f", "run", "s.toml"]


# --------------------------------------------------------------------------- the run folder lock


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock (as a running ``fedsketch run`` does)."""
    folder.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, str(os.getpid()).encode())\n"
            "print('held', flush=True)\n"
            "time.sleep(300)\n",
            str(folder / "run.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_of_a_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path, monkeypatch):
    from fedsketch.engine.runtime import TorchEngine

    folder = tmp_path / "r"
    args = ["run", str(TINY), *_sets(f"output.dir='{tmp_path}'", "output.name='r'", "output.plot=false")]
    holder = _hold_lock(folder)
    try:
        _one_line(_invoke(*args), 2, f"{folder}: another fedsketch run (PID {holder.pid})", "output.name")
        assert os.listdir(folder) == ["run.lock"] and (folder / "run.lock").read_text() == str(holder.pid)
    finally:
        holder.kill()
        holder.wait(10)
    # the holder died: its lock file stays, the kernel released its flock; the next run takes it over
    seen: list[str] = []
    real = TorchEngine.train_client

    def train(self, *a, **k):
        seen.append((folder / "run.lock").read_text().strip())
        return real(self, *a, **k)

    monkeypatch.setattr(TorchEngine, "train_client", train)
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    assert seen and set(seen) == {str(os.getpid())}  # the PID was rewritten while the run held it
    assert not (folder / "run.lock").exists() and (folder / "metrics.jsonl").is_file()  # released at the end


def test_failed_input_leaves_no_empty_run_folder(tmp_path, monkeypatch):
    """Data that fails to load before round 0: the folder this command created goes (with the parents it
    created); a folder that was there before, and what is in it, stays."""
    import fedsketch.data
    from fedsketch.data.datasets import DataError

    def broken(cfg):
        raise DataError("data.data_dir: injected failure while reading the train split")

    monkeypatch.setattr(fedsketch.data, "build_federated_data", broken)
    out = tmp_path / "new" / "runs"
    res = _invoke("run", str(TINY), *_sets(f"output.dir='{out}'", "output.name='r'"))
    assert res.exit_code == 2 and "injected failure" in res.stderr and "Traceback" not in res.output, res.output
    assert os.listdir(tmp_path) == []  # neither runs/r nor the runs/ and new/ it made
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    res = _invoke("run", str(TINY), *_sets(f"output.dir='{tmp_path}'", "output.name='mine'"))
    assert res.exit_code == 2 and (mine / "notes.txt").read_text() == "keep"


# --------------------------------------------------------------------------- suites


def _suite(tmp: Path) -> Path:
    suite = tmp / "s.toml"
    suite.write_text(
        f'base = "{TINY}"\nseeds = [0]\ntarget = 0.99\nreference = "a"\n'
        '[[strategy]]\nname = "a"\nset = ["fl.rounds=1", "output.plot=false"]\n'
        '[[strategy]]\nname = "b"\nset = ["fl.rounds=1", "output.plot=false", "fl.q=0.5"]\n'
    )
    return suite


def test_a_suite_goes_on_past_a_failed_run_marks_it_and_exits_1(tmp_path):
    """Run b of the suite fails at run time (another process holds its run folder): run a still runs, the
    tables say b failed and why, the command exits 1 naming it; the same command then runs b alone."""
    out = tmp_path / "out"
    holder = _hold_lock(out / "runs" / "b-seed0")
    try:
        res = _invoke("compare", str(_suite(tmp_path)), "--output", str(out))
    finally:
        holder.kill()
        holder.wait(10)
    line = _one_line(res, 1, "1 run(s) failed: b seed 0", f"PID {holder.pid}", "table.md")
    assert "the same command runs them again" in line
    assert (out / "runs" / "a-seed0" / "metrics.jsonl").is_file()
    md = (out / "table.md").read_text()
    assert "| b | 99% | no finished run | 0/0, 1 failed |" in md
    assert f"- b seed 0: {out / 'runs' / 'b-seed0'}: another fedsketch run (PID {holder.pid})" in md
    rows = {r["strategy"]: r for r in csv.DictReader((out / "table.csv").open())}
    assert rows["a"]["failed_runs"] == "" and rows["b"]["failed_runs"].startswith("seed 0: ")
    assert (out / "report.html").is_file()
    res = _invoke("compare", str(_suite(tmp_path)), "--output", str(out))
    assert res.exit_code == 0, res.output
    assert "a seed 0: finished earlier, reusing" in res.output and "running b seed 0" in res.output
    assert "failed" not in (out / "table.md").read_text() and "failed_runs" not in (out / "table.csv").read_text()


def test_a_suite_with_a_missing_model_is_refused_before_any_run(tmp_path):
    suite = _suite(tmp_path)
    suite.write_text(suite.read_text().replace('"fl.q=0.5"', "\"model.name='./no-such-model'\""))
    res = _invoke("compare", str(suite), "--output", str(tmp_path / "out"))
    assert res.exit_code == 2 and "strategy 'b': model.name: local folder ./no-such-model" in res.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_compare_interrupted_says_how_the_same_command_resumes(tmp_path, monkeypatch):
    import fedsketch.runner

    def interrupted(cfg, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fedsketch.runner, "run_experiment", interrupted)
    res = _invoke("compare", str(_suite(tmp_path)), "--output", str(tmp_path / "out"))
    _one_line(res, 130, "run the same command again to resume", "finished runs are reused", "last checkpoint")


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_stops_a_run_like_ctrl_c(tmp_path):
    """``kill`` of a running ``fedsketch run``: exit 130, the interrupted line, a checkpoint that resumes."""
    from fedsketch import checkpoint
    from fedsketch.config import load_config

    sets = [f"output.dir='{tmp_path}'", "output.name='r'", "output.plot=false", "fl.rounds=200", "eval.every=0"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsketch", "run", str(TINY), *_sets(*sets)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    manifest = tmp_path / "r" / "checkpoint" / "manifest.json"
    try:
        deadline = time.time() + 120
        while not manifest.is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert manifest.is_file(), "no checkpoint within 120 s"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "run the same command again to resume" in err, err
    assert [ln for ln in err.splitlines() if ln.strip()][-1].startswith("interrupted after round ")
    cfg = load_config(TINY, sets)
    found = checkpoint.find(tmp_path / "r" / "checkpoint")
    assert found is not None and checkpoint.load(found, cfg.hash(), cfg.to_dict()).round >= 1
    assert not (tmp_path / "r" / "run.lock").exists()


@pytest.mark.parametrize("bad", ["../escape", "/abs", "a/b", ".hidden", "it's", "x" * 101, ""])
def test_a_strategy_name_that_is_not_one_folder_name_is_refused(tmp_path, bad):
    """A strategy's name becomes ``runs/<name>-seed<k>``: a path, a dot name or a quote is bad input."""
    from fedsketch.compare.load import load_suite
    from fedsketch.config import ConfigError

    suite = tmp_path / "s.toml"
    suite.write_text(f'name = "s"\ntarget = 0.5\n[[strategy]]\nname = {json.dumps(bad)}\nset = []\n')
    with pytest.raises(ConfigError) as info:
        load_suite(suite, [])
    assert any("strategy" in e and "name" in e for e in info.value.errors)
    assert list(tmp_path.iterdir()) == [suite]
