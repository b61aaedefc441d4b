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


# Every execution layout of a round's clients, as `--set` overrides (and the backend).
LAYOUTS = {
    "one-client": ("inprocess", ["train.client_batch=1", "train.workers=1"]),
    "fused-3": ("inprocess", ["train.client_batch=3", "train.workers=1"]),
    "fused-all": ("inprocess", ["train.client_batch=0", "train.workers=1"]),
    "forked-workers-2": ("inprocess", ["train.client_batch=1", "train.workers=2"]),
    "flower-simulation": ("flower", ["train.threads=1"]),
}


def _flat_delta(u) -> np.ndarray:
    return np.concatenate([x.ravel() for m in sorted(u.delta) for x in u.delta[m]])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_trains_each_client_at_lr_times_s(tiny_cfg, monkeypatch, layout):
    """The learning rate each client actually trains at, measured from its upload, is train.lr * s.

    Oracle: one local SGD step (H = 1; momentum's first step is the plain gradient, clipping is off) moves the
    client's factors by ``-lr * grad``, so its upload is linear in lr. The same client trained on its own
    engine at ``train.lr`` (the unscaled reference) gives the upload at rate ``train.lr``; the rate the run
    used is ``train.lr * <upload, ref> / <ref, ref>``, and s comes from run.json's p, q, k by hand (§8).
    """
    from fedsketch.runner.build import prepare_federation
    from fedsketch.runner.run import Run

    backend, sets = LAYOUTS[layout]
    cfg = tiny_cfg("fl.sampling='full'", "fl.ranks='optimized'", THETA, "fl.rounds=1", "fl.local_steps=1",
                   "planner.stability='scale_lr'", "planner.max_step_factor=1.0", f"output.name='{layout}'", *sets)
    seen: list = []  # (global state, plan, accepted uploads) of each round, as the server saw them
    real_validate = Run.validate

    def spy(self, plan, results):
        updates, failed = real_validate(self, plan, results)
        seen.append((self.state, plan, updates, failed))
        return updates, failed

    monkeypatch.setattr(Run, "validate", spy)
    if backend == "flower":
        pytest.importorskip("flwr")
        from fedsketch.flower.run import run_flower

        res = run_flower(cfg, ray_init_args={"num_cpus": 2})
    else:
        res = run_experiment(cfg)
    info = json.loads((res.run_dir / "run.json").read_text())
    p, q, k = (np.asarray(info[x], dtype=float) for x in ("p", "q", "k"))
    s = min(1.0, 1.0 / ((cfg.lora.rank / k.min()) * np.sum(p * (1 - p) + p**2 / q)))  # kappa_max * Omega (§8)
    assert s < 1.0 and info["allocation_info"]["train_lr"] == pytest.approx(cfg.train.lr * s)

    ((state, plan, updates, failed),) = seen
    assert not failed and len(updates) == cfg.data.num_clients >= 4  # all sampled: fused-3 runs groups of 3 and 1
    ref_engine, _ = prepare_federation(cfg)  # a fresh engine trains at train.lr
    for u in updates:
        ref = _flat_delta(
            ref_engine.train_client(state, u.client, plan.round, u.indices, scale=plan.scales.get(u.client))
        )
        got = _flat_delta(u)
        assert np.abs(ref).max() > 0
        lr = cfg.train.lr * float(got @ ref / (ref @ ref))
        assert lr == pytest.approx(cfg.train.lr * s, rel=1e-3), f"client {u.client} trained at {lr:.6g}"
        np.testing.assert_allclose(got, (lr / cfg.train.lr) * ref, rtol=0, atol=1e-4 * np.abs(ref).max())
