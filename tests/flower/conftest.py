"""Flower tests: skipped when flwr is not installed; the tiny-model config of tests/engine."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

@pytest.fixture
def tiny_cfg(tiny_cfg):
    """The shared tiny config with one torch thread per Ray actor."""

    def make(*extra: str):
        return tiny_cfg("train.threads=1", *extra)

    return make
