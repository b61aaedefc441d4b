"""Flower simulation backend vs the in-process engine (PAPER.md Algorithm 1, eqs. 6 and 10)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("flwr")

from fedsketch.records import read_metrics  # noqa: E402
from fedsketch.runner import run_experiment  # noqa: E402

RAY = {"num_cpus": 2}


def test_flower_matches_inprocess(tiny_cfg):
    """Same config and seed, 2 rounds: same global adapter, sampled sets and simulated clock."""
    from fedsketch.flower.run import run_flower

    ref = run_experiment(tiny_cfg("output.name='inproc'"))
    stats: dict = {}
    fl = run_flower(tiny_cfg("output.name='flower'"), ray_init_args=RAY, stats=stats)
    assert set(fl.state) == set(ref.state)
    diff = max(float(np.max(np.abs(fl.state[m][i] - ref.state[m][i]))) for m in ref.state for i in (0, 1))
    assert diff <= 1e-6
    moved = max(float(np.max(np.abs(ref.state[m][0]))) for m in ref.state)
    assert moved > 0  # B_0 = 0, so training did change the adapter
    a, b = read_metrics(ref.run_dir / "metrics.jsonl"), read_metrics(fl.run_dir / "metrics.jsonl")
    assert [r.round for r in b] == [0, 1, 2]
    for x, y in zip(a, b, strict=True):
        assert x.sampled == y.sampled and x.failed == y.failed == []
        assert x.sim_seconds == pytest.approx(y.sim_seconds, rel=1e-12)
        assert x.uploaded_bytes == y.uploaded_bytes
        assert x.accuracy == y.accuracy
        if x.train_loss is not None:
            assert x.train_loss == pytest.approx(y.train_loss, abs=1e-6)
    assert sum(len(r.sampled) for r in b) > 0
    # same run folder layout
    for name in ("config.toml", "run.json", "metrics.jsonl", "checkpoint/manifest.json", "adapter/adapter_config.json"):
        assert (fl.run_dir / name).is_file(), name
    ja, jb = json.loads((ref.run_dir / "run.json").read_text()), json.loads((fl.run_dir / "run.json").read_text())
    assert ja["q"] == jb["q"] and ja["k"] == jb["k"] and ja["config_hash"] == jb["config_hash"]
    assert len(stats["round_wall_seconds"]) == 2


def test_failing_client_is_recorded_and_round_aggregates(tiny_cfg):
    """4 clients, 2 rounds, all sampled; client 2's ClientApp raises -> failed, others aggregate."""
    from fedsketch.flower.run import run_flower

    cfg = tiny_cfg("fl.sampling='full'", "fl.ranks='fixed'", "fl.k=2", "output.name='fail'")
    res = run_flower(cfg, faults={2: "raise"}, ray_init_args=RAY)
    recs = read_metrics(res.run_dir / "metrics.jsonl")
    assert [r.round for r in recs] == [0, 1, 2]
    for r in recs[1:]:
        assert r.sampled == [0, 1, 2, 3]
        assert [f["client"] for f in r.failed] == [2]
        assert "injected fault" in r.failed[0]["reason"] and "client error" in r.failed[0]["reason"]
        assert r.train_loss is not None and np.isfinite(r.accuracy)
        # three uploads of k=2 components were aggregated
        per_client = sum(B.size + A.size for B, A in res.state.values()) * 2 // cfg.lora.rank
        assert r.uploaded_bytes == 3 * (per_client * cfg.network.upload_bits // 8 + 2 * len(res.state) * 4)
    assert (res.run_dir / "adapter" / "adapter_config.json").is_file()
