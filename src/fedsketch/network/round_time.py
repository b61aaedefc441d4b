"""Expected round time under independent Bernoulli sampling (PAPER.md §2.4–2.6, eqs. 10–20).

Four estimates of ``E[T]``, the expected time of one round when client ``n`` takes part with
probability ``q_n`` independently of the others, and the participants share ``W`` so that they
finish together (eq. 10):

- ``"bound"``: Theorem 2, ``E[T] <= E[t_max^cp] + sum_n q_n t_n^cm / W`` (eqs. 14, 15, 17, 20);
  rigorous, a closed form, and the round-time factor of the planner's objective (eq. 21).
- ``"approx"``: the expected-bandwidth root (eq. 11), ``sum_n q_n t_n^cm / (T - t_n^cp) = W``;
  within a few per cent of the truth when every ``q_n`` is large (spec §5), but its root exceeds the
  compute time of every client with ``q_n > 0``, however rarely that client is sampled, so it is high
  when ``q`` is small (the N = 50 plan of ``configs/n50.toml``, 3 clients a round: 16.1 s against
  ``E[T]`` = 7.8 s by Monte Carlo).
- ``"mc"``: Monte Carlo over participation masks with a standard error.
- ``"enumerate"``: exact, over all ``2^N`` masks (``N <= ENUMERATE_MAX_CLIENTS``).

The eq. 10 root itself (one participant set, or many masks at once) is in :mod:`fedsketch.network.bandwidth`.

Pure numpy/scipy; imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsketch.checks import check_q
from fedsketch.network.bandwidth import _as_times, equal_finish_time, round_times

METHODS = ("auto", "mc", "enumerate", "approx", "bound")
#: largest N for which exact enumeration of the 2^N participation masks is allowed / chosen by "auto"
ENUMERATE_MAX_CLIENTS = 12
#: default Monte-Carlo sample size (participation masks)
DEFAULT_MC_SAMPLES = 4000
#: seed of the Monte-Carlo generator when none is passed (a fixed, documented default; no global state)
DEFAULT_MC_SEED = 0
#: masks processed at once by the vectorised root finder (bounds memory to chunk * N floats)
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class RoundTimeEstimate:
    """Result of :func:`expected_round_time`.

    Attributes
    ----------
    value : float
        Estimate of ``E[T]`` in seconds (the bound for ``method="bound"``).
    stderr : float
        Standard error of ``value``; 0.0 for the deterministic methods.
    method : str
        Method actually used (``"auto"`` resolves to ``"enumerate"`` or ``"mc"``).
    samples : int
        Number of participation masks evaluated (``2^N`` for enumeration, 0 for closed forms).
    """

    value: float
    stderr: float
    method: str
    samples: int = 0


def _check_inputs(q, t_cp, t_cm, W) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Validate shapes/ranges; errors name the client and the violated constraint."""
    if not np.isfinite(W) or W <= 0:
        raise ValueError(f"bandwidth W must be a finite number > 0, got {W!r}")
    t_cp = _as_times("t_cp", t_cp, allow_zero=True)
    t_cm = _as_times("t_cm", t_cm, allow_zero=False)
    q = np.asarray(q, dtype=float)
    if q.ndim == 0:
        q = np.full(t_cp.shape, float(q))
    if not (q.shape == t_cp.shape == t_cm.shape):
        raise ValueError(
            f"q, t_cp and t_cm must have one entry per client; got shapes {q.shape}, {t_cp.shape}, {t_cm.shape}"
        )
    return check_q(q, allow_zero=True, where="sampling probability: "), t_cp, t_cm, float(W)


# --------------------------------------------------------------------------- eq. 15 and its gradient


def expected_max_compute(q: np.ndarray, t_cp: np.ndarray) -> float:
    """``E[t_max^cp]``, the expected largest compute time among participants (eq. 15).

    With clients sorted so that ``t_1 <= ... <= t_N``:
    ``E[t_max^cp] = sum_n q_n prod_{j>n} (1 - q_j) t_n`` (0 when nobody participates).

    Parameters
    ----------
    q : array (N,)
        Participation probabilities in [0, 1].
    t_cp : array (N,)
        Compute times at the current sketch ranks (eq. 19).
    """
    q = np.asarray(q, dtype=float)
    t_cp = np.asarray(t_cp, dtype=float)
    order = np.argsort(t_cp, kind="stable")
    return _emax_sorted(q[order], t_cp[order])


