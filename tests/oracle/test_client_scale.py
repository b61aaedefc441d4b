"""The LoRA scale each client actually trains at (issue 11, point 6a), read from its upload.

Oracle: in round 1 every method starts from ``B = 0`` with the same ``A_0`` (stream
``lora_init``) and the same mini-batch (stream ``batches[t, n]``). At ``B = 0`` the LoRA branch
adds nothing, so the model and its loss gradient ``G = dL/dW`` do not depend on the scale, and
one SGD step gives ``dB = -lr * (s * c_n) * G A_I^T``, exactly proportional to the scale
multiplier ``c_n`` the client trained at. Dividing each client's upload by the same client's
upload in a reference run at ``k = r`` (``c = 1``, all components) reads ``c_n`` off the trained
model: r/k_n for the sketched methods (eq. 3), 1 for HeteroLoRA and FLoRA.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle_helpers import recording_run

K = [8, 4, 2, 1]  # r = 8 (lora.rank of the tiny config)
BASE = ("fl.rounds=1", "fl.local_steps=1", "train.momentum=0.0", "train.max_grad_norm=0.0", "lora.dropout=0.0",
        "eval.num_samples=2")


def _uploads(tiny_cfg, *sets):
    res, eng, _ = recording_run(tiny_cfg(*BASE, *sets))
    ups = {n: u for (t, n), u in eng.uploads.items() if t == 1}
    assert sorted(ups) == [0, 1, 2, 3], "every client must train in round 1"
    return ups


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Round-1 uploads at k = r, scale multiplier 1, every client."""
    from pathlib import Path

    from fedsketch.config import load_config

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "configs" / "tiny.toml", [
                      f"output.dir='{tmp_path_factory.mktemp('ref')}'", "output.plot=false", *BASE,
                      "fl.sampling='full'", "fl.ranks='full'"])
    _, eng, _ = recording_run(cfg)
    return {n: u for (t, n), u in eng.uploads.items() if t == 1}


def _measured_multiplier(up, ref) -> float:
    """Least-squares c in dB = c * dB_ref[:, I] over all modules, after checking the fit is exact."""
    num = den = 0.0
    for m, (dB, dA) in up.delta.items():
        rB = ref.delta[m][0][:, up.indices[m]].astype(np.float64)
        num += float(np.sum(dB.astype(np.float64) * rB))
        den += float(np.sum(rB * rB))
    assert den > 0, "the reference upload is zero: the oracle needs a non-zero gradient"
    c = num / den
    for m, (dB, _) in up.delta.items():
        rB = ref.delta[m][0][:, up.indices[m]]
        np.testing.assert_allclose(dB, c * rB, rtol=1e-4, atol=1e-6 * float(np.abs(rB).max()))
    return c


@pytest.mark.parametrize("method, sets, expect", [
    ("independent", ("fl.sampling='full'",), [8 / k for k in K]),
    ("fslora", ("fl.method='fslora'", "fl.clients_per_round=4"), [8 / k for k in K]),
    ("heterolora", ("fl.method='heterolora'", "fl.clients_per_round=4"), [1.0] * 4),
    ("flora", ("fl.method='flora'", "fl.clients_per_round=4"), [1.0] * 4),
])
def test_each_client_trains_at_its_methods_lora_scale(tiny_cfg, reference, method, sets, expect):
    ups = _uploads(tiny_cfg, *sets, "fl.ranks='explicit'", f"fl.k_list={K}")
    got = [_measured_multiplier(ups[n], reference[n]) for n in range(4)]
    np.testing.assert_allclose(got, expect, rtol=1e-4)
    for n in range(4):
        assert all(len(i) == K[n] for i in ups[n].indices.values())
        if method in ("heterolora", "flora"):  # the leading components
            assert all(np.array_equal(i, np.arange(K[n])) for i in ups[n].indices.values())
