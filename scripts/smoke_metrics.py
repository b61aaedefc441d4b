"""Dump the tiny-model smoke runs' metrics (wall-clock fields removed) so a refactor can be checked
to leave the numbers unchanged (issue 11 point 7).

Usage:
    PYTHONPATH=$PWD/src python3 scripts/smoke_metrics.py OUT_DIR            # run and dump
    PYTHONPATH=$PWD/src python3 scripts/smoke_metrics.py OUT_DIR --check REF  # ... and compare to REF
    ... --set "eval.scoring='shared_prompt'"   # pin a path whose default changed since REF

Runs ``configs/tiny.toml`` (3 rounds, seed 0) for: the paper's method with planner-optimised
sampling and ranks (fixed theta), FSLoRA, HeteroLoRA and FLoRA (capability ranks), plus a
client-batched and a resumed independent run. Writes ``OUT_DIR/<name>.json`` holding the
metrics records minus ``real_seconds`` / ``client_compute_seconds`` and ``run.json`` minus the
versions and machine. ``--check REF`` exits 1 unless every dump equals REF's byte for byte.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WALL = {"real_seconds", "client_compute_seconds"}
# config_hash changes whenever a config key is added (its default included), which changes no number
RUN_INFO_DROP = {"versions", "python", "machine", "config_hash"}
THETA = "planner.theta=[1.0, 0.5, 0.5, 100.0]"
RUNS = {
    "proposed": ["fl.sampling='optimized'", "fl.ranks='optimized'", THETA],
    "fslora": ["fl.method='fslora'", "fl.ranks='capability'"],
    "heterolora": ["fl.method='heterolora'", "fl.ranks='capability'"],
    "flora": ["fl.method='flora'", "fl.ranks='capability'"],
    "independent-batched": ["fl.sampling='fixed'", "fl.ranks='uniform'", "train.client_batch=0"],
}


def dump(run_dir: Path) -> dict:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    info = json.loads((run_dir / "run.json").read_text())
    return {"records": [{k: v for k, v in r.items() if k not in WALL} for r in recs],
            "run": {k: v for k, v in info.items() if k not in RUN_INFO_DROP}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--check", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra override for every run, e.g. eval.scoring='shared_prompt' to pin a path "
                         "whose default changed since REF was recorded")
    a = ap.parse_args()
    from fedsketch.config import load_config
    try:
        from fedsketch.runner import run_experiment
    except ImportError:  # before issue 11 the loop lived in fedsketch.server
        from fedsketch.server import run_experiment

    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = [f"output.dir='{tmp}'", "output.plot=false", "fl.rounds=3", "seed=0", *a.set]
        for name, extra in RUNS.items():
            res = run_experiment(load_config(REPO / "configs" / "tiny.toml", [*base, *extra, f"output.name='{name}'"]))
            (a.out / f"{name}.json").write_text(json.dumps(dump(res.run_dir), indent=1, sort_keys=True) + "\n")
        # resume: one round, then the rest
        cfg = load_config(REPO / "configs" / "tiny.toml", [*base, "fl.sampling='fixed'", "output.name='resumed'"])
        run_experiment(cfg, stop_after=1)
        res = run_experiment(cfg)
        (a.out / "resumed.json").write_text(json.dumps(dump(res.run_dir), indent=1, sort_keys=True) + "\n")
    if a.check is None:
        return 0
    bad = 0
    for ref in sorted(a.check.glob("*.json")):
        same = ref.read_text() == (a.out / ref.name).read_text()
        bad += not same
        print(f"{ref.stem}: {'identical' if same else 'DIFFERS'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