def _suffix_log_survival(qs: np.ndarray) -> np.ndarray:
    """``L_n = sum_{j>n} log(1 - q_j)`` in sorted order, shape (N,) (``-inf`` below a ``q = 1`` client)."""
    with np.errstate(divide="ignore"):
        la = np.log1p(-qs)  # -inf for q = 1
    L = np.empty_like(qs)
    L[-1:] = 0.0
    L[:-1] = np.cumsum(la[:0:-1])[::-1]
    return L


def _survival_from_log(L: np.ndarray) -> np.ndarray:
    return np.exp(np.maximum(L, _LOG_FLOOR)) * (L >= _LOG_FLOOR)


def _suffix_survival(qs: np.ndarray) -> np.ndarray:
    """``P_n = prod_{j>n} (1 - q_j)`` in sorted order, shape (N,).

    Computed as ``exp`` of a reversed cumulative sum of ``log(1 - q)``, flushed to 0 below
    ``e^_LOG_FLOOR`` (~1e-300): a plain ``cumprod`` gets stuck at the smallest subnormal
    (``0.95 * 5e-324`` rounds back to ``5e-324``), which is both slow (subnormal arithmetic) and
    wrong for the live-tail logic of :func:`_forward_emax`. Relative error ~1e-13 where P > 0.
    """
    return _survival_from_log(_suffix_log_survival(qs))


#: log of the smallest survival probability kept (below it P is flushed to 0)
_LOG_FLOOR = -690.0


def _emax_sorted(qs: np.ndarray, ts: np.ndarray) -> float:
    if qs.size == 0:
        return 0.0
    return float(np.sum(qs * _suffix_survival(qs) * ts))


def _emax_and_grad_sorted(qs: np.ndarray, ts: np.ndarray) -> tuple[float, np.ndarray]:
    """Eq. 15 and its gradient in sorted order, O(N) and division-free.

    ``dE/dq_m = P_m (t_m - S_m)`` with ``P_m = prod_{j>m}(1-q_j)`` and
    ``S_m = sum_{n<m} q_n t_n prod_{n<j<m}(1-q_j)`` (the expected max over the faster clients),
    which equals spec §2.9's ``t_m P_m - (1/(1-q_m)) sum_{n<m} q_n t_n P_n`` and is >= 0.
    """
    L = _suffix_log_survival(qs)
    P = _survival_from_log(L)
    val = float(np.einsum("i,i,i->", qs, P, ts))
    S = _forward_emax(qs, ts, L)
    return val, P * (ts - S)


