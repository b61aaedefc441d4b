"""FedStackLoRA / FLoRA (Wang et al., NeurIPS 2024, arXiv 2409.05976) on the shared harness.

FLoRA aggregates heterogeneous-rank client adapters *exactly* by stacking them: with client n's
factors ``B_n: (d, k_n)`` and ``A_n: (k_n, m)`` and weights ``w_n``,

    [w_1 B_1, ..., w_K B_K] @ [A_1; ...; A_K] = sum_n w_n B_n A_n        (a rank-sum k_n module),

and the stacked module is merged into the base weights each round; clients then start the next
round from fresh LoRA factors. Here (PAPER.md §6, FSLoRA repo ``src/LoRA_Stack.py``):

- global state: the LoRA factors stay at their initial value (``B = 0``, ``A = A_0``) and a dense
  merged delta per module, ``dW: (d, m)``, is kept under ``MERGED + module`` (``fedsketch.sketch``);
  the engine adds it to the base weights;
- client n trains the leading ``k_n`` components from ``(B = 0, A_0[:k_n])`` at the global scale
  s (no r/k rescale, as HeteroLoRA); DECISION: the "fresh" A of every round is the same seeded
  ``A_0`` (FLoRA draws a new one; each round's A is equally random either way, only the
  correlation across rounds differs);
- aggregation: ``dW += server_lr * s * sum_n w_n B_n A_n`` with ``w_n = p_n / sum_{K} p`` (FLoRA's
  data-size weights), exactly the product of the stacked module;
- sampling: a fixed-size uniform cohort, as FSLoRA's harness (``fl.clients_per_round``);
- communication: the upload is the client's ``k_n`` components (as HeteroLoRA), and the cost
  FLoRA adds is the download of the stacked module, whose size grows with the cohort: before
  round t every participant downloads the previous round's stack, ``sum_{n in K_{t-1}} k_n``
  components, i.e. ``tau_n^cm * S_{t-1} / r`` Mbit-seconds on its own channel (DECISION: a
  symmetric channel; clients not sampled in a round are assumed to catch up off the clock). This
  is added to the client's upload load in the equal-finish bandwidth split of eq. 10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedsketch.sketch import MERGED, ClientUpdate, LoraState, is_merged
from fedsketch.strategies.methods.base import MethodContext

COMPOSITION = ("cohort", "leading", "stack_merge")  # sampler, sketcher, aggregator


def lora_scale(alpha: float, r: int, use_rslora: bool = False) -> float:
    """PEFT's LoRA scale s: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    return alpha / (math.sqrt(r) if use_rslora else r)


@dataclass(frozen=True)
class StackMergeAggregator:
    """Merge the stacked module of the round's uploads into a dense base delta (FLoRA)."""

    p: np.ndarray  # (N,) data weights
    k: np.ndarray  # (N,) client ranks
    r: int
    tau_cm: np.ndarray  # (N,) full-rank upload seconds at channel quality 1
    coef: float  # server_lr * s

    @classmethod
    def build(cls, ctx: MethodContext) -> StackMergeAggregator:
        tau_cm = np.zeros(ctx.num_clients) if ctx.tau_cm is None else ctx.tau_cm
        return cls(ctx.p, ctx.k, ctx.r, tau_cm, ctx.server_lr * ctx.lora_scale)

    def initial_state(self, state: LoraState) -> LoraState:
        """The engine's factors plus a zero merged delta ``(d, m)`` per module."""
        out = dict(state)
        for m, (B, A) in state.items():
            out[MERGED + m] = (np.zeros((B.shape[0], A.shape[1]), dtype=B.dtype), np.zeros((0, A.shape[1]), B.dtype))
        return out

    def weights(self, clients: np.ndarray) -> np.ndarray:
        """FLoRA's data-size weights ``p_n / sum_{m in K} p_m``."""
        p = self.p[clients]
        return p / p.sum()

    def aggregate(self, state: LoraState, updates: list[ClientUpdate], weights: np.ndarray) -> LoraState:
        """dW += server_lr * s * sum_n w_n B_n A_n; factors unchanged."""
        if len(updates) != len(weights):
            raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
        c = self.coef
        new = {m: ((v[0].copy(), v[1]) if is_merged(m) else v) for m, v in state.items()}
        for u, w in zip(updates, weights, strict=True):
            for m, (dB, dA) in u.delta.items():
                idx = u.indices[m]
                B_n = state[m][0][:, idx] + dB  # (d, k_n): trained from B = 0
                A_n = state[m][1][idx, :] + dA  # (k_n, m): trained from A_0[idx]
                new[MERGED + m][0][...] += (c * w) * (B_n @ A_n)  # (d, m)
        return new

    def download_mbit(self, previous: np.ndarray | None) -> np.ndarray:
        """tau_n^cm * S_{t-1} / r: the previous round's stacked module on each client's channel."""
        if previous is None:
            return np.zeros(self.p.size)
        stacked = float(np.sum(self.k[previous]))
        return self.tau_cm * stacked / self.r
