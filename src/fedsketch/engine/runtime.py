"""The torch engine: executes what the server decides (local sketched training, evaluation).

It holds the base model with one PEFT LoRA adapter of rank r and swaps the global or a
client's factors in and out. It never decides who trains or with which ranks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsketch.config import AdapterConfig, EvalConfig, ModelConfig, TrainConfig
from fedsketch.engine import lora
from fedsketch.engine.model import add_lora, load_base_model, scoped_seed
from fedsketch.engine.scoring import grouped_response_loss, packed_scores, scored_response_loss, shared_prompt_scores
from fedsketch.engine.stacked import StackedLoRA
from fedsketch.engine.tokens import Encoded, collate, encode, mean_response_loss, response_logprobs
from fedsketch.io import atomic_write_dir
from fedsketch.rng import Streams
from fedsketch.sketch import MERGED, ClientJob, ClientUpdate, LoraState, extract, is_merged, masked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    """What the engine reads of a run's configuration: four sections and four plain values.

    Built from the whole config by :func:`fedsketch.runner.build.engine_settings`; the engine
    never sees an ``ExperimentConfig``.

    Parameters
    ----------
    model : ModelConfig
        The base model to load (unless one is passed to the engine).
    lora : AdapterConfig
        Rank r, alpha, target modules, dropout, rsLoRA.
    train : TrainConfig
        Local SGD (lr, momentum, clipping), threads, device, ``logits``.
    eval : EvalConfig
        Test sample (``num_samples``, ``sample_seed``), ``scoring`` and ``batch_size``.
    max_seq_len : int
        Tokens per training example (``data.max_seq_len``).
    prompt_format : str
        ``data.prompt_format``.
    local_steps : int
        H, local SGD steps per round (``fl.local_steps``).
    batch_size : int
        Mini-batch size of a local step (``fl.batch_size``).
    """

    model: ModelConfig
    lora: AdapterConfig
    train: TrainConfig
    eval: EvalConfig
    max_seq_len: int
    prompt_format: str
    local_steps: int
    batch_size: int


@dataclass
class EvalResult:
    accuracy: float
    test_loss: float  # mean per-token NLL of the correct answer
    pred_max_share: float  # share of the most frequent predicted option position (spread check)
    num_questions: int

    def as_dict(self) -> dict[str, float]:
        return {
            "accuracy": self.accuracy,
            "test_loss": self.test_loss,
            "pred_max_share": self.pred_max_share,
            "num_eval": self.num_questions,
        }


class TorchEngine:
    """Base model + LoRA, client datasets already tokenised.

    Parameters
    ----------
    settings : EngineSettings
        What the engine reads of the config (``fedsketch.runner.build.engine_settings``).
    train_examples, test_examples : list of MCQExample
    parts : list of index arrays, one per client, into ``train_examples``
    streams : Streams
        Named random streams; the engine uses ``lora_init``, ``batches[t, n]``, ``dropout[t, n]``
        and ``eval_sample``.
    model, tokenizer : optional
        Reuse an already loaded base model (it is wrapped with LoRA here).
    """

    def __init__(
        self,
        settings: EngineSettings,
        train_examples: list,
        test_examples: list,
        parts: list[np.ndarray],
        streams: Streams,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        from fedsketch.data.prompts import format_choices, format_train

        self.settings, self.streams = settings, streams
        if settings.train.threads:
            torch.set_num_threads(settings.train.threads)
        self.device = torch.device(
            "cuda"
            if settings.train.device == "cuda" or (settings.train.device == "auto" and torch.cuda.is_available())
            else "cpu"
        )
        if model is None:
            model, tokenizer = load_base_model(settings.model)
        self.tok = tokenizer
        with scoped_seed(streams.integer_seed("lora_init"), self.device):  # A_0 random, B_0 = 0 (Algorithm 1)
            self.model = add_lora(model, settings.lora).to(self.device)
        self.modules = lora.lora_modules(self.model)
        self.scaling = lora.base_scaling(self.modules)
        self._base0: dict[str, torch.Tensor] = {}  # original base weights, kept once a delta is merged
        self.rank = settings.lora.rank
        L, fmt = settings.max_seq_len, settings.prompt_format
        self.client_data: list[list[Encoded]] = [
            [encode(self.tok, *format_train(train_examples[i], fmt), L) for i in idx] for idx in parts
        ]
        n_test = len(test_examples)
        m = n_test if settings.eval.num_samples in (0, None) else min(settings.eval.num_samples, n_test)
        # the same questions for every run seed unless eval.sample_seed = -1
        es = streams if settings.eval.sample_seed < 0 else Streams(settings.eval.sample_seed)
        pick = np.sort(es.generator("eval_sample").choice(n_test, size=m, replace=False))
        self.eval_items: list[tuple[list[Encoded], int]] = []
        for i in pick:
            ex = test_examples[i]
            prompt, cands = format_choices(ex, fmt)
            self.eval_items.append(([encode(self.tok, prompt, c, L) for c in cands], ex.label))

    # ------------------------------------------------------------------ state

    @property
    def module_names(self) -> list[str]:
        return list(self.modules)

    def initial_state(self) -> LoraState:
        return lora.get_state(self.modules)

    def load_state(self, state: LoraState) -> None:
        """Put ``state`` into the model: LoRA factors, and any merged base delta (FLoRA)."""
        lora.set_state(self.modules, state)
        lora.set_merged(
            self.modules, self._base0, {m[len(MERGED) :]: dW for m, (dW, _) in state.items() if is_merged(m)}
        )

    def num_values_full_rank(self) -> int:
        """Numbers in a full-rank upload, sum over modules of r (d + m)."""
        return int(sum(B.size + A.size for B, A in self.initial_state().values()))

    # ------------------------------------------------------------------ training

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of ``batch``: token-mean CE over its response tokens (``train.logits``
        picks the LM head at the scored positions only, or at every position)."""
        fn = scored_response_loss if self.settings.train.logits == "scored" else mean_response_loss
        return fn(self.model, batch)

    def train_client(
        self,
        state: LoraState,
        client: int,
        rnd: int,
        indices: dict[str, np.ndarray],
        scale: float | None = None,
        lr: float | None = None,
    ) -> ClientUpdate:
        """H local SGD steps of client ``client`` on its sketch (eqs. 7–8).

        The client starts from ``X_t`` restricted to the kept components (others zeroed) at LoRA
        scale ``s * scale`` (default ``scale = r/k``, eq. 3); the untouched components have
        exactly zero gradient, so after training only ``B[:, I]`` and ``A[I, :]`` have moved.
        ``lr`` is the SGD learning rate the round's plan gives this client (default ``train.lr``;
        ``train.lr * s`` under ``planner.stability = "scale_lr"``, PAPER.md §8.2).
        Returns their change.
        """
        st, tr = self.settings, self.settings.train
        k = len(next(iter(indices.values())))
        data = self.client_data[client]
        rng = self.streams.generator("batches", rnd, client)
        t0 = time.perf_counter()
        self.load_state(masked(state, indices))
        lora.set_scaling(self.modules, self.scaling * (self.rank / k if scale is None else scale))
        params = lora.lora_parameters(self.modules)
        opt = torch.optim.SGD(params, lr=tr.lr if lr is None else lr, momentum=tr.momentum)
        self.model.train()
        losses = []
        try:
            with scoped_seed(self.streams.integer_seed("dropout", rnd, client), self.device):
                for _ in range(st.local_steps):
                    pick = rng.choice(len(data), size=st.batch_size, replace=len(data) < st.batch_size)
                    batch = {
                        key: v.to(self.device)
                        for key, v in collate([data[i] for i in pick], self.tok.pad_token_id).items()
                    }
                    loss = self.loss(batch)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if tr.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(params, tr.max_grad_norm)
                    opt.step()
                    losses.append(float(loss.detach()))
        finally:
            lora.set_scaling(self.modules, self.scaling)
            self.model.eval()
        after = lora.get_state(self.modules)
        start, end = extract(state, indices), extract(after, indices)
        delta = {m: (end[m][0] - start[m][0], end[m][1] - start[m][1]) for m in indices}
        return ClientUpdate(
            client=client,
            round=rnd,
            indices=indices,
            delta=delta,
            num_examples=st.local_steps * st.batch_size,
            train_loss=float(np.mean(losses)),
            compute_seconds=time.perf_counter() - t0,
        )

    def train_clients(self, state: LoraState, rnd: int, client_jobs: Sequence[ClientJob | tuple]) -> list[ClientUpdate]:
        """:meth:`train_client` for several clients at once: one fused forward/backward per local step.

        ``jobs`` holds one :class:`~fedsketch.sketch.ClientJob` ``(client, indices, scale, lr)`` per
        client. Each client keeps its own stacked LoRA factors (started from ``X_t`` masked to its
        sketch), its own LoRA scale ``s * scale`` (default ``r/k_n``), its own mini-batches (stream
        ``batches[t, n]``) and its own SGD state at its own learning rate ``lr`` (default
        ``train.lr``), over the one shared frozen base (with any FLoRA-merged delta of ``state``); see
        ``fedsketch.engine.stacked``. One SGD steps the whole stack at one rate, so clients of
        different rates are fused in one group per rate. The uploads equal the sequential ones up
        to float rounding (tests/engine/test_client_batch.py); with ``lora.dropout > 0`` the dropout
        masks differ from the sequential draw. ``compute_seconds`` is the group's time split evenly.
        """
        st, tr = self.settings, self.settings.train
        jobs = [ClientJob(*job) for job in client_jobs]
        if not jobs:
            return []
        by_lr: dict[float, list[ClientJob]] = {}
        for job in jobs:
            by_lr.setdefault(tr.lr if job.lr is None else job.lr, []).append(job)
        if len(by_lr) > 1:
            done = {u.client: u for group in by_lr.values() for u in self.train_clients(state, rnd, group)}
            return [done[job.client] for job in jobs]
        (lr,) = by_lr
        t0 = time.perf_counter()
        self.load_state(state)  # the merged base (FLoRA); PEFT's own adapter is bypassed below
        starts, scales, rngs = [], [], []
        for n, idx, scale, _ in jobs:
            k = len(next(iter(idx.values())))
            starts.append(masked(state, idx))
            scales.append(self.scaling * (self.rank / k if scale is None else scale))
            rngs.append(self.streams.generator("batches", rnd, n))
        C, bs = len(jobs), st.batch_size
        full = tr.logits == "full"  # the scored path packs each client's mini-batch into one row
        stack = StackedLoRA(
            self.modules,
            [{m: st[m] for m in self.modules} for st in starts],
            scales,
            bs if full else 1,
            dropout=self.settings.lora.dropout,
        )
        params = stack.parameters()
        opt = torch.optim.SGD(params, lr=lr, momentum=tr.momentum)
        losses = []
        self.model.train()
        try:
            with (
                self.model.disable_adapter(),
                stack,
                scoped_seed(self.streams.integer_seed("dropout", rnd, jobs[0][0]), self.device),
            ):
                for _ in range(st.local_steps):
                    seqs = []
                    for (n, *_), rng in zip(jobs, rngs, strict=True):
                        data = self.client_data[n]
                        pick = rng.choice(len(data), size=bs, replace=len(data) < bs)
                        seqs += [data[i] for i in pick]
                    batch = {key: v.to(self.device) for key, v in collate(seqs, self.tok.pad_token_id).items()}
                    per_client = grouped_response_loss(self.model, batch, C, full_logits=full)
                    opt.zero_grad(set_to_none=True)
                    per_client.sum().backward()
                    if tr.max_grad_norm > 0:
                        stack.clip_per_client(tr.max_grad_norm)
                    opt.step()
                    losses.append(per_client.detach().cpu().numpy())
        finally:
            self.model.eval()
        seconds = (time.perf_counter() - t0) / C
        out = []
        for c, ((n, idx, *_), after) in enumerate(zip(jobs, stack.states(), strict=True)):
            start, end = extract(state, idx), extract(after, idx)
            delta = {m: (end[m][0] - start[m][0], end[m][1] - start[m][1]) for m in idx}
            out.append(
                ClientUpdate(
                    client=n,
                    round=rnd,
                    indices=idx,
                    delta=delta,
                    num_examples=st.local_steps * bs,
                    train_loss=float(np.mean([step[c] for step in losses])),
                    compute_seconds=seconds,
                )
            )
        return out

    def train_parallel(
        self, state: LoraState, rnd: int, jobs: Sequence[ClientJob | tuple], workers: int
    ) -> dict[int, ClientUpdate | str]:
        """:meth:`train_client` for every job, whole clients side by side in forked worker processes.

        ``workers`` is ``train.workers``; W = min(workers, jobs) processes of one torch thread
        each, or, when W is 1, this process at all its threads (``fedsketch.engine.workers``).
        ``workers = 0`` (auto) is one per torch thread on a CPU with ``fork``, else 1. A process that
        holds a CUDA context does not fork (``workers.cuda_initialized``): its clients train here.
        Returns client -> upload or ``"Type: message"``.
        """
        from fedsketch.engine.workers import (
            cuda_initialized,
            fork_usable,
            resolve_workers,
            train_forked,
            train_or_reason,
        )

        can_fork = fork_usable(self.device.type)
        if workers > 1 and not can_fork:
            raise RuntimeError(
                f"train.workers={workers} needs the CPU engine and the 'fork' start method (a "
                f"{self.device.type} context does not survive fork); use 0 (auto), 1 or train.client_batch"
            )
        W = resolve_workers(workers, len(jobs), torch.get_num_threads() if can_fork else 1)
        if W > 1 and cuda_initialized():  # a forked child could not use CUDA: train here
            if workers > 1:
                log.warning(
                    "train.workers=%d: this process holds a CUDA context, which does not survive fork; "
                    "round %d's clients train in this process, one after another",
                    workers,
                    rnd,
                )
            W = 1
        if W > 1:
            try:
                return train_forked(self, state, rnd, jobs, W)
            except OSError:  # fork refused (e.g. no memory under strict overcommit): auto trains here instead
                if workers:
                    raise
        return {job[0]: train_or_reason(self, state, rnd, job) for job in jobs}

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, state: LoraState) -> EvalResult:
        """Accuracy on the seeded test sample by log-likelihood scoring of each answer option.

        Each candidate response (``data.prompts.format_choices``) is scored by the sum of its
        token log-probabilities after the prompt; the prediction is the argmax. ``test_loss`` is
        the per-token NLL of the correct candidate, averaged over questions.
        ``eval.scoring`` picks how the scores are computed (:meth:`option_scores`).
        """
        return self._result(*self.option_scores(state))

    @torch.no_grad()
    def option_scores(
        self, state: LoraState, trace: list[int] | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per question, each option's log-likelihood sum and its token count.

        ``eval.scoring = 'packed'``: each question's prompt and options in one segment under a
        block attention mask, short questions sharing a row, ``eval.batch_size`` rows per pass
        (``scoring.packed_scores``); ``'shared_prompt'``: one prompt pass per question whose
        key/value cache every option reuses, ``eval.batch_size`` questions per pass
        (``scoring.shared_prompt_scores``); both run the LM head on option tokens only;
        ``'per_option'``: every option a full sequence with full logits (``eval.batch_size``
        sequences per pass), the reference path. ``trace`` collects the size of each logits tensor.
        """
        self.load_state(state)
        lora.set_scaling(self.modules, self.scaling)
        self.model.eval()
        if self.settings.eval.scoring in ("shared_prompt", "packed"):
            fn = shared_prompt_scores if self.settings.eval.scoring == "shared_prompt" else packed_scores
            return fn(
                self.model,
                [c for c, _ in self.eval_items],
                self.tok.pad_token_id,
                self.settings.eval.batch_size,
                self.device,
                trace,
            )
        flat = [(qi, ci, s) for qi, (cands, _) in enumerate(self.eval_items) for ci, s in enumerate(cands)]
        flat.sort(key=lambda x: len(x[2].ids))  # similar lengths per batch: less padding
        scores = [np.full(len(c), -np.inf) for c, _ in self.eval_items]
        counts = [np.zeros(len(c)) for c, _ in self.eval_items]
        bs = self.settings.eval.batch_size
        for j in range(0, len(flat), bs):
            chunk = flat[j : j + bs]
            batch = {k: v.to(self.device) for k, v in collate([s for _, _, s in chunk], self.tok.pad_token_id).items()}
            logp, n = response_logprobs(self.model, batch, trace)
            for (qi, ci, _), lp, nn in zip(chunk, logp.tolist(), n.tolist(), strict=True):
                scores[qi][ci], counts[qi][ci] = lp, nn
        return scores, counts

    def _result(self, scores: list[np.ndarray], counts: list[np.ndarray]) -> EvalResult:
        preds = np.array([int(np.argmax(s)) for s in scores])
        labels = np.array([lab for _, lab in self.eval_items])
        nll = np.array([-scores[i][labels[i]] / counts[i][labels[i]] for i in range(len(labels))])
        share = np.bincount(preds).max() / len(preds) if len(preds) else float("nan")
        return EvalResult(
            accuracy=float(np.mean(preds == labels)) if len(preds) else float("nan"),
            test_loss=float(nll.mean()) if len(nll) else float("nan"),
            pred_max_share=float(share),
            num_questions=len(preds),
        )

    # ------------------------------------------------------------------ output

    def save_adapter(self, state: LoraState, path: str | Path) -> None:
        """Save ``state`` as a PEFT adapter folder that ``PeftModel.from_pretrained`` loads.

        A merged base delta (FLoRA) is not part of a PEFT adapter: it is written beside it as
        ``merged_delta.safetensors`` (module name -> dW of shape (d, m)), to be added to the base
        weights before loading the adapter.
        """
        from safetensors.numpy import save_file

        self.load_state(state)
        merged = {m[len(MERGED) :]: np.ascontiguousarray(dW) for m, (dW, _) in state.items() if is_merged(m)}

        def write(tmp):
            self.model.save_pretrained(tmp, safe_serialization=True)
            if merged:
                save_file(merged, str(Path(tmp) / "merged_delta.safetensors"))

        atomic_write_dir(path, write)
