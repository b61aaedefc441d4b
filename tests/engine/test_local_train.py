"""Sketched local training on a tiny model (PAPER.md eqs. 5, 7, 8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsketch.data import build_federated_data
from fedsketch.engine import lora
from fedsketch.engine.runtime import TorchEngine
from fedsketch.engine.tokens import collate, mean_response_loss
from fedsketch.rng import Streams
from fedsketch.runner.build import engine_settings
from fedsketch.sketch import draw_indices


@pytest.fixture
def engine(tiny_cfg):
    cfg = tiny_cfg("lora.rank=8")
    d = build_federated_data(cfg)
    eng = TorchEngine(engine_settings(cfg), d.train, d.test, d.parts, Streams(cfg.seed))
    # a non-zero B so that every factor receives gradient
    st = eng.initial_state()
    rng = np.random.default_rng(0)
    st = {m: (0.05 * rng.normal(size=B.shape).astype(np.float32), A) for m, (B, A) in st.items()}
    return eng, st


def test_only_selected_components_move(engine):
    eng, st = engine
    idx = draw_indices(np.random.default_rng(1), eng.module_names, 8, 3)
    u = eng.train_client(st, 0, 1, idx)
    assert u.train_loss == u.train_loss  # finite
    moved = 0.0
    for m in eng.module_names:
        dB, dA = u.delta[m]
        assert dB.shape[1] == 3 and dA.shape[0] == 3
        moved += np.abs(dB).sum() + np.abs(dA).sum()
    assert moved > 0
    # the live model's factors outside I stayed zero (the masked start) -> nothing else changed
    after = lora.get_state(eng.modules)
    for m in eng.module_names:
        out = np.setdiff1d(np.arange(8), idx[m])
        assert np.all(after[m][0][:, out] == 0) and np.all(after[m][1][out, :] == 0)
    # the scale is restored for evaluation
    assert lora.base_scaling(eng.modules) == pytest.approx(eng.scaling)


def test_full_rank_sketch_equals_plain_lora(engine):
    """k = r: the engine's update equals H plain PEFT SGD steps on the same batches."""
    eng, st = engine
    settings = eng.settings
    idx = {m: np.arange(8) for m in eng.module_names}
    u = eng.train_client(st, 1, 1, idx)
    # plain LoRA: same start, same mini-batches (same stream), scale s, torch SGD
    lora.set_state(eng.modules, st)
    params = lora.lora_parameters(eng.modules)
    opt = torch.optim.SGD(params, lr=settings.train.lr)
    rng = eng.streams.generator("batches", 1, 1)  # a fresh generator of the run seed's stream
    data = eng.client_data[1]
    eng.model.train()
    for _ in range(settings.local_steps):
        pick = rng.choice(len(data), size=settings.batch_size, replace=False)
        loss = mean_response_loss(eng.model, collate([data[i] for i in pick], eng.tok.pad_token_id))
        opt.zero_grad()
        loss.backward()
        opt.step()
    eng.model.eval()
    ref = lora.get_state(eng.modules)
    for m in eng.module_names:
        np.testing.assert_allclose(st[m][0] + u.delta[m][0], ref[m][0], atol=1e-6)
        np.testing.assert_allclose(st[m][1] + u.delta[m][1], ref[m][1], atol=1e-6)


def test_sketch_scale_is_r_over_k(engine):
    """A sketched client's forward equals the unsketched LoRA of B S A (eq. 4) at step 0."""
    eng, st = engine
    idx = draw_indices(np.random.default_rng(2), eng.module_names, 8, 2)
    name = eng.module_names[0]
    mod = eng.modules[name]
    from fedsketch.sketch import masked, sketched_product

    lora.set_state(eng.modules, masked(st, idx))
    lora.set_scaling(eng.modules, eng.scaling * 8 / 2)
    x = torch.randn(3, mod.in_features)
    with torch.no_grad():
        got = mod(x) - mod.base_layer(x)
    lora.set_scaling(eng.modules, eng.scaling)
    B, A = st[name]
    want = eng.scaling * x.numpy() @ sketched_product(B, A, idx[name]).T
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


def test_model_loads_from_a_local_folder(tiny_cfg, tmp_path):
    """Any Hugging Face causal LM in a local folder (here: the tiny model saved to disk)."""
    from fedsketch.engine.model import ModelError, load_base_model

    cfg = tiny_cfg()
    model, tok = load_base_model(cfg.model)
    folder = tmp_path / "my-model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    local = tiny_cfg(f"model.name='{folder}'", "model.num_layers=1")
    m2, _ = load_base_model(local.model)
    assert len(m2.model.layers) == 1
    x = torch.tensor([[1, 2, 3]])
    full, _ = load_base_model(tiny_cfg(f"model.name='{folder}'").model)
    torch.testing.assert_close(full(x).logits, model(x).logits)
    with pytest.raises(ModelError, match="model.name: local folder /nonexistent/model does not exist"):
        load_base_model(tiny_cfg("model.name='/nonexistent/model'").model)


def test_encode_keeps_a_prompt_token_and_the_response(engine):
    from fedsketch.engine.tokens import encode

    eng, _ = engine
    e = encode(eng.tok, "Question: " + "word " * 100, " a long answer " * 20, 16)
    assert len(e.ids) <= 16 and e.n_prompt >= 1 and len(e.ids) - e.n_prompt == 15


def test_adding_lora_prints_no_third_party_deprecation(tiny_cfg):
    """PEFT reads `is_gradient_checkpointing`, which transformers deprecates with a FutureWarning that every
    command printed; add_lora keeps it off the console (and only that one)."""
    import warnings

    from fedsketch.engine.model import add_lora, load_base_model

    cfg = tiny_cfg()
    model, _ = load_base_model(cfg.model)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        add_lora(model, cfg.lora)
    assert not [w for w in seen if issubclass(w.category, FutureWarning)], [str(w.message) for w in seen]
