"""HeteroLoRA (Cho et al., EMNLP 2024) on the shared harness.

Decisions (PAPER.md §6; FSLoRA repo ``src/LoRA_Zero_Padding.py``):
- Client n trains the *leading* k_n rank components ``B[:, :k_n]``, ``A[:k_n]`` at the global
  scale s (no r/k rescaling: it is a rank-truncated model, not an unbiased sketch).
- Uploads are zero-padded to rank r and averaged with the data weights of the sampled clients
  (``p_n / sum_{m in K} p_m``).
- Sampling: like FSLoRA, a fixed-size uniform cohort (``fl.clients_per_round`` or round(sum q)).
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
