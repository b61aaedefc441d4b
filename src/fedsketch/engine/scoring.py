"""The LM head only where a token is scored: the training loss and one prompt pass per question.

A causal LM's logits are ``head(decoder(x))``; the training loss (mean cross-entropy over the
response tokens, ``tokens.mean_response_loss``) and the evaluation score (sum of the response
tokens' log-probabilities, ``tokens.response_logprobs``) only read the logits at the positions
whose *next* token is a response token. Here the decoder runs over the whole sequence but the head (and the
log-softmax over the vocabulary) runs only at those positions, so the ``(b, L, V)`` logits
tensor is never built.

Evaluation additionally runs each question's prompt once, in one of two ways:
``packed_scores`` puts the prompt and all its options into one sequence under a block attention
mask (each option sees the prompt and itself; positions restart after the prompt for every
option), so a batch of questions is one decoder pass without any key/value copies;
``shared_prompt_scores`` runs the prompts, copies their key/value cache to one row per option
and runs the options on top of it (two passes). Both give the same numbers as the full-logits
paths up to float rounding (tests/engine/test_scoring.py).

These functions assume the model's logits are ``lm_head(last_hidden_state)`` (Llama, Qwen2,
SmolLM2, Mistral); a model with a logit soft-cap or scaling is refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedsketch.engine.tokens import IGNORE, Encoded

PACK_SEQS = 8  # at most this many sequences per packed row: the attention cost grows with the row length squared
TALL_HEAD_MAX_ROWS = 64
"""Up to this many scored positions, the CPU head runs as ``(W @ h.T).T`` (:class:`_TallHead`).

With few rows, ``h @ W.T`` over the (V, D) = (49,152, 576) head is memory-bound and the BLAS packs
the transposed weight: on the 2-core CPU of bench/results/engine_speed.md it took 30.8 ms at 17
rows against 16.6 ms for ``W @ h.T`` (20.3 against 35.5 ms at 40 rows; at 100 rows the plain product
is faster, 37.7 against 47.9 ms). A default training step has about 17 scored positions."""
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The decoder stack (returns ``last_hidden_state``) and the LM head of a (PEFT-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    conf = getattr(base, "config", None)
    for key in _LOGIT_TRANSFORMS:
        if getattr(conf, key, None) not in (None, 0, 1, 1.0):
            raise ValueError(
                f"model config sets {key}={getattr(conf, key)!r}: its logits are not lm_head(hidden); "
                "use train.logits='full' and eval.scoring='per_option'"
            )
    return base.get_decoder(), base.get_output_embeddings()


class _TallHead(torch.autograd.Function):
    """``h @ W.T`` computed as ``(W @ h.T).T``; the backward is ``g @ W`` (the fast orientation).

    The weight is frozen (no gradient): the caller checks ``W.requires_grad`` is False.
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # h (n, D), weight (V, D)
        ctx.save_for_backward(weight)
        return (weight @ h.t()).t()  # (n, V), a transposed view

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # grad (n, V)
        (weight,) = ctx.saved_tensors
        return grad @ weight, None  # (n, D)


def head_logits(head: Any, h: torch.Tensor) -> torch.Tensor:
    """``head(h)`` in fp32, shape (n, V); up to :data:`TALL_HEAD_MAX_ROWS` rows on the CPU of a frozen,
    bias-free head as ``(W @ h.T).T`` (same numbers up to rounding, about half the time)."""
    tall = (
        isinstance(head, torch.nn.Linear)
        and head.bias is None
        and not head.weight.requires_grad
        and h.device.type == "cpu"
        and h.shape[0] <= TALL_HEAD_MAX_ROWS
    )
    return (_TallHead.apply(h, head.weight) if tall else head(h)).float()


