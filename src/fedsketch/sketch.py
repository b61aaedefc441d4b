"""Rank sketches of a LoRA adapter (PAPER.md eqs. 3–5, 8; FSLoRA arXiv 2501.19389).

A sketch for client n keeps ``k_n`` of the ``r`` rank-one components ``B[:, j] A[j, :]`` of
every adapted layer, scaled by ``r / k_n`` (eq. 3), so that ``E[B S A] = B A`` (eq. 4).
Gradients outside the kept index set are exactly zero (eq. 5), so a client trains and uploads
only ``B[:, I]`` and ``A[I, :]``: ``k_n (d + m)`` numbers per layer instead of ``r (d + m)``.

Numpy only. ``LoraState`` maps an adapted module's name to its factors ``(B, A)`` with
``B: (d, r)`` and ``A: (r, m)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

LoraState = dict[str, tuple[np.ndarray, np.ndarray]]

#: key prefix of a dense base-weight delta ``(dW: (d, m), empty (0, m))`` that a method merged into
#: the base model (FedStackLoRA/FLoRA); absent for every other method
MERGED = "merged::"


def is_merged(name: str) -> bool:
    return name.startswith(MERGED)


def lora_keys(state: LoraState) -> list[str]:
    """The adapted modules of ``state`` (without merged base deltas)."""
    return [m for m in state if not is_merged(m)]


def draw_indices(rng: np.random.Generator, modules: list[str], r: int, k: int) -> dict[str, np.ndarray]:
    """One uniformly random k-subset of ``{0..r-1}`` per module (spec Algorithm 1, line 2).

    PAPER.md §4 decision 3: one index set per (client, round, layer), shared by that layer's B
    and A, independent across layers.
    """
    if not 1 <= k <= r:
        raise ValueError(f"sketch rank k must lie in [1, r={r}], got {k}")
    return {m: np.sort(rng.choice(r, size=k, replace=False)) for m in modules}


def sketch_matrix(r: int, idx: np.ndarray) -> np.ndarray:
    """The r x r diagonal sketch S of eq. 3: ``r/k`` on the kept indices, 0 elsewhere."""
    s = np.zeros(r)
    s[idx] = r / len(idx)
    return np.diag(s)


def sketched_product(B: np.ndarray, A: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``B S A = (r/k) sum_{j in I} B[:, j] A[j, :]`` (eq. 4); shapes (d, r), (r, m) -> (d, m)."""
    r = B.shape[1]
    return (r / len(idx)) * B[:, idx] @ A[idx, :]


class ClientJob(NamedTuple):
    """What one sampled client is asked to train in a round (eqs. 7–8): its sketch, its LoRA scale and
    its SGD step size. A plain ``(client, indices, scale)`` tuple is the same job at ``lr = None``."""

    client: int
    indices: dict[str, np.ndarray]  # module -> kept rank indices I, (k_n,)
    scale: float | None = None  # multiplier of the LoRA scale s; None = r / k_n (eq. 3)
    lr: float | None = None  # local SGD learning rate; None = train.lr (planner.stability = "scale_lr": lr * s)


@dataclass
class ClientUpdate:
    """What a sampled client uploads (eq. 8): the change of its kept blocks, per module.

    ``delta[m] = (dB, dA)`` with ``dB = B_H[:, I] - B_t[:, I]`` of shape (d, k) and
    ``dA = A_H[I, :] - A_t[I, :]`` of shape (k, m); ``indices[m] = I``.
    """

    client: int
    round: int
    indices: dict[str, np.ndarray]
    delta: dict[str, tuple[np.ndarray, np.ndarray]]
    num_examples: int = 0
    train_loss: float = float("nan")
    compute_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def num_values(self) -> int:
        return int(sum(dB.size + dA.size for dB, dA in self.delta.values()))

    def nbytes(self, bits_per_value: int) -> int:
        """Bytes on the air: the blocks at ``bits_per_value`` plus the index sets as int32."""
        idx = sum(len(i) for i in self.indices.values()) * 4
        return self.num_values * bits_per_value // 8 + idx


def extract(state: LoraState, indices: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The kept blocks ``(B[:, I], A[I, :])`` of every module (copies)."""
    return {m: (state[m][0][:, idx].copy(), state[m][1][idx, :].copy()) for m, idx in indices.items()}


def masked(state: LoraState, indices: dict[str, np.ndarray]) -> LoraState:
    """The state with every component outside the kept set zeroed (a client's starting point).

    Training ``B_I A_I`` at scale ``s r/k`` from this start is eq. 7 restricted to I: with the
    other columns/rows zero, their gradients are exactly zero (PAPER.md §2.1 implementation note).
    """
    out: LoraState = {}
    for m, (B, A) in state.items():
        if is_merged(m):  # a merged base delta is part of the client's starting model as it is
            out[m] = (B, A)
            continue
        idx = indices[m]
        Bz, Az = np.zeros_like(B), np.zeros_like(A)
        Bz[:, idx], Az[idx, :] = B[:, idx], A[idx, :]
        out[m] = (Bz, Az)
    return out