def _forward_emax(qs: np.ndarray, ts: np.ndarray, L: np.ndarray | None = None) -> np.ndarray:
    """``S_m`` (see :func:`_emax_and_grad_sorted`) wherever ``P_m > 0``, shape (N,); 0 elsewhere.

    Only the gradient ``P_m (t_m - S_m)`` needs ``S``, so ``S_m`` is computed on the *live* tail
    ``m >= m0``, ``m0`` the first position with ``P_m >= e^_LOG_FLOOR`` (below it ``P_m`` is
    flushed to 0). After ``m0`` the tail holds no ``q = 1`` client and its log-survival spans less
    than ``-_LOG_FLOOR``, so the recurrence ``S_{m+1} = a_m S_m + b_m`` (``a = 1-q``, ``b = q t``)
    is solved there as ``S = e^{c} (S_start + cumsum(b e^{-c}))``, ``c = cumsum(log a)``, re-based
    at most twice when ``c`` falls below ``-_LOG_SPAN``. The start value
    ``S_{m0} = sum_{n<m0} b_n prod_{n<j<m0} a_j`` uses ``prod_{n<j<m0} a_j = e^{L_n - L_{m0-1}}``
    over the window where that is ``>= e^_LOG_FLOOR``. O(N) for any N and O(1) passes, so the q-step
    stays linear in N.
    """
    n = qs.size
    S = np.zeros(n)
    if n <= 1:
        return S
    if L is None:
        L = _suffix_log_survival(qs)
    m0 = int(np.searchsorted(L, _LOG_FLOOR, side="left"))  # L is non-decreasing: live tail [m0, n)
    if m0 >= n:
        return S
    if m0 >= 1:
        ref = L[m0 - 1]  # = sum_{j>=m0} log a_j
        if np.isfinite(ref):
            lo = int(np.searchsorted(L[:m0], ref + _LOG_FLOOR, side="left"))
            lw = L[lo:m0] - ref  # (m0-lo,) log prod_{n<j<m0} a_j, >= _LOG_FLOOR
            S[m0] = float(np.einsum("i,i,i->", qs[lo:m0], ts[lo:m0], np.exp(lw)))
        else:  # q_{m0} = 1: the window below m0 needs its own log-sums
            S[m0] = _prefix_emax(qs[:m0], ts[:m0])
    prev, i = float(S[m0]), m0
    if i < n - 1 and qs[i] >= 1.0:  # q_{m0} = 1 resets S
        prev, i = float(ts[i]), i + 1
        S[i] = prev
    while i < n - 1:  # q < 1 on [i, n-1): at most -_LOG_FLOOR / _LOG_SPAN + 1 passes
        cl = np.cumsum(np.log1p(-qs[i : n - 1]))
        e = i + max(1, int(np.searchsorted(-cl, _LOG_SPAN, side="right")))
        c = cl[: e - i]
        S[i + 1 : e + 1] = np.exp(c) * (prev + np.cumsum(qs[i:e] * ts[i:e] * np.exp(-c)))
        prev = float(S[e])
        i = e
    return S


def _prefix_emax(qs: np.ndarray, ts: np.ndarray) -> float:
    """Eq. 15 for sorted ``qs, ts`` summing only the slowest clients whose survival weight
    ``prod_{n<j} (1 - q_j)`` is ``>= e^_LOG_FLOOR``: a window grown from the top by doubling,
    so the cost is that of the window, not of the prefix."""
    n = qs.size
    w = min(n, 4096)
    while True:
        with np.errstate(divide="ignore"):
            la = np.log1p(-qs[n - w + 1 :][::-1])  # log a_j for j = n-1 down to n-w+1
        lw = np.zeros(w)
        lw[1:] = np.cumsum(la)  # log prod_{n-1-i < j} a_j for i = 0..w-1 (from the top)
        if w == n or lw[-1] < _LOG_FLOOR:
            keep = lw >= _LOG_FLOOR
            qq, tt = qs[n - w :][::-1], ts[n - w :][::-1]
            return float(np.sum(qq[keep] * tt[keep] * np.exp(lw[keep])))
        w = min(n, 4 * w)


#: re-basing span of the log cumulative products in :func:`_forward_emax` (exp(-c) < e^(span+37))
_LOG_SPAN = 600.0


def theorem2_bound(q, t_cp, t_cm, W) -> float:
    """Theorem 2 upper bound on ``E[T]`` (eqs. 14–15; with eqs. 18–19 substituted, eq. 20).

    ``E[T] <= E[t_max^cp] + sum_n q_n t_n^cm / W``.

    Parameters
    ----------
    q, t_cp, t_cm : arrays (N,)
        Participation probabilities, compute seconds and upload Mbit at the current ranks.
    W : float
        Total bandwidth (Mbps).
    """
    q, t_cp, t_cm, W = _check_inputs(q, t_cp, t_cm, W)
    return expected_max_compute(q, t_cp) + float(np.dot(q, t_cm)) / W


# --------------------------------------------------------------------------- eq. 11


def expected_bandwidth_time(q, t_cp, t_cm, W) -> float:
    """Root of the expected-bandwidth equation (eq. 11).

    ``T~`` solves ``sum_n q_n t_n^cm / (T~ - t_n^cp) = W`` on ``(max_{q_n>0} t_n^cp, inf)``; it is
    eq. 10 with every client's payload scaled by its participation probability. Returns 0.0 when
    all ``q_n = 0``.
    """
    q, t_cp, t_cm, W = _check_inputs(q, t_cp, t_cm, W)
    on = q > 0
    if not np.any(on):
        return 0.0
    return equal_finish_time(t_cp[on], q[on] * t_cm[on], W)


