"""The round record and ``metrics.jsonl``: what is written, and that every committed file reads back
and writes out byte for byte."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedsketch.records import RoundRecord, read_metrics, read_metrics_dicts, run_finished, write_metrics

REPO = Path(__file__).resolve().parents[2]
COMMITTED = sorted((REPO / "results").rglob("metrics.jsonl"))


def test_committed_metrics_files_round_trip_byte_for_byte(tmp_path):
    assert len(COMMITTED) > 100
    for f in COMMITTED:
        write_metrics(tmp_path / "m.jsonl", read_metrics(f))
        assert (tmp_path / "m.jsonl").read_bytes() == f.read_bytes(), f


def test_absent_fields_stay_absent_and_train_loss_is_written_as_null(tmp_path):
    rec0 = RoundRecord(round=0, real_seconds=0.5)
    rec0.update({"accuracy": 0.25, "test_loss": 3.0, "pred_max_share": 0.5, "num_eval": 8})
    rec1 = RoundRecord(round=1, sim_seconds=7.0, real_seconds=1.0, round_sim_seconds=7.0, sampled=[0, 2],
                       failed=[{"client": 2, "reason": "non_finite"}], uploaded_bytes=10, client_bytes=[10, 0],
                       bandwidth_mbps=[50.0, 50.0], train_loss=None, client_compute_seconds=0.1, stop="rounds")
    write_metrics(tmp_path / "m.jsonl", [rec0, rec1])
    d0, d1 = read_metrics_dicts(tmp_path / "m.jsonl")
    assert sorted(d0) == ["accuracy", "failed", "num_eval", "pred_max_share", "real_seconds", "round", "sampled",
                          "sim_seconds", "test_loss", "train_loss", "uploaded_bytes"]
    assert d0["train_loss"] is None and "download_mbit" not in d1 and "accuracy" not in d1 and d1["stop"] == "rounds"
    assert read_metrics(tmp_path / "m.jsonl") == [rec0, rec1]
    assert rec1.all_failed is False and RoundRecord(round=2, sampled=[1], failed=rec1.failed).all_failed
    assert not RoundRecord(round=3).all_failed  # nobody sampled: not a failed round


def test_unknown_keys_are_kept_in_extra():
    rec = RoundRecord(round=1)
    rec.update({"probe_loss": 2.5, "stop": "pilot_loss"})
    assert rec.stop == "pilot_loss" and rec.extra == {"probe_loss": 2.5}
    assert RoundRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    nan = RoundRecord.from_dict({"round": 4, "test_loss": math.nan})
    assert math.isnan(nan.test_loss) and not nan.evaluated


@pytest.mark.parametrize(("last", "rounds", "done"), [
    (RoundRecord(round=3), 3, True), (RoundRecord(round=2), 3, False),
    (RoundRecord(round=1, stop="sim_budget_minutes"), 3, True), (None, 3, False)])
def test_run_finished(last, rounds, done):
    assert run_finished([] if last is None else [RoundRecord(round=0), last], rounds) is done
