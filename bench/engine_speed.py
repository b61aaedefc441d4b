"""Engine speed: the new paths against the earlier ones, side by side in one process.

(a) one local training step (PEFT, batch ``fl.batch_size``): LM head at the scored positions only
    (``train.logits='scored'``) against the full-logits loss (``'full'``);
(b) a ``--questions``-question evaluation: one prompt pass per question
    (``eval.scoring='shared_prompt'``) against every option as its own full sequence (``'per_option'``);
    also the largest logits tensor each path builds;
(c) one round of ``--clients`` sampled clients, H local steps each: all of them fused
    (``train.client_batch=0``) against one at a time (``train.client_batch=1``), both with the
    scored loss;
(d) achieved FLOP/s of a training step (FLOPs counted by ``torch.utils.flop_counter``, time
    measured without the counter) as a share of this machine's fp32 GEMM peak, measured here
    (the best of ``--gemm-reps`` square ``--gemm-n`` matmuls).

Every pair runs interleaved (ABAB...) so machine noise hits both sides alike; the printed
ratios are old time / new time (> 1: the new path is faster).

Usage: python bench/engine_speed.py [--model embedded:smollm2-135m-instruct] [--reps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import numpy as np
import torch

from fedsketch.config import load_config
from fedsketch.data import build_federated_data
from fedsketch.engine import lora
from fedsketch.engine.runtime import TorchEngine
from fedsketch.engine.tokens import collate
from fedsketch.rng import Streams
from fedsketch.sketch import draw_indices


def interleaved(fns: dict[str, callable], reps: int) -> dict[str, list[float]]:
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def gemm_peak(n: int, reps: int, device: torch.device) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--data-dir", default="../shared/data/commonsense")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of (a) and (d)")
    ap.add_argument("--eval-reps", type=int, default=1, help="interleaved repetitions of (b) and (c)")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--clients", type=int, default=10, help="sampled clients in the round of (c)")
    ap.add_argument("--steps", type=int, default=5, help="H local steps per client in (c)")
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--gemm-reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip (a,b,c,d)")
    args = ap.parse_args()
    skip = set(args.skip.split(",")) - {""}

    cfg = load_config(None, [f"model.name='{args.model}'", f"data.data_dir='{args.data_dir}'",
                             f"data.num_clients={args.clients}", "data.partition='iid'", f"fl.local_steps={args.steps}",
                             f"eval.num_samples={args.questions}", f"train.device='{args.device}'",
                             f"train.threads={args.threads}"])
    data = build_federated_data(cfg)
    streams = Streams(0)
    eng = TorchEngine(cfg, data.train, data.test, data.parts, streams)
    dev = eng.device
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    state = {m: (0.01 * rng.normal(size=B.shape).astype(np.float32), A) for m, (B, A) in eng.initial_state().items()}
    bs, r = cfg.fl.batch_size, cfg.lora.rank
    train_batch = collate([eng.client_data[0][i] for i in range(bs)], eng.tok.pad_token_id)
    train_batch = {k: v.to(dev) for k, v in train_batch.items()}
    ntok = int(train_batch["attention_mask"].sum())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {dev}; load {os.getloadavg()[0]:.2f} at start")
    print(f"model {args.model}, r={r}, targets {list(cfg.lora.target_modules)}, max_seq_len {cfg.data.max_seq_len}")

    def step(logits: str, batch=train_batch):
        def run():
            eng.cfg = cfg.replace(train=dataclasses.replace(cfg.train, logits=logits))
            lora.set_state(eng.modules, state)
            params = lora.lora_parameters(eng.modules)
            eng.model.train()
            loss = eng.loss(batch)
            for p in params:
                p.grad = None
            loss.backward()
            sync()
            eng.model.eval()
        return run

    results = {}
    if "a" not in skip:
        longest = sorted(eng.client_data[0], key=lambda e: len(e.ids))[-bs:]
        long_batch = {k: v.to(dev) for k, v in collate(longest, eng.tok.pad_token_id).items()}
        for label, batch in (("a mini-batch of client 0", train_batch), ("client 0's longest sequences", long_batch)):
            t = interleaved({"full": step("full", batch), "scored": step("scored", batch)}, args.reps)
            ra = np.median(t["full"]) / np.median(t["scored"])
            results.setdefault("a", ra)
            print(f"\n(a) training step, {label}: batch {bs} x {batch['input_ids'].shape[1]} tokens "
                  f"({int(batch['attention_mask'].sum())} real, {int((batch['labels'] != -100).sum())} response), "
                  f"{args.reps} reps")
            print(f"    full logits {np.median(t['full']):.3f} s, scored positions {np.median(t['scored']):.3f} s "
                  f"-> ratio {ra:.2f}x")

    if "b" not in skip:
        def ev(scoring: str):
            def run():
                eng.cfg = cfg.replace(eval=dataclasses.replace(cfg.eval, scoring=scoring))
                run.trace = []
                run.scores, counts = eng.option_scores(state, run.trace)
                run.res = eng._result(run.scores, counts)
            return run
        fa, fb = ev("per_option"), ev("shared_prompt")
        t = interleaved({"per_option": fa, "shared_prompt": fb}, args.eval_reps)
        rb = np.median(t["per_option"]) / np.median(t["shared_prompt"])
        results["b"] = rb
        items = [c for c, _ in eng.eval_items]
        differ = sum(int(np.argmax(a) != np.argmax(b)) for a, b in zip(fa.scores, fb.scores, strict=True))
        nseq = sum(len(c) for c in items)
        print(f"\n(b) evaluation of {len(items)} questions ({nseq} options), eval.batch_size {cfg.eval.batch_size}")
        print(f"    per_option {np.median(t['per_option']):.2f} s (acc {fa.res.accuracy:.2f}), shared_prompt "
              f"{np.median(t['shared_prompt']):.2f} s (acc {fb.res.accuracy:.2f}) -> ratio {rb:.2f}x; "
              f"predictions differing: {differ} of {len(items)}")
        print(f"    largest logits tensor (fp32): per_option {4 * max(fa.trace) / 2**20:.0f} MiB (b x L x V), "
              f"shared_prompt {4 * max(fb.trace) / 2**20:.1f} MiB (option tokens x V)")

    if "c" not in skip:
        jobs = [(n, draw_indices(streams.generator("sketch", 1, n), eng.module_names, r, int(1 + n % r)), None)
                for n in range(args.clients)]

        def round_(C: int):
            def run():
                eng.cfg = cfg.replace(train=dataclasses.replace(cfg.train, client_batch=C))
                if C == 1:
                    run.ups = [eng.train_client(state, n, 1, idx, scale=s) for n, idx, s in jobs]
                else:
                    run.ups = eng.train_clients(state, 1, jobs)
                sync()
            return run
        f1, fall = round_(1), round_(0)
        t = interleaved({"C=1": f1, "C=all": fall}, args.eval_reps)
        rc = np.median(t["C=1"]) / np.median(t["C=all"])
        results["c"] = rc
        worst = max(float(np.abs(np.concatenate([x.ravel() for m in sorted(a.delta) for x in a.delta[m]])
                                 - np.concatenate([x.ravel() for m in sorted(b.delta) for x in b.delta[m]])).max()
                          / np.abs(np.concatenate([x.ravel() for m in sorted(a.delta) for x in a.delta[m]])).max())
                    for a, b in zip(f1.ups, fall.ups, strict=True))
        print(f"\n(c) one round of {args.clients} clients (mixed k_n), H={args.steps}, batch {bs} each")
        print(f"    C=1 (sequential PEFT) {np.median(t['C=1']):.2f} s, C=all (fused) {np.median(t['C=all']):.2f} s "
              f"-> ratio {rc:.2f}x; max relative upload difference {worst:.1e}")

    if "d" not in skip:
        from torch.utils.flop_counter import FlopCounterMode

        fused = collate([eng.client_data[n][i] for n in range(args.clients) for i in range(bs)], eng.tok.pad_token_id)
        fused = {k: v.to(dev) for k, v in fused.items()}
        print(f"\n(d) achieved FLOP/s of a training step (scored loss) / fp32 GEMM peak ({args.gemm_n}^3 matmul, "
              f"best of {args.gemm_reps}), the peak re-measured right before each timed step (load varies)")
        for label, batch in ((f"batch {bs}", train_batch), (f"batch {bs * args.clients} (one fused step's rows)", fused)):
            fn = step("scored", batch)
            with FlopCounterMode(display=False) as fc:
                fn()
            flops = fc.get_total_flops()
            shares, peaks, times = [], [], []
            for _ in range(args.reps):
                peaks.append(gemm_peak(args.gemm_n, args.gemm_reps, dev))
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
                shares.append(flops / times[-1] / peaks[-1])
            results.setdefault("d", []).append(float(np.median(shares)))
            print(f"    training step, {label}: {flops / 1e9:.1f} GFLOP (torch flop counter); per rep: step "
                  + ", ".join(f"{t:.2f} s" for t in times) + "; GEMM peak "
                  + ", ".join(f"{p / 1e9:.1f}" for p in peaks) + " GFLOP/s; share "
                  + ", ".join(f"{100 * x:.0f} %" for x in shares) + f" -> median {100 * np.median(shares):.0f} %")
    print(f"\nload {os.getloadavg()[0]:.2f} at end")
    summary = ", ".join(f"({k}) {v:.2f}x" if k != "d" else f"(d) {', '.join(f'{100 * x:.0f} %' for x in v)}"
                        for k, v in results.items())
    print("summary:", summary)


if __name__ == "__main__":
    main()
