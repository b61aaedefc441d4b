"""Each round's ``round_sim_seconds`` recomputed from the run folder (issue 11, point 6b).

The oracle re-solves eq. 10 of PAPER.md from ``run.json``'s ``t_cp``, ``t_cm`` and the sampled ids
in ``metrics.jsonl``, with its own bisection: T is the smallest time at which the shares each
client needs to finish by T, ``f_n = t_cm_n / (T - t_cp_n)``, fit in W. FLoRA's clients also
download the previous round's stacked module, ``tau_cm_n * sum_{K_{t-1}} k / r`` (its docstring),
which joins their communication load.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle_helpers import recording_run

from fedsketch.records import read_metrics


def equal_finish_time(t_cp: np.ndarray, load: np.ndarray, W: float) -> float:
    """min over shares f >= 0, sum f <= W, of max_n t_cp_n + load_n / f_n, by bisection on T."""
    if t_cp.size == 0:
        return 0.0
    lo, hi = float(t_cp.max()), float(t_cp.max() + load.sum() / W)  # need(hi) <= W < need(lo+)
    for _ in range(400):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        need = np.inf if mid <= t_cp.max() else float(np.sum(load / (mid - t_cp)))
        lo, hi = (mid, hi) if need > W else (lo, mid)
    return hi


def _check_clock(cfg, res, info, download_per_round=None):
    recs = read_metrics(res.run_dir / "metrics.jsonl")
    t_cp, t_cm = np.asarray(info["t_cp"]), np.asarray(info["t_cm"])
    W, clock = cfg.network.bandwidth_mbps, 0.0
    for t, rec in enumerate(recs[1:], start=1):
        ids = np.asarray(rec.sampled, dtype=int)
        load = t_cm[ids] + (download_per_round(t, recs)[ids] if download_per_round else 0.0)
        T = equal_finish_time(t_cp[ids], load, W)
        assert rec.round_sim_seconds == pytest_approx(T), f"round {t}"
        clock += T
        assert rec.sim_seconds == pytest_approx(clock), f"round {t}"
    return recs


def pytest_approx(x):
    return pytest.approx(x, rel=1e-10, abs=1e-12)


def test_round_time_of_independent_sampling_matches_a_separate_root_finder(tiny_cfg):
    cfg = tiny_cfg("fl.rounds=6", "fl.q=0.5", "fl.ranks='capability'", "data.num_clients=6", "eval.every=0",
                   "eval.num_samples=2", "fl.local_steps=1")
    res, _, info = recording_run(cfg)
    assert len(set(np.round(info["t_cp"], 12))) > 1  # heterogeneous compute: the root is not closed-form
    recs = _check_clock(cfg, res, info)
    sizes = {len(r.sampled) for r in recs[1:]}
    assert len(sizes) > 1 and max(sizes) > 1  # the cohort size varies (independent coins)


def test_flora_round_time_includes_the_stacked_download(tiny_cfg):
    cfg = tiny_cfg("fl.rounds=4", "fl.method='flora'", "fl.clients_per_round=2", "fl.ranks='uniform'",
                   "eval.every=0", "eval.num_samples=2", "fl.local_steps=1")
    res, _, info = recording_run(cfg)
    tau_cm, k, r = np.asarray(info["tau_cm"]), np.asarray(info["k"]), cfg.lora.rank

    def download(t, recs):
        prev = recs[t - 1].sampled if t > 1 else []
        return tau_cm * float(np.sum(k[prev])) / r

    recs = _check_clock(cfg, res, info, download)
    assert recs[2].download_mbit is not None and recs[2].download_mbit > 0
