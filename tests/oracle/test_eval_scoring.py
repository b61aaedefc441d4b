"""Evaluation scoring against a hand computation on a toy model (issue 11, point 6e).

The toy model is the tiny Llama with every attention ``o_proj`` and MLP ``down_proj`` zeroed, so
each decoder layer adds nothing to the residual stream and the logits at a position depend on
that position's token only: ``logits(x) = rmsnorm(E[x]) @ E^T`` (tied embeddings). It is a bigram
model whose table this test computes in float64 numpy from the weights. The oracle scores each
candidate as ``sum_j log P(resp_j | previous token)``, the first response token conditioned on the
last prompt token, predicts the argmax, and takes the test loss as the correct candidate's mean
per-token NLL. A scorer shifted by one token (a token scored by its own position's logits, or
the prompt's last token scored instead of the response's last) gives other numbers, which the
test checks it can tell apart.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsketch.config import ModelConfig, load_config
from fedsketch.data.datasets import MCQExample
from fedsketch.data.prompts import format_choices
from fedsketch.engine.model import TINY, load_base_model
from fedsketch.engine.runtime import TorchEngine
from fedsketch.rng import Streams
from fedsketch.runner.build import engine_settings

QUESTIONS = [
    ("What colour is the sky on a clear day?", ("blue", "green", "a bright shade of orange")),
    ("Which animal barks?", ("the cat", "dog", "a fish", "parrots")),
    ("Where do penguins live?", ("Antarctica", "the Sahara desert")),
    ("What do bees make?", ("honey", "steel beams", "paper")),
    ("How many legs does a spider have?", ("eight", "six", "two", "ten thousand")),
    ("What is frozen water called?", ("ice", "steam", "sand")),
]


def _toy():
    model, tok = load_base_model(ModelConfig(name=TINY))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return model, tok


_ROWS: dict[tuple[int, int], np.ndarray] = {}


def _bigram_logp(model, prev: int, nxt: int) -> float:
    """log P(nxt | prev) of the toy model, in float64: log_softmax(rmsnorm(E[prev]) @ E^T)."""
    key = (id(model), prev)
    if key not in _ROWS:
        E = model.model.embed_tokens.weight.detach().double().numpy()  # (V, h)
        g = model.model.norm.weight.detach().double().numpy()
        x = E[prev]
        logits = E @ (x / np.sqrt(np.mean(x * x) + model.config.rms_norm_eps) * g)  # tied lm_head
        logits -= logits.max()
        _ROWS[key] = logits - np.log(np.exp(logits).sum())
    return float(_ROWS[key][nxt])


def _oracle_scores(model, tok, prompt: str, cands: list[str], shift: int = 0):
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    out = []
    for c in cands:
        resp = tok(c, add_special_tokens=False)["input_ids"]
        ids = p + resp
        pos = range(len(p), len(ids))
        # shift 0: token j predicted from token j-1; shift -1: from itself; shift +1: window one early
        pairs = [(ids[j - 1 + (shift == -1)], ids[j - (shift == 1)]) for j in pos]
        out.append((sum(_bigram_logp(model, a, b) for a, b in pairs), len(resp)))
    return out


def _oracle(model, tok, examples, shift=0):
    preds, nll = [], []
    for ex in examples:
        prompt, cands = format_choices(ex, "cloze")
        sc = _oracle_scores(model, tok, prompt, cands, shift)
        preds.append(int(np.argmax([s for s, _ in sc])))
        nll.append(-sc[ex.label][0] / sc[ex.label][1])
    labels = np.array([ex.label for ex in examples])
    return float(np.mean(np.array(preds) == labels)), float(np.mean(nll)), preds


def _examples(labels):
    return [MCQExample(question=q, options=o, label=lab, instruction=q, output=o[lab])
            for (q, o), lab in zip(QUESTIONS, labels, strict=True)]


def test_engine_scores_candidates_as_a_hand_computed_bigram(tmp_path):
    model, tok = _toy()
    _, _, preds = _oracle(model, tok, _examples([0] * len(QUESTIONS)))
    # half the labels are the oracle's prediction, half another option: accuracy 0.5 by construction
    labels = [p if i % 2 == 0 else (p + 1) % len(QUESTIONS[i][1]) for i, p in enumerate(preds)]
    examples = _examples(labels)
    acc, loss, _ = _oracle(model, tok, examples)
    assert acc == 0.5
    for shift in (-1, 1):  # the oracle can tell a one-token shift apart
        assert abs(_oracle(model, tok, examples, shift)[1] - loss) > 1e-2 * loss
    cfg = load_config(None, [f"model.name='{TINY}'", "data.num_clients=1", "eval.num_samples=0",
                             "data.prompt_format='cloze'", "eval.batch_size=5", f"output.dir='{tmp_path}'"])
    engine = TorchEngine(engine_settings(cfg), examples, examples, [np.arange(len(examples))], Streams(0), model=model, tokenizer=tok)
    res = engine.evaluate(engine.initial_state())  # B = 0: the LoRA branch adds nothing
    assert res.num_questions == len(examples)
    assert res.accuracy == 0.5
    assert res.test_loss == pytest.approx(loss, rel=1e-5)
    assert res.pred_max_share == pytest.approx(np.bincount(preds).max() / len(preds))
