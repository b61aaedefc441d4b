"""Client partition: disjoint cover, seeded, min size, Dirichlet skew, data weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsketch.config import load_config
from fedsketch.data import (
    FederatedData,
    PartitionError,
    build_federated_data,
    data_weights,
    partition,
    partition_sizes,
)

LABELS = np.random.default_rng(123).integers(0, 4, size=2000)  # balanced 4-label toy set
SCHEMES = ["iid", "dirichlet", "inner_dirichlet"]


def split(scheme: str, seed: int = 0, n: int = 10, alpha: float = 0.1, min_size: int = 5,
          labels: np.ndarray = LABELS, tries: int = 1000) -> list[np.ndarray]:
    return partition(labels, n, scheme, alpha=alpha, min_size=min_size, rng=np.random.default_rng(seed),
                     max_tries=tries)


def mean_label_entropy(parts: list[np.ndarray], labels: np.ndarray) -> float:
    ents = []
    for p in parts:
        freq = np.bincount(labels[p], minlength=labels.max() + 1) / len(p)
        nz = freq[freq > 0]
        ents.append(float(-(nz * np.log(nz)).sum()))
    return float(np.mean(ents))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_disjoint_cover_sorted(scheme: str) -> None:
    parts = split(scheme)
    assert len(parts) == 10
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(len(LABELS)))  # disjoint and covering
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0) and len(p) >= 5


@pytest.mark.parametrize("scheme", SCHEMES)
def test_seeded(scheme: str) -> None:
    a, b, c = split(scheme, 1), split(scheme, 1), split(scheme, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_balanced_sizes_and_labels() -> None:
    parts = split("iid", n=7)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert mean_label_entropy(parts, LABELS) > 0.95 * np.log(4)


@pytest.mark.parametrize("scheme", ["dirichlet", "inner_dirichlet"])
def test_dirichlet_is_skewed(scheme: str) -> None:
    iid = mean_label_entropy(split("iid"), LABELS)
    skew = [mean_label_entropy(split(scheme, seed), LABELS) for seed in range(5)]
    assert max(skew) < 0.6 * iid


def test_inner_dirichlet_equal_sizes_for_paper_setting() -> None:
    parts = split("inner_dirichlet", n=50, min_size=8)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_min_size_enforced_by_redraw() -> None:
    # Unconstrained draws at alpha=0.1 often leave a client tiny; with min_size the result never does.
    for seed in range(5):
        assert min(len(p) for p in split("dirichlet", seed, min_size=40)) >= 40


def test_impossible_min_size_errors_at_once() -> None:
    with pytest.raises(PartitionError) as e:
        split("iid", n=10, min_size=201)
    msg = str(e.value)
    assert "N=10" in msg and "min_size=201" in msg and "2000" in msg and "data.num_clients" in msg


def test_dirichlet_gives_up_after_max_tries() -> None:
    with pytest.raises(PartitionError) as e:
        split("dirichlet", n=50, alpha=0.01, min_size=30, tries=3)
    msg = str(e.value)
    for part in ("alpha=0.01", "N=50", "min_size=30", "2000 examples", "3 tries", "inner_dirichlet"):
        assert part in msg


def test_bad_arguments() -> None:
    with pytest.raises(PartitionError, match="allowed: iid, dirichlet"):
        split("shards")
    with pytest.raises(PartitionError, match="alpha"):
        split("dirichlet", alpha=0.0)
    with pytest.raises(PartitionError, match="num_clients"):
        split("iid", n=0)


def test_data_weights() -> None:
    parts = split("dirichlet")
    p = data_weights(parts)
    assert p.shape == (10,) and np.isclose(p.sum(), 1.0)
    assert np.allclose(p, [len(x) / len(LABELS) for x in parts])


# --------------------------------------------------------------------------- from a config

def test_build_federated_data() -> None:
    over = ["data.task=arc_c", "data.num_clients=5",
            "data.max_train_examples=300", "data.partition=iid", "seed=3"]
    cfg = load_config(overrides=over)
    fd = build_federated_data(cfg)
    assert isinstance(fd, FederatedData)
    assert len(fd.train) == 300 and len(fd.test) == 1172 and fd.num_clients == 5
    assert np.isclose(fd.weights.sum(), 1.0)
    assert sum(len(fd.client_examples(n)) for n in range(5)) == 300
    assert np.array_equal(partition_sizes(cfg), fd.sizes)
    again = build_federated_data(cfg)
    assert [e.question for e in again.train] == [e.question for e in fd.train]
    other = build_federated_data(load_config(overrides=[*over[:-1], "seed=4"]))
    assert [e.question for e in other.train] != [e.question for e in fd.train]
