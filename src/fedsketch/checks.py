"""The one validation of sampling probabilities ``q`` and sketch ranks ``k`` (numpy only).

Every layer that takes a per-client ``q`` or ``k`` (the sampler, the allocation, the planner,
the time model) checks it here, so the allowed values and the message that names the first bad
client are written once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_q(
    q: np.ndarray | Sequence[float], num_clients: int | None = None, *, allow_zero: bool = False, where: str = ""
) -> np.ndarray:
    """Per-client participation probabilities ``q_n`` in (0, 1] (PAPER.md §2.2), as floats.

    Parameters
    ----------
    q : array (N,)
    num_clients : int, optional
        Required length N.
    allow_zero : bool
        Accept ``q_n = 0`` (a client that never takes part), as the expected-time model of
        eqs. 11 and 15 does; the sampler and the unbiased weights ``p_n / q_n`` of eq. 6 do not.
    where : str
        Prefix of the error message (e.g. ``"allocation: "``).

    Raises
    ------
    ValueError
        Naming the first client whose ``q_n`` is out of range or not finite.
    """
    q = np.asarray(q, dtype=float)
    if num_clients is not None and q.shape != (num_clients,):
        raise ValueError(f"{where}q must have one entry per client ({num_clients}), got shape {q.shape}")
    low = (q < 0) if allow_zero else (q <= 0)
    bad = np.flatnonzero(~np.isfinite(q) | low | (q > 1))
    if bad.size:
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{where}q_n must lie in {interval}; client {int(bad[0])} has q={float(q[bad[0]])!r}")
    return q


def check_k(
    k: np.ndarray | Sequence[float], r: int, num_clients: int | None = None, *, integer: bool = True, where: str = ""
) -> np.ndarray:
    """Per-client sketch ranks ``k_n`` in [1, r] (eq. 3): int64, or floats with ``integer=False``.

    ``integer=False`` admits real ``k`` in [1, r], for which the time model of eqs. 18–19 is
    still defined.

    Raises
    ------
    ValueError
        Naming the first client whose ``k_n`` is out of range, fractional or not finite.
    """
    k = np.asarray(k)
    if num_clients is not None and k.shape != (num_clients,):
        raise ValueError(f"{where}k must have one entry per client ({num_clients}), got shape {k.shape}")
    kf = k.astype(float)
    bad = ~np.isfinite(kf) | (kf < 1) | (kf > r)
    if integer:
        bad |= kf != np.round(kf)
    bad = np.flatnonzero(bad)
    if bad.size:
        rule = f"an integer in [1, r={r}]" if integer else f"in [1, r={r}]"
        raise ValueError(f"{where}k_n must be {rule}; client {int(bad[0])} has k={kf[bad[0]]:g}")
    return k.astype(np.int64) if integer else kf
