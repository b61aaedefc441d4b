"""Client time profiles and their sketch-scaled forms (PAPER.md §2.6, eqs. 18–19).

A profile gives each client its full-rank (k = r) per-round computation time ``tau_cp`` in
seconds and its full-rank upload time at one unit of bandwidth ``tau_cm`` (Mbit, i.e. seconds at
1 Mbps). Profiles come from explicit lists, a CSV file, or a seeded heterogeneous draw
(PAPER.md §6, "Client heterogeneity": lognormal device speed, channel quality ~ U[rho_min, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsketch.checks import check_k
from fedsketch.config import NetworkConfig
from fedsketch.config.readers import ReadError, read_csv, short

COMPUTE_MODELS = ("linear", "affine")


@dataclass(frozen=True)
class ClientProfiles:
    """Per-client full-rank times.

    Attributes
    ----------
    tau_cp : array (N,)
        Full-rank computation time per round, seconds (> 0).
    tau_cm : array (N,)
        Full-rank upload time at one unit of bandwidth, Mbit (> 0).
    tau_0 : array (N,)
        Rank-independent part of the computation time (frozen-base forward/backward), used only
        by the affine compute model of §2.6; zeros for the paper's linear model.
    """

    tau_cp: np.ndarray
    tau_cm: np.ndarray
    tau_0: np.ndarray

    def __post_init__(self) -> None:
        for name in ("tau_cp", "tau_cm", "tau_0"):
            a = np.asarray(getattr(self, name), dtype=float)
            object.__setattr__(self, name, a)
            if a.ndim != 1:
                raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be finite; client {int(np.flatnonzero(~np.isfinite(a))[0])} is not")
        n = self.tau_cp.size
        if self.tau_cm.size != n or self.tau_0.size != n:
            raise ValueError(
                f"tau_cp, tau_cm and tau_0 must have one entry per client; got "
                f"{self.tau_cp.size}, {self.tau_cm.size}, {self.tau_0.size}"
            )
        for name, arr in (("tau_cp", self.tau_cp), ("tau_cm", self.tau_cm)):
            bad = np.flatnonzero(arr <= 0)
            if bad.size:
                raise ValueError(f"{name} must be > 0; client {int(bad[0])} has {float(arr[bad[0]])!r}")
        bad = np.flatnonzero((self.tau_0 < 0) | (self.tau_0 > self.tau_cp))
        if bad.size:
            raise ValueError(f"tau_0 must lie in [0, tau_cp]; client {int(bad[0])} has {self.tau_0[bad[0]]!r}")

    @property
    def num_clients(self) -> int:
        return int(self.tau_cp.size)


def sketch_times(
    profiles: ClientProfiles, k: np.ndarray, r: int, compute_model: str = "linear"
) -> tuple[np.ndarray, np.ndarray]:
    """Computation and upload times at sketch ranks ``k`` (eqs. 18–19).

    ``t_cm(k) = (k/r) tau_cm`` (eq. 18). ``t_cp(k) = (k/r) tau_cp`` (eq. 19, ``linear``) or
    ``t_cp(k) = tau_0 + (k/r)(tau_cp - tau_0)`` (``affine``, §2.6).
    """
    k = check_k(np.asarray(k, dtype=float), r, profiles.num_clients, integer=False)
    frac = k / r
    if compute_model == "linear":
        t_cp = frac * profiles.tau_cp
    elif compute_model == "affine":
        t_cp = profiles.tau_0 + frac * (profiles.tau_cp - profiles.tau_0)
    else:
        raise ValueError(f"compute_model must be one of {COMPUTE_MODELS}, got {compute_model!r}")
    return t_cp, frac * profiles.tau_cm


def draw_profiles(
    num_clients: int,
    rng: np.random.Generator,
    *,
    round_compute_s: float,
    speed_sigma: float,
    payload_mbit: float,
    rate_min: float,
    base_fraction: float = 0.0,
) -> ClientProfiles:
    """Seeded heterogeneous profiles (PAPER.md §6 decision on client heterogeneity).

    ``tau_cp = round_compute_s * s_n`` with device slowness ``s_n ~ LogNormal(0, speed_sigma)``;
    ``tau_cm = payload_mbit / rho_n`` with channel quality ``rho_n ~ U[rate_min, 1]``;
    ``tau_0 = base_fraction * tau_cp``.
    """
    slowness = rng.lognormal(0.0, speed_sigma, num_clients)
    rho = rng.uniform(rate_min, 1.0, num_clients)
    tau_cp = round_compute_s * slowness
    return ClientProfiles(tau_cp=tau_cp, tau_cm=payload_mbit / rho, tau_0=base_fraction * tau_cp)


class ProfileError(ValueError):
    """A client profile file is missing or malformed; the message names the file, line and client."""


def load_profiles_csv(path: str | Path, num_clients: int) -> ClientProfiles:
    """Read profiles from a CSV with header ``client,tau_cp,tau_cm[,tau_0]``, exactly one row per client.

    Raises
    ------
    ProfileError
        The file is missing or unreadable, the header lacks a column, a value is not a finite
        number (``inf`` and ``nan`` included), a time is not > 0 (``tau_0`` not in [0, tau_cp]),
        or a client id is duplicated, missing or outside ``0..num_clients-1``.
    """
    path = Path(path)
    if not path.exists():
        raise ProfileError(f"network.profile_csv: file not found: {path}")
    try:
        header, rows = read_csv(path, key="network.profile_csv")
    except ReadError as e:
        raise ProfileError(str(e)) from None
    need = {"client", "tau_cp", "tau_cm"}
    if not rows or not need <= set(header):
        lacks = ", ".join(sorted(need - set(header)))
        raise ProfileError(
            f"{path}: "
            + (f"the header lacks column(s) {lacks}; " if lacks else "no rows; ")
            + f"give a header client,tau_cp,tau_cm[,tau_0] and one row for each of the {num_clients} clients"
        )
    by_client: dict[int, tuple[int, float, float, float]] = {}
    for line, row in rows:
        raw_id = row.get("client")
        try:
            cid = int(str(raw_id).strip())
        except ValueError:
            raise ProfileError(f"{path}, line {line}: client must be an integer id, got {short(raw_id)}") from None
        vals = []
        for col in ("tau_cp", "tau_cm", "tau_0"):
            raw = row.get(col)
            if col == "tau_0" and (raw is None or str(raw).strip() == ""):
                vals.append(0.0)
                continue
            try:
                v = float(str(raw).strip())
            except ValueError:
                raise ProfileError(
                    f"{path}, line {line} (client {cid}): {col} must be a number, got {short(raw)}"
                ) from None
            if not np.isfinite(v):
                raise ProfileError(
                    f"{path}, line {line} (client {cid}): {col} = {short(raw)} is not finite; "
                    "times must be finite numbers"
                )
            vals.append(v)
        tau_cp, tau_cm, tau_0 = vals
        for col, v in (("tau_cp", tau_cp), ("tau_cm", tau_cm)):
            if not v > 0:
                raise ProfileError(f"{path}, line {line} (client {cid}): {col} = {v!r} must be > 0")
        if not 0 <= tau_0 <= tau_cp:
            raise ProfileError(
                f"{path}, line {line} (client {cid}): tau_0 = {tau_0!r} must lie in [0, tau_cp={tau_cp!r}]"
            )
        if not 0 <= cid < num_clients:
            raise ProfileError(
                f"{path}, line {line}: client {short(cid, 30)} is not one of the data.num_clients={num_clients} "
                f"clients 0..{num_clients - 1}"
            )
        if cid in by_client:
            raise ProfileError(
                f"{path}, line {line}: client {cid} appears twice (first on line {by_client[cid][0]}); "
                "give each client exactly one row"
            )
        by_client[cid] = (line, tau_cp, tau_cm, tau_0)
    missing = sorted(set(range(num_clients)) - set(by_client))
    if missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise ProfileError(
            f"{path}: no row for client(s) {missing[:10]}{more} (need one row for each of clients 0..{num_clients - 1})"
        )
    order = [by_client[c] for c in range(num_clients)]
    return ClientProfiles(
        tau_cp=np.array([r[1] for r in order]),
        tau_cm=np.array([r[2] for r in order]),
        tau_0=np.array([r[3] for r in order]),
    )


_BITS_PER_MBIT = 1e6


def payload_from_model(net: NetworkConfig) -> bool:
    """Whether the ``[network]`` settings ``net`` need the model's full-rank LoRA size: the seeded
    draw with ``network.payload_mbit = 0`` (explicit and CSV profiles give ``tau_cm`` themselves)."""
    return net.profile == "lognormal" and not net.payload_mbit


def full_rank_payload_mbit(net: NetworkConfig, num_values: int | None) -> float | None:
    """Full-rank upload size in Mbit: ``network.payload_mbit`` when non-zero, else
    ``num_values * network.upload_bits / 1e6`` for the ``num_values`` numbers of a full-rank
    upload (sum over LoRA modules of r (d + m)), which the engine counts from the model.

    The one rule both ``fedsketch run`` (measured on the loaded model) and ``fedsketch plan``
    (counted from the model's shapes, :mod:`fedsketch.engine.payload`) use. None when neither
    is given.
    """
    if net.payload_mbit:
        return float(net.payload_mbit)
    if num_values is None:
        return None
    return float(num_values) * net.upload_bits / _BITS_PER_MBIT


def profiles_from_network(
    net: NetworkConfig, num_clients: int, rng: np.random.Generator, local_steps: int, payload_mbit: float | None = None
) -> ClientProfiles:
    """Client profiles described by the ``[network]`` settings ``net`` (explicit lists, CSV, or a seeded
    lognormal draw).

    Parameters
    ----------
    net : NetworkConfig
    num_clients : int
        N (``data.num_clients``).
    rng : numpy.random.Generator
        The ``network`` stream of the run's seed; used by the lognormal draw only.
    local_steps : int
        H (``fl.local_steps``): the lognormal draw's ``round_compute_s = network.step_seconds * H``
        (PAPER.md §6 decision).
    payload_mbit : float, optional
        Full-rank LoRA upload size in Mbit, :func:`full_rank_payload_mbit` of the model (the run
        measures it on the loaded model, ``fedsketch plan`` counts it from the model's shapes).
        If omitted, ``network.payload_mbit``; when that is 0 too the seeded draw is refused with
        a message, since no size could be assumed that the run would also use.

    Notes
    -----
    ``tau_0 = network.base_fraction * tau_cp`` for the explicit and lognormal profiles (the CSV
    may give its own ``tau_0`` column).
    """
    n = int(num_clients)
    if net.profile == "explicit":
        tau_cp = np.asarray(net.tau_cp, dtype=float)
        return ClientProfiles(
            tau_cp=tau_cp, tau_cm=np.asarray(net.tau_cm, dtype=float), tau_0=net.base_fraction * tau_cp
        )
    if net.profile == "csv":
        return load_profiles_csv(net.profile_csv, n)
    if payload_mbit is None:
        payload_mbit = full_rank_payload_mbit(net, None)
    if payload_mbit is None:
        raise ValueError(
            "network.payload_mbit = 0 means 'the full-rank LoRA upload size of model.name', which was "
            "not given here: pass payload_mbit (fedsketch.runner.build.config_payload_mbit(cfg)) "
            "or set network.payload_mbit > 0"
        )
    if not payload_mbit > 0:
        raise ValueError(f"payload_mbit must be > 0, got {payload_mbit!r}")
    return draw_profiles(
        n,
        rng,
        round_compute_s=net.step_seconds * int(local_steps),
        speed_sigma=net.speed_sigma,
        payload_mbit=float(payload_mbit),
        rate_min=net.rate_min,
        base_fraction=net.base_fraction,
    )
