"""Split a training set over N clients (iid or Dirichlet non-iid over the answer label).

PAPER.md §6 "Data partition" decision: per-task runs, Dirichlet(alpha) over the answer label
(paper: alpha = 0.1, N = 50), data weights p_n = |D_n| / |D| from the resulting sizes.

The Dirichlet scheme is the standard label-skew partitioner (FedLab ``hetero_dir_partition``,
flwr-datasets ``DirichletPartitioner`` without self-balancing): for every label, draw client
proportions ~ Dir(alpha * 1_N) and cut that label's shuffled indices at the cumulative
proportions. The whole split is redrawn until every client holds at least ``min_size``
examples. All randomness comes from the ``numpy.random.Generator`` passed in; no global state.

With only 3-4 answer labels that scheme rarely gives *every* one of many clients data: for
N = 50 and alpha = 0.1 on ARC/OBQA/SIQA essentially no draw meets ``min_size`` (measured: 0 of
200 draws), so the paper's setting raises :class:`PartitionError`. The ``"inner_dirichlet"``
scheme (Hsu et al. 2019; flwr-datasets ``InnerDirichletPartitioner``) keeps the label skew but
fixes near-equal client sizes: each client draws its own label mix ~ Dir(alpha * 1_K) and fills
its quota from it, moving to its next-preferred labels once a label runs out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ExperimentConfig
from ..rng import Streams
from .datasets import MCQExample, load_task

SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "inner_dirichlet")
PARTITION_STREAM = "partition"
TRAIN_SUBSET_STREAM = "train_subset"


class PartitionError(ValueError):
    """The requested split cannot be made; the message states the numbers and how to fix it."""


def _check_args(
    labels: np.ndarray, num_clients: int, scheme: str, alpha: float, min_size: int, max_tries: int
) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise PartitionError(f"labels must be a 1-D array, got shape {labels.shape}")
    if scheme not in SCHEMES:
        raise PartitionError(f"unknown partition scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")
    if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise PartitionError(f"num_clients must be a positive integer, got {num_clients!r}")
    if not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise PartitionError(f"min_size must be a non-negative integer, got {min_size!r}")
    if not isinstance(max_tries, (int, np.integer)) or max_tries < 1:
        raise PartitionError(f"max_tries must be a positive integer, got {max_tries!r}")
    if scheme != "iid" and not (np.isfinite(alpha) and alpha > 0):
        raise PartitionError(f"dirichlet alpha must be a finite positive number, got {alpha!r}")
    size = len(labels)
    if num_clients * min_size > size:
        raise PartitionError(
            f"cannot give each of N={num_clients} clients at least min_size={min_size} examples: "
            f"that needs {num_clients * min_size} but the dataset has {size}; lower data.num_clients "
            f"or data.min_client_size, or raise data.max_train_examples (0 = all)"
        )
    return labels


def _dirichlet_once(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[list[np.ndarray]]:
    chunks: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for lab in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == lab))
        props = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
        for n, piece in enumerate(np.split(idx, cuts)):
            chunks[n].append(piece)
    return chunks


def _inner_dirichlet(labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    classes, inverse = np.unique(labels, return_inverse=True)
    pools = [list(rng.permutation(np.flatnonzero(inverse == c))) for c in range(len(classes))]
    remaining = np.array([len(pl) for pl in pools], dtype=np.int64)
    mixes = rng.dirichlet(np.full(len(classes), alpha), size=num_clients)
    quotas = np.array([len(q) for q in np.array_split(np.arange(len(labels)), num_clients)])
    parts: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * num_clients
    for n in rng.permutation(num_clients):
        need, taken = int(quotas[n]), []
        while need > 0:
            avail = remaining > 0
            probs = mixes[n] * avail
            if probs.sum() <= 0:  # every label this client favours is used up
                probs = avail.astype(np.float64)
            counts = np.minimum(rng.multinomial(need, probs / probs.sum()), remaining)
            for c in np.flatnonzero(counts):
                k = int(counts[c])
                taken.extend(pools[c][:k])
                del pools[c][:k]
            remaining -= counts
            need -= int(counts.sum())
        parts[n] = np.sort(np.array(taken, dtype=np.int64))
    return parts


def partition(
    labels: np.ndarray,
    num_clients: int,
    scheme: str,
    *,
    alpha: float,
    min_size: int,
    rng: np.random.Generator,
    max_tries: int,
) -> list[np.ndarray]:
    """Split example indices ``0..len(labels)-1`` over ``num_clients`` clients.

    Parameters
    ----------
    labels : ndarray of int, shape (M,)
        Answer label of each example (the Dirichlet scheme skews over these).
    num_clients : int
        N.
    scheme : {"iid", "dirichlet", "inner_dirichlet"}
        ``"iid"``: a random permutation cut into N near-equal parts (sizes differ by at most
        one). ``"dirichlet"``: per label, proportions ~ Dir(alpha * 1_N) over clients, the
        label's shuffled indices cut at the cumulative proportions (client sizes vary).
        ``"inner_dirichlet"``: near-equal client sizes; each client's label mix ~ Dir(alpha * 1_K)
        over the K labels, falling back to its other labels when one runs out.
    alpha : float
        Dirichlet concentration (small = skewed; ignored for ``"iid"``).
    min_size : int
        Smallest allowed client dataset; the Dirichlet split is redrawn until it holds.
    rng : numpy.random.Generator
        The only source of randomness.
    max_tries : int
        Dirichlet draws before giving up.

    Returns
    -------
    list of ndarray of int64
        N sorted index arrays, pairwise disjoint, together covering every example.

    Raises
    ------
    PartitionError
        Bad arguments; ``num_clients * min_size > len(labels)`` (checked before drawing); or no
        Dirichlet draw in ``max_tries`` met ``min_size``.
    """
    labels = _check_args(labels, num_clients, scheme, alpha, min_size, max_tries)
    size = len(labels)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(size), num_clients)
        return [np.sort(p).astype(np.int64) for p in parts]
    if scheme == "inner_dirichlet":
        return _inner_dirichlet(labels, num_clients, alpha, rng)
    smallest = 0
    for _ in range(max_tries):
        chunks = _dirichlet_once(labels, num_clients, alpha, rng)
        sizes = [sum(len(c) for c in cs) for cs in chunks]
        smallest = min(sizes)
        if smallest >= min_size:
            return [np.sort(np.concatenate(cs)).astype(np.int64) for cs in chunks]
    raise PartitionError(
        f"Dirichlet(alpha={alpha:g}) split of {size} examples over N={num_clients} clients left a client "
        f"with fewer than min_size={min_size} examples in all {max_tries} tries (smallest in the last "
        f'try: {smallest}); use data.partition = "inner_dirichlet" (same label skew, equal sizes), '
        f"raise data.dirichlet_alpha, lower data.num_clients or data.min_client_size, "
        f"use more data (data.max_train_examples), or raise data.max_partition_tries"
    )


def data_weights(parts: list[np.ndarray]) -> np.ndarray:
    """Data weights p_n = |D_n| / |D| (they sum to 1).

    Parameters
    ----------
    parts : list of ndarray
        Index array of each client.

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    sizes = np.array([len(p) for p in parts], dtype=np.float64)
    total = sizes.sum()
    if total <= 0:
        raise PartitionError("data_weights: the clients hold no examples")
    return sizes / total


