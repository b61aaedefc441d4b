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

import numpy as np

from fedsketch.strategies.base import Federation
from fedsketch.strategies.methods.fslora import FSLoRA


class HeteroLoRA(FSLoRA):
    name = "heterolora"

    def sketch(self, t: int, n: int, k: int, fed: Federation, modules: list[str]) -> dict[str, np.ndarray]:
        return {m: np.arange(k) for m in modules}

    def client_scale(self, k: int, r: int) -> float:
        return 1.0
