"""HeteroLoRA (Cho et al., EMNLP 2024) on the shared harness.

Mechanics (PAPER.md §6): client n trains the *leading* k_n rank components ``B[:, :k_n]``,
``A[:k_n]``; uploads are zero-padded to rank r and averaged. Our decisions, which differ from the
FSLoRA repository's ``src/LoRA_Zero_Padding.py`` (rank-k_n adapters with rsLoRA scale
alpha/sqrt(k_n), a plain average over clients, and a server optimizer):
- the client trains at the global scale s (no r/k rescaling: a rank-truncated model, not an
  unbiased sketch);
- the average is weighted by the sampled clients' data weights ``p_n / sum_{m in K} p_m``;
- no server optimizer (as for every method here), so the comparison isolates the round rule;
- sampling: a fixed-size uniform cohort, as in FSLoRA (``fl.clients_per_round`` or round(sum q)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsketch.strategies.methods.base import MethodContext

COMPOSITION = ("cohort", "leading", "mean")  # sampler, sketcher, aggregator


@dataclass(frozen=True)
class LeadingSketcher:
    """The leading k components ``B[:, :k]``, ``A[:k]`` of every module, at the global scale s."""

    @classmethod
    def build(cls, ctx: MethodContext) -> LeadingSketcher:
        return cls()

    def sketch(self, t: int, n: int, k: int, modules: list[str]) -> dict[str, np.ndarray]:
        return {m: np.arange(k) for m in modules}

    def scale(self, k: int) -> float:
        return 1.0
