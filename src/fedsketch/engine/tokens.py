"""Tokenisation with the loss on the response only, and right-padded batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """One sequence: ``ids`` of prompt + response, ``n_prompt`` tokens of which are the prompt."""

    ids: tuple[int, ...]
    n_prompt: int


def encode(tok: Any, prompt: str, response: str, max_len: int) -> Encoded:
    """Token ids of prompt + response, truncating the prompt from the left to fit ``max_len``."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"][: max_len - 1]
    if not r or not p:
        raise ValueError(f"empty prompt or response after tokenisation: {prompt[:60]!r} -> {response[:60]!r}")
    p = p[len(p) - max(1, max_len - len(r)) :]  # keep >= 1 prompt token: the first response token is predicted
    return Encoded(ids=tuple(p) + tuple(r), n_prompt=len(p))


def collate(seqs: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (prompt and padding -100)."""
    L = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)  # (b, L)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    labels = torch.full((len(seqs), L), IGNORE, dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s.ids)
        ids[i, :n] = torch.tensor(s.ids)
        mask[i, :n] = 1
        labels[i, s.n_prompt : n] = ids[i, s.n_prompt : n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def response_logprobs(
    model: Any, batch: dict[str, torch.Tensor], trace: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(response tokens | prefix) per sequence, and the response token counts.

    Shapes: logits (b, L, V); targets are shifted by one position. ``trace``, if given, gets
    the number of logits computed.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    if trace is not None:
        trace.append(int(logits.numel()))
    logits = logits[:, :-1].float()  # (b, L-1, V) predicts token t+1
    target = batch["labels"][:, 1:]  # (b, L-1)
    keep = target != IGNORE
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * keep).sum(-1), keep.sum(-1)


def mean_response_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-mean cross-entropy over the response tokens of the batch (the training loss)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, V).float(), batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE
    )
