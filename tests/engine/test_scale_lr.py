"""planner.stability = 'scale_lr' (PAPER.md §8.2): the run trains at train.lr * s and records s."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedsketch.runner import run_experiment

THETA = "planner.theta=[1.0, 0.5, 0.5, 100.0]"


def _record_sgd_lr(monkeypatch) -> list[float]:
    seen: list[float] = []
    real = torch.optim.SGD

    def spy(params, lr, *a, **kw):
        seen.append(float(lr))
        return real(params, lr, *a, **kw)

    monkeypatch.setattr(torch.optim, "SGD", spy)
    return seen


def test_scale_lr_run_trains_at_lr_times_s(tiny_cfg, monkeypatch):
    seen = _record_sgd_lr(monkeypatch)
    cfg = tiny_cfg("fl.sampling='optimized'", "fl.ranks='optimized'", THETA, "fl.rounds=2",
                   "planner.stability='scale_lr'", "planner.max_step_factor=1.0")
    res = run_experiment(cfg)
    info = json.loads((res.run_dir / "run.json").read_text())
    ai = info["allocation_info"]
    p, q, k = (np.asarray(info[x], dtype=float) for x in ("p", "q", "k"))
    r = cfg.lora.rank
    phi = (r / k.min()) * np.sum(p * (1 - p) + p**2 / q)  # kappa_max * Omega by hand (§8)
    s = min(1.0, 1.0 / phi)
    assert ai["stability"] == "scale_lr" and ai["lr_scale"] == pytest.approx(s) and s < 1.0
    assert ai["train_lr"] == pytest.approx(cfg.train.lr * s)
    assert seen and all(lr == pytest.approx(cfg.train.lr * s, rel=1e-12) for lr in seen)


def test_other_forms_train_at_the_configured_lr(tiny_cfg, monkeypatch):
    seen = _record_sgd_lr(monkeypatch)
    cfg = tiny_cfg("fl.sampling='optimized'", "fl.ranks='optimized'", THETA, "fl.rounds=1",
                   "planner.stability='constrain'", "planner.max_step_factor=3.0")
    res = run_experiment(cfg)
    ai = json.loads((res.run_dir / "run.json").read_text())["allocation_info"]
    assert ai["lr_scale"] == 1.0 and ai["step_factor"] <= 3.0 * (1 + 1e-9)
    assert seen and all(lr == cfg.train.lr for lr in seen)