def _chunked_round_times(masks_fn, n_masks: int, t_cp, t_cm, W) -> np.ndarray:
    n = t_cp.size
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    out = np.empty(n_masks)
    for s in range(0, n_masks, chunk):
        e = min(n_masks, s + chunk)
        out[s:e] = round_times(masks_fn(s, e), t_cp, t_cm, W)
    return out


def _enumerate(q, t_cp, t_cm, W) -> tuple[float, int]:
    n = q.size
    if n > ENUMERATE_MAX_CLIENTS:
        raise ValueError(
            f"method='enumerate' needs N <= {ENUMERATE_MAX_CLIENTS} clients (2^N masks), got N={n}; use method='mc'"
        )
    n_masks = 1 << n
    bits = ((np.arange(n_masks)[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)  # (2^N, N)
    prob = np.prod(np.where(bits, q[None, :], 1.0 - q[None, :]), axis=1)  # (2^N,)
    T = _chunked_round_times(lambda s, e: bits[s:e], n_masks, t_cp, t_cm, W)
    return float(np.dot(prob, T)), n_masks


def _monte_carlo(q, t_cp, t_cm, W, rng: np.random.Generator, samples: int) -> tuple[float, float]:
    if samples < 2:
        raise ValueError(f"Monte Carlo needs samples >= 2, got {samples}")
    n = q.size
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    T = np.empty(samples)
    for s in range(0, samples, chunk):
        e = min(samples, s + chunk)
        masks = rng.random((e - s, n)) < q[None, :]
        T[s:e] = round_times(masks, t_cp, t_cm, W)
    return float(T.mean()), float(T.std(ddof=1) / np.sqrt(samples))


def expected_round_time(
    q,
    t_cp,
    t_cm,
    W: float,
    method: str = "auto",
    rng: np.random.Generator | None = None,
    samples: int = DEFAULT_MC_SAMPLES,
) -> RoundTimeEstimate:
    """Expected round time ``E[T]`` under independent sampling (PAPER.md §2.4–2.5).

    Parameters
    ----------
    q : array (N,) or float
        Participation probabilities ``q_n`` in [0, 1].
    t_cp : array (N,)
        Compute seconds per round at the current sketch ranks (eq. 19), >= 0.
    t_cm : array (N,)
        Upload size in Mbit (seconds at 1 Mbps) at the current ranks (eq. 18), > 0.
    W : float
        Total uplink bandwidth in Mbps, > 0.
    method : {"auto", "mc", "enumerate", "approx", "bound"}
        ``"auto"`` enumerates when ``N <= ENUMERATE_MAX_CLIENTS`` and uses Monte Carlo otherwise.
        ``"approx"`` is the eq. 11 root; ``"bound"`` the Theorem 2 bound (eq. 14/17/20).
    rng : numpy Generator, optional
        Source of the Monte-Carlo masks (e.g. ``Streams(seed).generator("round_time")``); a
        generator seeded with ``DEFAULT_MC_SEED`` when omitted, so results are reproducible.
    samples : int
        Monte-Carlo sample size.

    Returns
    -------
    RoundTimeEstimate
        ``value``, ``stderr`` (0 except for ``"mc"``), the ``method`` used and ``samples``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    q, t_cp, t_cm, W = _check_inputs(q, t_cp, t_cm, W)
    if method == "auto":
        method = "enumerate" if q.size <= ENUMERATE_MAX_CLIENTS else "mc"
    if method == "bound":
        return RoundTimeEstimate(theorem2_bound(q, t_cp, t_cm, W), 0.0, "bound")
    if method == "approx":
        return RoundTimeEstimate(expected_bandwidth_time(q, t_cp, t_cm, W), 0.0, "approx")
    if method == "enumerate":
        v, n = _enumerate(q, t_cp, t_cm, W)
        return RoundTimeEstimate(v, 0.0, "enumerate", n)
    rng = rng if rng is not None else np.random.default_rng(DEFAULT_MC_SEED)
    v, se = _monte_carlo(q, t_cp, t_cm, W, rng, int(samples))
    return RoundTimeEstimate(v, se, "mc", int(samples))
