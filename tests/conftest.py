"""Shared fixtures: the data folder beside the checkout (../shared/data/commonsense)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("FEDSKETCH_DATA_DIR", REPO.parent / "shared" / "data" / "commonsense"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "ARC-Easy" / "train.json").is_file():
        pytest.skip(f"shared data not found at {DATA_DIR} (set FEDSKETCH_DATA_DIR)")
    return DATA_DIR


@pytest.fixture
def tiny_cfg(data_dir, tmp_path):
    """Config factory on ``configs/tiny.toml`` (tiny random Llama, 4 clients, 2 rounds) + overrides."""
    from fedsketch.config import load_config

    def make(*extra: str):
        return load_config(REPO / "configs" / "tiny.toml",
                           [f"data.data_dir='{data_dir}'", f"output.dir='{tmp_path}'", "output.plot=false", *extra])

    return make
