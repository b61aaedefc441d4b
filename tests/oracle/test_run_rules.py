"""Run rules the results depend on (issue 11, point 6f): min_completion, empty rounds, the stop
rules and their precedence, NaN as diverged, ``--fresh``, and ``checkpoint_every`` with resume.

The oracles are computed here from the run's own record of who was sampled (min_completion,
empty rounds) or from a scripted evaluation, and resumed runs are compared with straight runs
whose checkpoints were never read.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from oracle_helpers import Crash, scripted_run, strip_real_time

from fedsketch import checkpoint
from fedsketch.records import RoundRecord, read_metrics

FAST = ("data.max_seq_len=32", "fl.batch_size=1", "fl.local_steps=1", "eval.num_samples=2")
LOW_Q = (*FAST, "fl.q=0.25", "fl.rounds=8", "eval.every=1", "seed=5")


def _nan_loss(u):
    u.train_loss = float("nan")  # every upload fails validation, all for one reason ("non_finite")


def _misattributed(u):
    u.round = -1 - u.client  # every upload fails validation, each client for its own reason


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    """Module-wide variant of the shared ``tiny_cfg`` factory (one output folder per module)."""
    from pathlib import Path

    from fedsketch.config import load_config

    repo, out = Path(__file__).resolve().parents[2], tmp_path_factory.mktemp("rules")

    def make(*extra: str):
        return load_config(repo / "configs" / "tiny.toml",
                           [f"output.dir='{out}'", "output.plot=false", *extra])

    return make


@pytest.fixture(scope="module")
def low_q_records(tiny_cfg):
    res, _ = scripted_run(tiny_cfg(*LOW_Q, "output.name='low-q'"))
    return res.records


def test_empty_rounds_cost_nothing_change_nothing_and_count(low_q_records):
    recs = low_q_records
    assert [r.round for r in recs] == list(range(9))  # 8 rounds, empty ones included
    empty = [r.round for r in recs[1:] if not r.sampled]
    assert empty and len(empty) < 8, "seed 5 at q = 0.25 must give some empty and some non-empty rounds"
    for t in empty:
        r, prev = recs[t], recs[t - 1]
        assert r.round_sim_seconds == 0.0 and r.sim_seconds == prev.sim_seconds
        assert r.uploaded_bytes == 0 and r.train_loss is None and r.failed == []
        assert r.test_loss == prev.test_loss and r.accuracy == prev.accuracy  # model unchanged


def _abort_round(recs, need):
    """First round ending a run of ``need`` consecutive non-empty all-failed rounds (empty rounds break it)."""
    streak = 0
    for r in recs[1:]:
        streak = streak + 1 if r.sampled else 0
        if streak >= need:
            return r.round
    return None


def test_min_completion_aborts_after_consecutive_failed_rounds_and_survives_resume(tiny_cfg, low_q_records):
    sampled = [r.sampled for r in low_q_records]
    need = 2
    expect = _abort_round([RoundRecord(round=t, sampled=s) for t, s in enumerate(sampled)], need)
    assert expect is not None and expect < 8
    cfg = tiny_cfg(*LOW_Q, f"fl.min_completion={need}", "output.name='abort'")
    with pytest.raises(RuntimeError, match=f"{need} consecutive rounds in which every sampled client failed"):
        scripted_run(cfg, tamper=_misattributed)
    recs = read_metrics(cfg.output.dir + "/abort/metrics.jsonl")
    assert recs[-1].round == expect
    assert all(len(r.failed) == len(r.sampled) for r in recs[1:])
    # interrupted one round before the abort, the resumed run restores the streak and aborts at the same round
    cfg2 = tiny_cfg(*LOW_Q, f"fl.min_completion={need}", "output.name='abort2'")
    scripted_run(cfg2, tamper=_misattributed, stop_after=expect - 1)
    with pytest.raises(RuntimeError, match="consecutive rounds"):
        scripted_run(cfg2, tamper=_misattributed)
    assert read_metrics(cfg2.output.dir + "/abort2/metrics.jsonl")[-1].round == expect
    # min_completion = 0 never aborts
    res, _ = scripted_run(tiny_cfg(*LOW_Q, "fl.min_completion=0", "output.name='never'"), tamper=_misattributed)
    assert res.records[-1].stop == "rounds"


def test_one_error_in_every_sampled_client_stops_the_run_at_once(tiny_cfg):
    """Every upload fails for the same reason: the run stops after the first round that sampled two or more
    clients (a lone client's failure may be its own), even with fl.min_completion = 0."""
    from fedsketch.errors import RunFailed

    cfg = tiny_cfg(*FAST, "fl.q=0.4", "fl.rounds=8", "eval.every=1", "seed=7", "output.name='same'")
    with pytest.raises(RunFailed, match="failed with the same error: non_finite") as exc:
        scripted_run(cfg, tamper=_nan_loss)
    recs = read_metrics(cfg.output.dir + "/same/metrics.jsonl")
    last = recs[-1].round
    assert str(exc.value) == f"every sampled client of round {last} failed with the same error: non_finite"
    assert [r.round for r in recs] == list(range(last + 1)) and last < 8
    assert len(recs[-1].sampled) > 1 and all(len(r.sampled) <= 1 for r in recs[1:-1])
    assert any(len(r.sampled) == 1 and r.failed for r in recs[1:-1]), "seed 7 must give a lone failed client first"
    assert checkpoint.load(cfg.output.dir + "/same/checkpoint").round == last


def _script(losses, accs=None):
    """Evaluation i returns test loss ``losses[i]`` (None: the real one) and accuracy ``accs[i]``."""
    def f(i, res):
        loss = losses[i] if i < len(losses) and losses[i] is not None else res.test_loss
        acc = accs[i] if accs and i < len(accs) and accs[i] is not None else res.accuracy
        return dataclasses.replace(res, test_loss=loss, accuracy=acc)
    return f


ONE = (*FAST, "fl.rounds=1", "fl.sampling='full'")
TINY_BUDGET = "fl.sim_budget_minutes=1e-9"  # any non-empty round exceeds it


@pytest.mark.parametrize("sets, losses, accs, expect", [
    # accuracy target, divergence, budget and the last round all at once: the accuracy target wins
    ((TINY_BUDGET, "fl.stop_accuracy=0.5"), [2.0, math.nan], [0.0, 1.0], "stop_accuracy"),
    # divergence, budget and the last round: divergence wins
    ((TINY_BUDGET, "fl.stop_accuracy=0.5"), [2.0, 4.5], [0.0, 0.1], "stop_divergence"),
    # budget and the last round: the budget
    ((TINY_BUDGET,), [2.0, 3.9], None, "sim_budget_minutes"),
    ((), [2.0, 3.9], None, "rounds"),
])
def test_stop_rule_precedence(tiny_cfg, sets, losses, accs, expect):
    cfg = tiny_cfg(*ONE, *sets, "fl.stop_divergence=2.0", f"output.name='prec-{expect}'")
    res, _ = scripted_run(cfg, _script(losses, accs))
    assert res.records[-1].round == 1 and res.records[-1].stop == expect


def test_nan_test_loss_counts_as_diverged(tiny_cfg):
    sets = (*FAST, "fl.rounds=3", "fl.sampling='full'")
    res, _ = scripted_run(tiny_cfg(*sets, "output.name='nan'"), _script([None, None, math.nan]))
    assert [r.round for r in res.records] == [0, 1, 2] and res.records[-1].stop == "stop_divergence"
    res, _ = scripted_run(tiny_cfg(*sets, "fl.stop_divergence=0", "output.name='nan-off'"),
                          _script([None, None, math.nan]))
    assert res.records[-1].round == 3 and res.records[-1].stop == "rounds"


SHORT = (*FAST, "fl.rounds=5", "eval.every=1", "fl.sampling='full'")


def _trained_rounds(engine):
    return sorted({t for t, _ in engine.uploads})


def _crash_at(eval_index):
    def f(i, res):
        if i == eval_index:
            raise Crash(f"killed during evaluation {i}")
        return res
    return f


@pytest.fixture(scope="module")
def straight(tiny_cfg):
    res, eng = scripted_run(tiny_cfg(*SHORT, "output.name='straight'", "output.checkpoint_every=0"))
    assert _trained_rounds(eng) == [1, 2, 3, 4, 5]
    return res


@pytest.mark.parametrize("every, crash_round, saved", [(2, 3, 2), (3, 5, 3), (1, 4, 3)])
def test_checkpoint_every_and_resume_after_a_crash(tiny_cfg, straight, every, crash_round, saved):
    cfg = tiny_cfg(*SHORT, f"output.checkpoint_every={every}", f"output.name='ck{every}-{crash_round}'")
    with pytest.raises(Crash):
        scripted_run(cfg, _crash_at(crash_round))  # evaluation i belongs to round i
    ck = checkpoint.find(cfg.output.dir + f"/ck{every}-{crash_round}/checkpoint")
    assert checkpoint.load(ck).round == saved
    res, eng = scripted_run(cfg)
    assert _trained_rounds(eng) == list(range(saved + 1, 6))  # resumed after the checkpoint, not before
    assert strip_real_time(res.records) == strip_real_time(straight.records)
    for m in straight.state:
        np.testing.assert_array_equal(res.state[m][0], straight.state[m][0])


def test_checkpoint_every_also_saves_where_a_session_stops(tiny_cfg, straight):
    cfg = tiny_cfg(*SHORT, "output.checkpoint_every=3", "output.name='ck-stop'")
    scripted_run(cfg, stop_after=1)
    assert checkpoint.load(cfg.output.dir + "/ck-stop/checkpoint").round == 1
    res, eng = scripted_run(cfg)
    assert _trained_rounds(eng) == [2, 3, 4, 5]
    assert strip_real_time(res.records) == strip_real_time(straight.records)


def test_checkpoint_every_zero_writes_none_and_a_rerun_starts_over(tiny_cfg, straight):
    cfg = tiny_cfg(*SHORT, "output.checkpoint_every=0", "output.name='ck0'")
    scripted_run(cfg, stop_after=2)
    assert checkpoint.find(cfg.output.dir + "/ck0/checkpoint") is None
    res, eng = scripted_run(cfg)
    assert _trained_rounds(eng) == [1, 2, 3, 4, 5]
    assert strip_real_time(res.records) == strip_real_time(straight.records)


def test_fresh_ignores_a_valid_checkpoint(tiny_cfg, straight):
    cfg = tiny_cfg(*SHORT, "output.name='fresh'")
    scripted_run(cfg, stop_after=3)
    assert checkpoint.load(cfg.output.dir + "/fresh/checkpoint").round == 3
    res, eng = scripted_run(cfg, fresh=True)
    assert _trained_rounds(eng) == [1, 2, 3, 4, 5]
    assert strip_real_time(res.records) == strip_real_time(straight.records)


def test_fresh_on_the_command_line_replaces_another_configs_checkpoint(tiny_cfg, tmp_path):
    from typer.testing import CliRunner

    from fedsketch.cli import app
    from fedsketch.config import to_toml

    scripted_run(tiny_cfg(*SHORT, "output.name='cli'", "train.lr=0.1"), stop_after=1)
    cfg = tiny_cfg(*SHORT, "output.name='cli'")  # same folder, other config: its checkpoint is refused
    path = tmp_path / "cli.toml"
    path.write_text(to_toml(cfg))
    res = CliRunner().invoke(app, ["run", str(path)])
    assert res.exit_code != 0 and "config" in (res.output + repr(res.exception))
    res = CliRunner().invoke(app, ["run", str(path), "--fresh"])
    assert res.exit_code == 0, res.output
    recs = read_metrics(cfg.output.dir + "/cli/metrics.jsonl")
    assert [r.round for r in recs] == [0, 1, 2, 3, 4, 5] and checkpoint.load(
        cfg.output.dir + "/cli/checkpoint", cfg.hash()).round == 5
