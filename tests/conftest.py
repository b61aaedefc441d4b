"""Shared fixtures. Every test reads the data embedded in the package (``data.source = "embedded"``),
so none needs, or skips for lack of, a data folder beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_cfg(tmp_path):
    """Config factory on ``configs/tiny.toml`` (tiny random Llama, 4 clients, 2 rounds) + overrides."""
    from fedsketch.config import load_config

    def make(*extra: str):
        return load_config(REPO / "configs" / "tiny.toml", [f"output.dir='{tmp_path}'", "output.plot=false", *extra])

    return make