@dataclass(frozen=True)
class FederatedData:
    """The data of one experiment.

    Attributes
    ----------
    task : str
        Task name.
    train : list of MCQExample
        Training examples after the optional ``max_train_examples`` subset.
    test : list of MCQExample
        The whole test split (evaluation draws its own sample).
    parts : list of ndarray
        Client n's examples are ``[train[i] for i in parts[n]]``.
    weights : ndarray, shape (N,)
        p_n = |D_n| / |D|.
    """

    task: str
    train: list[MCQExample]
    test: list[MCQExample]
    parts: list[np.ndarray]
    weights: np.ndarray

    @property
    def num_clients(self) -> int:
        return len(self.parts)

    @property
    def sizes(self) -> np.ndarray:
        """|D_n| of every client (int64)."""
        return np.array([len(p) for p in self.parts], dtype=np.int64)

    def client_examples(self, n: int) -> list[MCQExample]:
        """The training examples of client ``n``."""
        return [self.train[i] for i in self.parts[n]]


def subset_indices(size: int, max_examples: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted seeded subset of ``range(size)`` of ``max_examples`` items (all when 0 or >= size)."""
    if max_examples <= 0 or max_examples >= size:
        return np.arange(size, dtype=np.int64)
    return np.sort(rng.choice(size, size=max_examples, replace=False)).astype(np.int64)


def build_federated_data(cfg: ExperimentConfig, *, load_test: bool = True) -> FederatedData:
    """Load, subset and partition the data described by ``cfg.data``.

    Streams (``fedsketch.rng.Streams(cfg.seed)``): ``"train_subset"`` picks the
    ``max_train_examples`` subset, ``"partition"`` drives the split.

    Parameters
    ----------
    cfg : fedsketch.config.ExperimentConfig
        Uses ``cfg.seed`` and ``cfg.data`` (task, source, data_dir, hub_dataset,
        max_train_examples, num_clients, partition, dirichlet_alpha, min_client_size,
        max_partition_tries).
    load_test : bool
        Also load the test split (``False`` leaves ``test`` empty, e.g. for planning).

    Returns
    -------
    FederatedData
    """
    d = cfg.data
    streams = Streams(cfg.seed)
    kw = dict(source=d.source, data_dir=d.data_dir, hub_dataset=d.hub_dataset)
    train = load_task(d.task, "train", **kw)
    keep = subset_indices(len(train), d.max_train_examples, streams.generator(TRAIN_SUBSET_STREAM))
    train = [train[i] for i in keep]
    test = load_task(d.task, "test", **kw) if load_test else []
    labels = np.array([ex.label for ex in train], dtype=np.int64)
    parts = partition(
        labels,
        d.num_clients,
        d.partition,
        alpha=d.dirichlet_alpha,
        min_size=d.min_client_size,
        rng=streams.generator(PARTITION_STREAM),
        max_tries=d.max_partition_tries,
    )
    return FederatedData(task=d.task, train=train, test=test, parts=parts, weights=data_weights(parts))


def partition_sizes(cfg: ExperimentConfig) -> np.ndarray:
    """Client dataset sizes |D_n| of the split :func:`build_federated_data` makes for ``cfg``."""
    return build_federated_data(cfg, load_test=False).sizes
