"""Flower tests: skipped when flwr is not installed; the tiny-model config of tests/engine."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

TINY = [
    "model.name='random:tiny-llama'",
    "data.num_clients=4",
    "data.partition='iid'",
    "data.max_train_examples=200",
    "data.max_seq_len=64",
    "fl.rounds=2",
    "fl.local_steps=2",
    "fl.batch_size=2",
    "fl.q=0.75",
    "eval.num_samples=8",
    "eval.every=1",
    "train.lr=0.5",
    "train.threads=1",
    "output.progress=false",
    "output.plot=false",
]


@pytest.fixture
def tiny_cfg(data_dir, tmp_path):
    from fedsketch.config import load_config

    def make(*extra: str):
        return load_config(None, [*TINY, f"data.data_dir='{data_dir}'", f"output.dir='{tmp_path}'", *extra])

    return make
