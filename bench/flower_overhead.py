"""Flower overhead: per-round wall time of the Flower simulation backend over the in-process one.

Same config and seed on both sides (so the same clients are sampled with the same sketches and
do the same local training, PAPER.md Algorithm 1): 50 clients, the tiny random Llama, few
rounds, central evaluation only after the last round. Each side is run ``--reps`` times,
alternating (in-process, Flower, in-process, Flower, ...) so machine noise hits both alike.

Per-round wall time excludes one-off start-up: for the in-process backend the differences of
``real_seconds`` between consecutive rounds; for Flower the ServerApp's per-round timer
(configure -> messages -> replies -> aggregate -> record). The first round (actors load the
engine) and the last (evaluation) are dropped. Flower runs one Ray actor per CPU
(``client_resources.num_cpus = 1``), so on a multi-core machine its clients run in parallel
while the in-process backend runs them one after another; the ratio is what a user sees.

Usage: python bench/flower_overhead.py [--clients 50] [--rounds 5] [--reps 2] [--q 0.3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

import numpy as np

from fedsketch.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--q", type=float, default=0.3)
    ap.add_argument("--data-dir", default="../shared/data/commonsense")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray CPUs (one actor each)")
    args = ap.parse_args()

    from fedsketch.flower.run import run_flower
    from fedsketch.runner import run_experiment

    tmp = tempfile.mkdtemp(prefix="flower-bench-")
    sets = ["model.name='random:tiny-llama'", f"data.num_clients={args.clients}", "data.partition='iid'",
            f"data.max_train_examples={8 * args.clients}", "data.max_seq_len=64", f"fl.rounds={args.rounds}",
            "fl.local_steps=2", "fl.batch_size=2", f"fl.q={args.q}", "eval.num_samples=8", "eval.every=0",
            "train.threads=1", "output.progress=false", "output.plot=false", "output.checkpoint_every=0",
            f"data.data_dir='{args.data_dir}'", f"output.dir='{tmp}'"]
    keep = slice(1, args.rounds - 1)  # drop round 1 (warm-up) and the last (evaluation)
    inproc, flower, sampled, startup = [], [], [], []
    for rep in range(args.reps):
        cfg = load_config(None, [*sets, f"output.name='inproc{rep}'"])
        res = run_experiment(cfg, fresh=True)
        real = [r.real_seconds for r in res.records]
        inproc += list(np.diff(real)[keep])
        sampled += [len(r.sampled) for r in res.records[1:]][keep]
        stats: dict = {}
        t0 = time.perf_counter()
        run_flower(load_config(None, [*sets, f"output.name='flower{rep}'"]), fresh=True,
                   ray_init_args={"num_cpus": args.cpus}, stats=stats)
        startup.append(time.perf_counter() - t0 - sum(stats["round_wall_seconds"]))
        flower += stats["round_wall_seconds"][keep]
        print(f"rep {rep}: in-process {np.round(np.diff(real)[keep], 3).tolist()} s/round, "
              f"Flower {np.round(stats['round_wall_seconds'][keep], 3).tolist()} s/round", flush=True)
    a, b = np.mean(inproc), np.mean(flower)
    print()
    print(f"command : python {' '.join(sys.argv)}")
    print(f"date    : {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine : {platform.platform()}, {os.cpu_count()} CPUs, Ray actors: {args.cpus}")
    print(f"setup   : {args.clients} clients, tiny random Llama, q={args.q}, H=2, batch 2, "
          f"{len(inproc)} measured rounds ({np.mean(sampled):.1f} sampled on average)")
    print(f"in-process : {a:.3f} s/round (median {np.median(inproc):.3f})")
    print(f"Flower     : {b:.3f} s/round (median {np.median(flower):.3f})")
    print(f"ratio Flower / in-process : {b / a:.2f}x  (overhead {b - a:+.3f} s/round, "
          f"{(b - a) / max(np.mean(sampled), 1e-9) * 1000:+.1f} ms per sampled client)")
    print(f"Flower one-off start-up (Ray, actors, discovery, engine loads, run folder): "
          f"{np.mean(startup):.1f} s per run")


if __name__ == "__main__":
    main()