def pack(batch: dict[str, torch.Tensor], num_groups: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The right-padded ``batch`` packed into ``num_groups`` rows without padding.

    Group g holds batch rows ``g*b/G .. (g+1)*b/G - 1`` (a client's mini-batch) back to back; each
    sequence contributes its tokens but the last (which predicts nothing) with positions restarting
    at 0, so the decoder's packed-sequence mask (from ``position_ids``) keeps the sequences apart.
    Returns ``ids``, ``position_ids`` and next-token ``targets`` (IGNORE where unscored), each
    ``(num_groups, T)``; the rows are padded to the longest group with IGNORE targets.
    """
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    b = ids.shape[0]
    if b % num_groups:
        raise ValueError(f"{b} rows do not split into {num_groups} equal groups")
    n = mask.sum(1).tolist()
    per = b // num_groups
    rows = []
    for g in range(num_groups):
        seqs = range(g * per, (g + 1) * per)
        rows.append(
            (
                torch.cat([ids[i, : n[i] - 1] for i in seqs]),
                torch.cat([torch.arange(n[i] - 1, device=ids.device) for i in seqs]),
                torch.cat([labels[i, 1 : n[i]] for i in seqs]),
            )
        )
    T = max(len(r[0]) for r in rows)
    out_ids = torch.zeros((num_groups, T), dtype=ids.dtype, device=ids.device)
    out_pos = torch.zeros((num_groups, T), dtype=torch.long, device=ids.device)  # padding: length-1 segments
    out_tgt = torch.full((num_groups, T), IGNORE, dtype=labels.dtype, device=ids.device)
    for g, (i_, p_, t_) in enumerate(rows):
        out_ids[g, : len(i_)], out_pos[g, : len(p_)], out_tgt[g, : len(t_)] = i_, p_, t_
    return out_ids, out_pos, out_tgt


def scored_hidden(
    model: Any, batch: dict[str, torch.Tensor], num_groups: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """Decoder output at the scored positions of the packed batch (:func:`pack`).

    Returns ``h`` of shape (n, D) (the hidden state of every position whose next token is a
    response token), the targets (n,), the group of each (n,), and the LM head.
    """
    dec, head = decoder_and_head(model)
    ids, pos, target = pack(batch, num_groups)
    h = dec(input_ids=ids, position_ids=pos).last_hidden_state  # (G, T, D); attention from position_ids
    keep = target != IGNORE
    groups = torch.arange(num_groups, device=ids.device).unsqueeze(1).expand_as(target)[keep]
    return h[keep], target[keep], groups, head


def scored_response_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-mean cross-entropy over the response tokens, the head only at the scored positions.

    The batch runs packed (no padding, :func:`pack`), at most ``PACK_SEQS`` sequences per row. Equals
    ``tokens.mean_response_loss`` (same value and gradients up to rounding).
    """
    b = batch["input_ids"].shape[0]
    rows = next(g for g in range(1, b + 1) if b % g == 0 and b // g <= PACK_SEQS)  # bounded row length
    h, target, _, head = scored_hidden(model, batch, rows)
    return torch.nn.functional.cross_entropy(head_logits(head, h), target)  # (n, V)


def grouped_response_loss(
    model: Any, batch: dict[str, torch.Tensor], num_groups: int, full_logits: bool = False
) -> torch.Tensor:
    """Per-group token-mean cross-entropy over the response tokens, shape (num_groups,).

    Group g is batch rows ``g*b/G .. (g+1)*b/G - 1`` (a client's mini-batch); its value is
    ``mean_response_loss`` of those rows alone. The scored path runs one packed row per group
    (:func:`pack`); ``full_logits`` runs the padded batch with the head at every position (the
    reference path), for comparison.
    """
    if full_logits:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        target = batch["labels"][:, 1:]
        keep = target != IGNORE
        b = target.shape[0]
        rows = torch.arange(b, device=target.device).unsqueeze(1).expand_as(target)[keep]
        g = rows // (b // num_groups)
        logits, target = logits[keep].float(), target[keep]
    else:
        h, target, g, head = scored_hidden(model, batch, num_groups)
        logits = head_logits(head, h)
    tok = torch.nn.functional.cross_entropy(logits, target, reduction="none")  # (n,)
    sums = torch.zeros(num_groups, dtype=tok.dtype, device=tok.device).index_add(0, g, tok)
    counts = torch.bincount(g, minlength=num_groups).to(tok.dtype)
    return sums / counts


def _cache_kw(dec: Any) -> str:
    """The decoder's keyword for a key/value cache (``cache`` in transformers >= 5.x, else ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(dec.forward).parameters else "past_key_values"


@torch.no_grad()
def shared_prompt_scores(
    model: Any,
    items: Sequence[Sequence[Encoded]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    trace: list[int] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sum of log p(option tokens | prompt) for every option of every question, one prompt pass each.

    Options of a question whose (possibly left-truncated) prompt ids are identical share one
    pass over the prompt (a group); the decoder's key/value cache of the prompts is copied to one
    row per option, the option tokens run on top of it at positions ``n_prompt + j``, and the LM
    head runs only on the hidden states that predict an option token: the prompt's last position
    (first option token) and the option's own positions but the last.

    Parameters
    ----------
    items : per question, its options as ``Encoded`` (prompt + option ids)
    batch_size : prompt groups per decoder pass
    trace : optional list; the number of logits (rows x vocabulary) of each head call is appended

    Returns
    -------
    scores, counts : per question, arrays over its options (log-likelihood sum, option tokens)
    """
    dec, head = decoder_and_head(model)
    kw = _cache_kw(dec)
    scores = [np.full(len(c), -np.inf) for c in items]
    counts = [np.zeros(len(c)) for c in items]
    groups: list[tuple[int, tuple[int, ...], list[tuple[int, tuple[int, ...]]]]] = []
    for qi, cands in enumerate(items):
        by: dict[tuple[int, ...], list[tuple[int, tuple[int, ...]]]] = {}
        for ci, s in enumerate(cands):
            by.setdefault(s.ids[: s.n_prompt], []).append((ci, s.ids[s.n_prompt :]))
        groups += [(qi, p, opts) for p, opts in by.items()]
    groups.sort(key=lambda g: len(g[1]))  # similar prompt lengths per pass: less padding
    for j in range(0, len(groups), batch_size):
        chunk = groups[j : j + batch_size]
        g = len(chunk)
        plen = torch.tensor([len(p) for _, p, _ in chunk])
        P = int(plen.max())
        ids = torch.full((g, P), pad_id, dtype=torch.long)
        pmask = torch.zeros((g, P), dtype=torch.long)
        for i, (_, p, _) in enumerate(chunk):
            ids[i, : len(p)] = torch.tensor(p)
            pmask[i, : len(p)] = 1
        out = dec(
            input_ids=ids.to(device),
            attention_mask=pmask.to(device),
            position_ids=torch.arange(P).unsqueeze(0).expand(g, P).to(device),
            use_cache=True,
        )
        h_last = out.last_hidden_state[torch.arange(g), plen - 1]  # (g, D): predicts each first option token
        cache = getattr(out, kw)
        rows = [(i, ci, resp) for i, (_, _, opts) in enumerate(chunk) for ci, resp in opts]
        src = torch.tensor([i for i, _, _ in rows])
        cache.reorder_cache(src.to(device))  # one cache row per option
        R, Lo = len(rows), max(len(resp) for _, _, resp in rows)
        oids = torch.full((R, Lo), pad_id, dtype=torch.long)
        omask = torch.zeros((R, Lo), dtype=torch.long)
        for r, (_, _, resp) in enumerate(rows):
            oids[r, : len(resp)] = torch.tensor(resp)
            omask[r, : len(resp)] = 1
        pos = plen[src].unsqueeze(1) + torch.arange(Lo).unsqueeze(0)  # (R, Lo)
        h_opt = dec(
            input_ids=oids.to(device),
            attention_mask=torch.cat([pmask[src], omask], 1).to(device),
            position_ids=pos.to(device),
            use_cache=True,
            **{kw: cache},
        ).last_hidden_state  # (R, Lo, D)
        # hidden state predicting option token t: the prompt's last for t = 0, the option's t-1 after
        hs: list[torch.Tensor] = []
        tg: list[int] = []  # option tokens, in order
        owner: list[int] = []  # the row of each
        for r, (i, _, resp) in enumerate(rows):
            hs.append(torch.cat([h_last[i : i + 1], h_opt[r, : len(resp) - 1]], 0))
            tg.extend(resp)
            owner.extend([r] * len(resp))
        h = torch.cat(hs, 0)  # (n, D), n = option tokens in the chunk
        logits = head(h).float()  # (n, V)
        if trace is not None:
            trace.append(int(logits.numel()))
        tgt = torch.tensor(tg, device=logits.device)
        lp = torch.log_softmax(logits, dim=-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        per_row = torch.zeros(R, dtype=lp.dtype, device=lp.device).index_add(
            0, torch.tensor(owner, device=lp.device), lp
        )
        for r, (i, ci, resp) in enumerate(rows):
            qi = chunk[i][0]
            scores[qi][ci], counts[qi][ci] = float(per_row[r]), len(resp)
    return scores, counts


def _segments(
    items: Sequence[Sequence[Encoded]],
) -> list[tuple[int, tuple[int, ...], list[tuple[int, tuple[int, ...]]]]]:
    """``(question, prompt ids, [(option index, option ids), ...])``, one per distinct prompt of a question."""
    out = []
    for qi, cands in enumerate(items):
        by: dict[tuple[int, ...], list[tuple[int, tuple[int, ...]]]] = {}
        for ci, s in enumerate(cands):
            by.setdefault(s.ids[: s.n_prompt], []).append((ci, s.ids[s.n_prompt :]))
        out += [(qi, p, opts) for p, opts in by.items()]
    return out


def packed_block_mask(
    seg: torch.Tensor, dtype: torch.dtype = torch.float32, group: torch.Tensor | None = None
) -> torch.Tensor:
    """Additive attention mask (b, 1, T, T) of packed prompt + options rows.

    ``seg`` (b, T) labels each position: 0 a prompt, i >= 1 the i-th option of its question, -1
    padding; ``group`` (b, T), if given, the question each position belongs to (several per row).
    Query q may attend key k iff ``k <= q``, both are in the same question and key k is in the
    prompt or in q's own option; a padding position attends only to itself (its row is never
    read, but must not be all masked). 0 where allowed, the dtype's minimum elsewhere (valid for
    the eager and the sdpa attention).
    """
    T = seg.shape[1]
    q, k = seg.unsqueeze(2), seg.unsqueeze(1)  # (b, T, 1), (b, 1, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=seg.device).tril()
    allowed = causal & ((k == 0) | (k == q)) & (q >= 0) & (k >= 0)
    if group is not None:
        allowed &= group.unsqueeze(2) == group.unsqueeze(1)
    allowed |= torch.eye(T, dtype=torch.bool, device=seg.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seg.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def _first_fit(lengths: Sequence[int]) -> list[list[int]]:
    """Segments into rows of capacity ``max(lengths)``, first-fit by decreasing length (little padding)."""
    cap = max(lengths)
    rows: list[list[int]] = []
    fill: list[int] = []
    for g in sorted(range(len(lengths)), key=lambda g: -lengths[g]):
        r = next((r for r in range(len(rows)) if fill[r] + lengths[g] <= cap), None)
        if r is None:
            rows.append([])
            fill.append(0)
            r = len(rows) - 1
        rows[r].append(g)
        fill[r] += lengths[g]
    return rows


@torch.no_grad()
def packed_scores(
    model: Any,
    items: Sequence[Sequence[Encoded]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    trace: list[int] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sum of log p(option tokens | prompt) for every option, each question's prompt and options in one segment.

    A question (its options whose prompts are identical, as in :func:`shared_prompt_scores`) is
    one segment: the prompt (positions ``0 .. P-1``), then each option's tokens but its last
    (which predicts nothing) at positions ``P .. P + len - 2``, the position ids restarting at
    ``P`` for every option. A block attention mask (:func:`packed_block_mask`) lets an option see
    its own prompt and its own earlier tokens only, so each option's hidden states equal those of
    the sequence prompt + option alone. Segments are packed first-fit into rows as long as the
    longest segment (short questions share a row), ``batch_size`` rows per decoder pass. The LM
    head runs only on the hidden states that predict an option token (the prompt's last position
    for the first one), ``log p = logit - logsumexp``.

    Returns the same as :func:`shared_prompt_scores`.
    """
    dec, head = decoder_and_head(model)
    scores = [np.full(len(c), -np.inf) for c in items]
    counts = [np.zeros(len(c)) for c in items]
    groups = _segments(items)
    if not groups:
        return scores, counts
    lengths = [len(p) + sum(len(o) - 1 for _, o in opts) for _, p, opts in groups]
    rows = _first_fit(lengths)
    rows.sort(key=lambda r: sum(lengths[g] for g in r))  # similar fills per pass
    for j in range(0, len(rows), batch_size):
        chunk = rows[j : j + batch_size]
        b, T = len(chunk), max(sum(lengths[g] for g in r) for r in chunk)
        ids = torch.full((b, T), pad_id, dtype=torch.long)
        pos = torch.zeros((b, T), dtype=torch.long)
        seg = torch.full((b, T), -1, dtype=torch.long)
        grp = torch.full((b, T), -1, dtype=torch.long)
        # per scored token: flat index (row * T + position) of its hidden state, the token, the option it belongs to
        src: list[int] = []
        tgt: list[int] = []
        owner: list[int] = []
        meta: list[tuple[int, int, int]] = []  # per option: (question, option, tokens)
        for i, row in enumerate(chunk):
            o = 0
            for g in row:
                qi, p, opts = groups[g]
                P, start = len(p), o
                ids[i, o : o + P], pos[i, o : o + P], seg[i, o : o + P] = torch.tensor(p), torch.arange(P), 0
                o += P
                for s_, (ci, resp) in enumerate(opts, start=1):
                    n = len(resp) - 1
                    ids[i, o : o + n], pos[i, o : o + n], seg[i, o : o + n] = (
                        torch.tensor(resp[:-1]),
                        torch.arange(P, P + n),
                        s_,
                    )
                    # token t of the option is predicted by the prompt's last position (t = 0) or option token t-1
                    src += [i * T + start + P - 1] + [i * T + o + t for t in range(n)]
                    tgt += resp
                    owner += [len(meta)] * len(resp)
                    meta.append((qi, ci, len(resp)))
                    o += n
                grp[i, start:o] = g
        h = dec(
            input_ids=ids.to(device),
            position_ids=pos.to(device),
            attention_mask=packed_block_mask(seg.to(device), group=grp.to(device)),
        ).last_hidden_state  # (b, T, D)
        h = h.reshape(b * T, -1)[torch.tensor(src, device=device)]  # (n, D), n = option tokens in the chunk
        logits = head(h).float()  # (n, V)
        if trace is not None:
            trace.append(int(logits.numel()))
        target = torch.tensor(tgt, device=device)
        lp = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (n,)
        per = torch.zeros(len(meta), dtype=lp.dtype, device=device).index_add_(
            0, torch.tensor(owner, device=device), lp
        )
        for (qi, ci, n), v in zip(meta, per.tolist(), strict=True):
            scores[qi][ci], counts[qi][ci] = v, n
    return scores, counts
