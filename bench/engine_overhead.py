"""Engine overhead: client-steps/s of fedsketch's sketched local training vs plain PEFT steps.

Both sides run the same model, the same LoRA adapter, the same mini-batches and H SGD steps,
interleaved in one process (ABAB...) so that machine noise hits both alike. The federated side
also does everything a client round costs the engine: masking the sketch into the adapter,
setting the r/k scale, extracting the uploaded blocks, and the server's validation, unbiased
aggregation and bandwidth split of one round.

Usage: python bench/engine_overhead.py [--model embedded:smollm2-135m-instruct] [--reps 4]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from fedsketch.aggregate import aggregate, validate_update
from fedsketch.config import load_config
from fedsketch.data import build_federated_data
from fedsketch.engine import lora
from fedsketch.engine.runtime import TorchEngine
from fedsketch.engine.tokens import collate, mean_response_loss
from fedsketch.network import allocate_bandwidth
from fedsketch.rng import Streams
from fedsketch.runner.build import engine_settings
from fedsketch.sketch import draw_indices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--data-dir", default="../shared/data/commonsense")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="H local steps per client round")
    ap.add_argument("--k", type=int, default=8, help="sketch rank (8 = r: same shapes as plain LoRA)")
    args = ap.parse_args()

    cfg = load_config(None, [f"model.name='{args.model}'", f"data.data_dir='{args.data_dir}'", "data.num_clients=2",
                             "data.partition='iid'", f"fl.local_steps={args.steps}", "eval.num_samples=1"])
    data = build_federated_data(cfg)
    streams = Streams(0)
    eng = TorchEngine(engine_settings(cfg), data.train, data.test, data.parts, streams)
    state = eng.initial_state()
    H, bs, r = cfg.fl.local_steps, cfg.fl.batch_size, cfg.lora.rank

    def fedsketch_round(rep: int) -> None:
        idx = draw_indices(streams.generator("sketch", rep, 0), eng.module_names, r, args.k)
        u = eng.train_client(state, 0, rep, idx)
        assert validate_update(u, state, idx) is None
        aggregate(state, [u], np.array([1.0]))
        allocate_bandwidth(np.array([10.0]), np.array([5.0]), 100.0)

    def plain_round(rep: int) -> None:
        # plain PEFT LoRA: the same batches (same stream), H SGD steps on all LoRA parameters
        lora.set_state(eng.modules, state)
        params = lora.lora_parameters(eng.modules)
        opt = torch.optim.SGD(params, lr=cfg.train.lr)
        rng = streams.generator("batches", rep, 0)
        d = eng.client_data[0]
        eng.model.train()
        for _ in range(H):
            pick = rng.choice(len(d), size=bs, replace=False)
            loss = mean_response_loss(eng.model, collate([d[i] for i in pick], eng.tok.pad_token_id))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        eng.model.eval()

    fedsketch_round(0)  # warm-up both paths
    plain_round(0)
    t_fed, t_plain = [], []
    for rep in range(1, args.reps + 1):
        for fn, acc in ((fedsketch_round, t_fed), (plain_round, t_plain)):
            t0 = time.perf_counter()
            fn(rep)
            acc.append(time.perf_counter() - t0)
    sps_fed, sps_plain = H * len(t_fed) / sum(t_fed), H * len(t_plain) / sum(t_plain)
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"model {args.model}, r={r}, k={args.k}, H={H}, batch {bs}, {args.reps} interleaved reps")
    print("| path | client-steps/s | s per client round (median) |")
    print("|---|---|---|")
    print(f"| plain PEFT SGD | {sps_plain:.3f} | {np.median(t_plain):.3f} |")
    print(f"| fedsketch client round | {sps_fed:.3f} | {np.median(t_fed):.3f} |")
    print(f"overhead ratio (fedsketch time / plain time): {sum(t_fed) / sum(t_plain):.4f} "
          f"-> {100 * (sum(t_fed) / sum(t_plain) - 1):+.2f} %")


if __name__ == "__main__":
    main()
