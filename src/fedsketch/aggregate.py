"""Server aggregation of sketched uploads (PAPER.md eq. 6 with the server step of §4 decision 2).

``X_{t+1} = X_t + eta_s' * sum_{n in K_t} (p_n / q_n) * scatter(Delta_n)``, where ``scatter``
puts client n's blocks back into columns ``I`` of B and rows ``I`` of A and ``eta_s'`` is
``fl.server_lr`` (1.0 reproduces the paper's server step ``eta H``). Updates are validated
first; a bad one is rejected with a reason and never averaged in.
"""

from __future__ import annotations

import numpy as np

from fedsketch.sketch import ClientUpdate, LoraState, lora_keys


def validate_update(update: ClientUpdate, state: LoraState, issued: dict[str, np.ndarray]) -> str | None:
    """Why ``update`` must be rejected, or ``None`` if it is well-formed and finite."""
    modules = set(lora_keys(state))
    if set(update.delta) != modules or set(update.indices) != modules:
        return "modules differ from the global adapter"
    for m, (dB, dA) in update.delta.items():
        idx = np.asarray(update.indices[m])
        if not np.array_equal(idx, issued[m]):
            return f"indices of {m} differ from the issued sketch"
        B, A = state[m]
        if dB.shape != (B.shape[0], idx.size) or dA.shape != (idx.size, A.shape[1]):
            return (
                f"block shapes of {m} are {dB.shape}/{dA.shape}, "
                f"expected {(B.shape[0], idx.size)}/{(idx.size, A.shape[1])}"
            )
        if not (np.all(np.isfinite(dB)) and np.all(np.isfinite(dA))):
            return "non_finite"
    if not np.isfinite(update.train_loss):
        return "non_finite"
    return None


def aggregate(state: LoraState, updates: list[ClientUpdate], weights: np.ndarray, server_lr: float = 1.0) -> LoraState:
    """Apply eq. 6: add ``server_lr * w_n * Delta_n`` of each update, scattered by its indices.

    Parameters
    ----------
    state : LoraState
        Global factors ``X_t``; not modified.
    updates : list of ClientUpdate
        Validated uploads of this round's participants.
    weights : array (len(updates),)
        ``p_n / q_n`` of each update (``fedsketch.sampling.unbiased_weights``).
    """
    if len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    new = {m: (B.copy(), A.copy()) for m, (B, A) in state.items()}
    for u, w in zip(updates, weights, strict=True):
        for m, (dB, dA) in u.delta.items():
            idx = u.indices[m]
            B, A = new[m]
            B[:, idx] += (server_lr * w) * dB  # (d, k)
            A[idx, :] += (server_lr * w) * dA  # (k, m)
    return new
