"""deploy/run_local.sh: SuperLink + 2 SuperNodes on 127.0.0.1 with TLS and node auth (issue 5).

Takes about 2 minutes on 2 shared cores (SuperLink start, a fresh ClientApp process and
model load per message), hence ``slow``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from fedsketch.records import read_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "run_local.sh"


def _free_port_block(n: int) -> int:
    """A port p such that p..p+n are free on 127.0.0.1 (best effort)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + n > 65000:
            continue
        ok = True
        for q in range(p, p + n + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
                    break
        if ok:
            return p
    raise RuntimeError("no free port block")


@pytest.mark.slow
def test_local_tls_deployment(tmp_path):
    for tool in ("openssl", "ssh-keygen", "setsid", "flower-superlink", "flower-supernode", "flwr", "fedsketch"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not on PATH")
    port = _free_port_block(4)
    sets = ["model.name='random:tiny-llama'", "data.partition='iid'", "data.max_train_examples=100",
            "data.max_seq_len=64", "fl.rounds=2", "fl.local_steps=2", "fl.batch_size=2", "fl.q=1.0",
            "eval.num_samples=8", "train.threads=1", "output.plot=false"]
    cmd = ["bash", str(SCRIPT), "-n", "2", "-w", str(tmp_path), "-p", str(port), "-t", "400"]
    for s in sets:
        cmd += ["-s", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=560)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "REJECTED: unregistered SuperNode refused" in out
    assert "No SuperNode found with the given public key" in (tmp_path / "logs" / "superlink.log").read_text()
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    recs = read_metrics(runs[0] / "metrics.jsonl")
    assert [r.round for r in recs] == [0, 1, 2]
    assert all(r.sampled == [0, 1] and r.failed == [] for r in recs[1:])
    assert (runs[0] / "adapter" / "adapter_config.json").is_file()
    # every process group the script started is gone
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"127.0.0.1:{port}" not in ps
