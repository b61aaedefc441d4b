"""`fedsketch plan` plans with the upload times the run uses (issue 11, point 5).

The oracle is the run itself: ``run.json``'s ``tau_cm`` comes from the payload the engine
measures on the loaded model (``TorchEngine.num_values_full_rank``); the plan counts it from the
model's shapes on the meta device. A hand count of r (d + m) checks a real-size architecture.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fedsketch.cli import app
from fedsketch.config import load_config, to_toml
from fedsketch.runner import run_experiment

THETA = "planner.theta=[1.0, 0.5, 0.5, 100.0]"


def _plan_json(cfg, tmp_path) -> dict:
    path = tmp_path / "plan-config.toml"
    path.write_text(to_toml(cfg))
    res = CliRunner().invoke(app, ["plan", str(path), "--json", "--out", str(tmp_path / "plan.json")])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def _run_json(cfg) -> dict:
    res = run_experiment(cfg)
    return json.loads((res.run_dir / "run.json").read_text())


def test_plan_uses_the_runs_tau_cm_for_the_tiny_model(tiny_cfg, tmp_path):
    cfg = tiny_cfg(THETA, "fl.rounds=1", "lora.target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj']")
    plan, info = _plan_json(cfg, tmp_path), _run_json(cfg)
    np.testing.assert_allclose(plan["tau_cm"], info["tau_cm"], rtol=1e-12)
    np.testing.assert_allclose(plan["tau_cp"], info["tau_cp"], rtol=1e-12)
    # by hand: 2 layers, hidden 64, 2 KV heads of 16: q, o 64->64, k, v 64->32; r = 8, 16 bits
    payload = 2 * 8 * (128 + 128 + 96 + 96) * 16 / 1e6
    rho_min = cfg.network.rate_min
    assert np.all(np.asarray(info["tau_cm"]) >= payload) and np.all(np.asarray(info["tau_cm"]) <= payload / rho_min)


@pytest.fixture
def qwen2_folder(tmp_path):
    """A tiny random Qwen2 (another architecture: biased q/k/v, 1 KV head, 3 layers) in a local folder."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from fedsketch.config import ModelConfig
    from fedsketch.engine.model import TINY, load_base_model

    _, tok = load_base_model(ModelConfig(name=TINY))
    conf = Qwen2Config(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=512,
                       tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    folder = tmp_path / "tiny-qwen2"
    Qwen2ForCausalLM(conf).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_plan_uses_the_runs_tau_cm_for_another_architecture(tiny_cfg, tmp_path, qwen2_folder):
    cfg = tiny_cfg(THETA, "fl.rounds=1", f"model.name='{qwen2_folder}'", "model.num_layers=2",
                   "lora.target_modules=['q_proj', 'v_proj', 'down_proj']", "network.upload_bits=32")
    plan, info = _plan_json(cfg, tmp_path), _run_json(cfg)
    np.testing.assert_allclose(plan["tau_cm"], info["tau_cm"], rtol=1e-12)
    # the SmolLM2 fallback the old second definition used would differ by orders of magnitude
    smollm2 = 30 * 1920 * cfg.lora.rank * 32 / 1e6
    assert np.max(plan["tau_cm"]) < smollm2 / 10


def _payload_for(tmp_path, conf, *sets):
    from fedsketch.runner.build import config_payload_mbit

    folder = tmp_path / type(conf).__name__
    conf.save_pretrained(folder)  # config.json only: no weights
    cfg = load_config(None, [f"model.name='{folder}'", *sets])
    return config_payload_mbit(cfg)


def test_payload_of_real_size_architectures_matches_a_hand_count(tmp_path):
    from transformers import LlamaConfig, Qwen2Config

    # Qwen2.5-1.5B shapes: hidden 1536, 12 heads of 128, 2 KV heads -> v_proj 1536 -> 256; 28 layers
    qwen = Qwen2Config(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, vocab_size=151936)
    got = _payload_for(tmp_path, qwen, "lora.rank=8", "network.upload_bits=16")
    assert got == pytest.approx(28 * 8 * ((1536 + 1536) + (1536 + 256)) * 16 / 1e6, rel=1e-12)
    # a Llama with 4 of its 16 layers, LoRA on all attention and MLP projections, r = 4
    llama = LlamaConfig(hidden_size=256, intermediate_size=704, num_hidden_layers=16, num_attention_heads=8,
                        num_key_value_heads=4, vocab_size=1000)
    mods = "['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']"
    got = _payload_for(tmp_path, llama, "lora.rank=4", "model.num_layers=4", f"lora.target_modules={mods}",
                       "network.upload_bits=32")
    per_layer = (256 + 256) * 2 + (256 + 128) * 2 + (256 + 704) * 3
    assert got == pytest.approx(4 * 4 * per_layer * 32 / 1e6, rel=1e-12)
    # network.payload_mbit > 0 wins over the model, as in the run
    assert _payload_for(tmp_path, llama, "network.payload_mbit=7.5") == 7.5


def test_plan_without_a_payload_is_refused_not_guessed():
    from fedsketch.runner.build import profiles_from_config

    cfg = load_config(None, ["data.num_clients=3"])
    with pytest.raises(ValueError, match="network.payload_mbit"):
        profiles_from_config(cfg)
