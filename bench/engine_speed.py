"""Engine speed: the fast engine paths against their reference paths, side by side in one process.

(a) one local training step (PEFT, batch ``fl.batch_size``): LM head at the scored positions only
    (``train.logits='scored'``) against the full-logits loss (``'full'``);
(b) a ``--questions``-question evaluation: one prompt pass per question
    (``eval.scoring='shared_prompt'``) against every option as its own full sequence (``'per_option'``);
    also the largest logits tensor each path builds;
(c) one round of ``--clients`` sampled clients, H local steps each: fused in groups of each
    ``--client-batches`` value (``train.client_batch``, 0 = all of them) against one at a time
    (``train.client_batch=1``), all with the scored loss;
(d) achieved FLOP/s of a training step (FLOPs counted by ``torch.utils.flop_counter``, time
    measured without the counter) as a share of this machine's fp32 GEMM peak, measured here
    (the best of ``--gemm-reps`` square ``--gemm-n`` matmuls).

Every pair runs interleaved (ABAB...) so machine noise hits both sides alike; the printed
ratios are reference time / fast time (> 1: the fast path is faster).

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
from fedsketch.runner.build import engine_settings
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


def concurrent_steps(fn, workers: int, steps: int) -> float:
    """Wall seconds for ``workers`` forked processes of one torch thread to run ``fn`` ``steps`` times each,
    all started together (a barrier) after one warm-up call each."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(workers + 1)
    done = ctx.Barrier(workers + 1)

    def work():
        torch.set_num_threads(1)  # one thread per forked worker, as train.workers runs them
        fn()
        start.wait()
        for _ in range(steps):
            fn()
        done.wait()

    procs = [ctx.Process(target=work) for _ in range(workers)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    done.wait()
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return wall


def flop_model_text(eng) -> str:
    return ("FLOPs counted: forward 2 x (frozen decoder linear weights) x (positions computed, packed rows incl. padding); "
            "backward the same again (input gradients only: the base is frozen, no weight gradients); attention "
            "QK^T and AV over each full packed row (4 T^2 d per layer forward, 2x that backward); LM head 2 D V per "
            "scored position forward and again backward; LoRA 2 r (d_in + d_out) per position and module forward, 2x backward.")


def analytic_flops(eng, batch, rows: int) -> dict[str, float]:
    """The FLOP model of :func:`flop_model_text` for one scored training step of ``batch`` packed into ``rows``."""
    from fedsketch.engine.scoring import decoder_and_head, pack

    dec, head = decoder_and_head(eng.model)
    ids, _, tgt = pack(batch, rows)
    P, scored = ids.numel(), int((tgt != -100).sum())
    n_lin = sum(p.numel() for n, p in dec.layers.named_parameters() if n.endswith(".weight") and "lora_" not in n
                and p.dim() == 2)
    conf = eng.model.get_base_model().config
    d_attn = conf.num_attention_heads * getattr(conf, "head_dim", conf.hidden_size // conf.num_attention_heads)
    attn = 4 * len(dec.layers) * ids.shape[0] * ids.shape[1] ** 2 * d_attn
    D, V = head.weight.shape[1], head.weight.shape[0]
    lora_f = sum(2 * eng.rank * (m.in_features + m.out_features) for m in eng.modules.values()) * P
    out = {"linear fwd": 2 * n_lin * P, "linear bwd": 2 * n_lin * P, "attention": 3 * attn,
           "head": 2 * 2 * D * V * scored, "LoRA": 3 * lora_f}
    out["total"] = sum(out.values())
    return out


CATEGORIES = (("GEMM (mm/addmm/bmm)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
              ("attention (sdpa + its softmax)", ("scaled_dot_product", "aten::_softmax", "aten::softmax")),
              ("CE / log-softmax", ("log_softmax", "nll_loss", "cross_entropy")),
              ("copies / indexing / cat", ("aten::copy_", "aten::index", "aten::cat", "aten::clone", "aten::contiguous",
                                           "aten::masked", "aten::scatter", "aten::gather", "aten::fill_", "aten::zero_",
                                           "aten::empty", "aten::to", "aten::_to_copy")),
              ("elementwise (norms, SiLU, RoPE, residual adds, grad accumulation)",
               ("aten::mul", "aten::add", "aten::silu", "aten::pow", "aten::mean", "aten::rsqrt", "aten::neg",
                "aten::sub", "aten::div", "aten::sum", "aten::cos", "aten::sin", "aten::sigmoid", "silu_backward",
                "aten::threshold")))


def profile_step(fn, dev, n: int, reps: int, peak: float) -> None:
    """Self CPU time of one step by op category, and the step's GEMMs replayed alone at their own shapes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    ev = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in ev)
    share: dict[str, float] = {}
    other: dict[str, float] = {}
    gemms = []
    for e in ev:
        cat = next((c for c, keys in CATEGORIES if any(k in e.key for k in keys)), "other")
        share[cat] = share.get(cat, 0.0) + e.self_cpu_time_total
        if cat == "other":
            other[e.key] = other.get(e.key, 0.0) + e.self_cpu_time_total
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm") and e.input_shapes:
            gemms.append((e.key, [tuple(x) for x in e.input_shapes], e.count))
    print("      profile (self CPU time of one step, profiler on): "
          + "; ".join(f"{c} {100 * v / total:.0f} %" for c, v in sorted(share.items(), key=lambda kv: -kv[1]))
          + "; largest in other: " + ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in
                                               sorted(other.items(), key=lambda kv: -kv[1])[:4]))
    # the same GEMMs alone, at their shapes: the ceiling of this step's matmul throughput
    g_flops, g_time = 0.0, 0.0
    for key, shp, count in gemms:
        if key == "aten::addmm":
            shp = shp[1:3]
        if key == "aten::bmm":
            (b_, m_, k_), (_, _, n_) = shp
            a, b = torch.randn(b_, m_, k_, device=dev), torch.randn(b_, k_, n_, device=dev)
            f = 2 * b_ * m_ * k_ * n_
            op = torch.bmm
        else:
            (m_, k_), (_, n_) = shp
            a, b = torch.randn(m_, k_, device=dev), torch.randn(k_, n_, device=dev)
            f = 2 * m_ * k_ * n_
            op = torch.mm
        op(a, b)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(count):
                op(a, b)
            best = min(best, time.perf_counter() - t0)
        g_flops += f * count
        g_time += best
    peak = max(peak, gemm_peak(n, reps, dev))  # re-measured next to the replay (the load varies)
    big = sorted(gemms, key=lambda g: -g[2])[:3]
    print(f"      the step's {sum(c for *_, c in gemms)} GEMMs replayed alone at their own shapes: {g_flops / 1e9:.1f} GFLOP in "
          f"{g_time:.2f} s = {g_flops / g_time / 1e9:.1f} GFLOP/s = {100 * g_flops / g_time / peak:.0f} % of the "
          f"{n}^3 peak ({peak / 1e9:.1f}, the higher of the step's median and one measured right after the replay); most frequent shapes " + ", ".join(f"{k}{s} x{c}" for k, s, c in big))


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
    ap.add_argument("--client-batches", default="0", help="(c): train.client_batch values timed against C=1 (0 = all)")
    ap.add_argument("--workers", default="0", help="(c), (d): train.workers values (forked processes; 0 = one per torch "
                    "thread) timed against one process; '' to skip")
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--gemm-reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip (a,b,c,d; r = (d)'s whole-round timing)")
    ap.add_argument("--scorings", default="per_option,shared_prompt,packed",
                    help="(b): eval.scoring paths, the first is the reference of the ratios")
    ap.add_argument("--eval-batch-size", type=int, default=0, help="(b): eval.batch_size (0 = the config default)")
    ap.add_argument("--profile", type=int, default=1, help="(d): per-op profile and the GEMMs replayed at the step's own shapes")
    ap.add_argument("--fused-clients", type=int, default=10, help="(d): clients of the fused (client_batch) step")
    args = ap.parse_args()
    skip = set(args.skip.split(",")) - {""}

    cfg = load_config(None, [f"model.name='{args.model}'", f"data.data_dir='{args.data_dir}'",
                             f"data.num_clients={args.clients}", "data.partition='iid'", f"fl.local_steps={args.steps}",
                             f"eval.num_samples={args.questions}", f"train.device='{args.device}'",
                             f"train.threads={args.threads}"]
                      + ([f"eval.batch_size={args.eval_batch_size}"] if args.eval_batch_size else []))
    data = build_federated_data(cfg)
    streams = Streams(0)
    settings = engine_settings(cfg)
    eng = TorchEngine(settings, data.train, data.test, data.parts, streams)
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
            eng.settings = dataclasses.replace(settings, train=dataclasses.replace(settings.train, logits=logits))
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
                eng.settings = dataclasses.replace(settings, eval=dataclasses.replace(settings.eval, scoring=scoring))
                run.trace = []
                run.scores, counts = eng.option_scores(state, run.trace)
                run.res = eng._result(run.scores, counts)
            return run
        paths = [p for p in args.scorings.split(",") if p]
        fns = {p: ev(p) for p in paths}
        t = interleaved(fns, args.eval_reps)
        med = {p: float(np.median(t[p])) for p in paths}
        items = [c for c, _ in eng.eval_items]
        nseq = sum(len(c) for c in items)
        print(f"\n(b) evaluation of {len(items)} questions ({nseq} options), eval.batch_size {cfg.eval.batch_size}, "
              f"{args.eval_reps} interleaved reps (median)")
        ref = paths[0]
        for p in paths:
            differ = sum(int(np.argmax(a) != np.argmax(b)) for a, b in zip(fns[ref].scores, fns[p].scores, strict=True))
            worst = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-30)))
                        for a, b in zip(fns[ref].scores, fns[p].scores, strict=True))
            print(f"    {p:<13} {med[p]:7.2f} s  (" + ", ".join(f"{x:.2f}" for x in t[p]) + f")  acc {fns[p].res.accuracy:.2f}"
                  f"  ratio {ref}/{p} {med[ref] / med[p]:.2f}x; vs {ref}: {differ} of {len(items)} predictions differ, "
                  f"max relative log-likelihood difference {worst:.1e}; largest logits tensor {4 * max(fns[p].trace) / 2**20:.1f} MiB")
            if p != ref:
                results[f"b {p}"] = med[ref] / med[p]
        for a, b in zip(paths[1:], paths[2:]):
            print(f"    ratio {a}/{b} {med[a] / med[b]:.2f}x")

    jobs = [(n, draw_indices(streams.generator("sketch", 1, n), eng.module_names, r, int(1 + n % r)), None)
            for n in range(args.clients)]
    worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]

    def forked_round(W: int):  # train.workers = W: whole clients side by side in forked processes
        def run():
            got = eng.train_parallel(state, 1, jobs, W)
            run.ups = [got[n] for n, _, _ in jobs]
        return run

    from fedsketch.engine.workers import resolve_workers

    def wname(W: int) -> str:
        return f"workers={W} ({resolve_workers(W, len(jobs), torch.get_num_threads())} processes)"

    if "c" not in skip:
        def round_(C: int):
            def run():
                eng.settings = dataclasses.replace(settings, train=dataclasses.replace(settings.train, client_batch=C))
                if C == 1:
                    run.ups = [eng.train_client(state, n, 1, idx, scale=s) for n, idx, s in jobs]
                else:  # groups of C, as runner.executor.InProcessExecutor forms them
                    size = C or len(jobs)
                    run.ups = [u for j in range(0, len(jobs), size) for u in eng.train_clients(state, 1, jobs[j:j + size])]
                sync()
            return run

        def flat(u):
            return np.concatenate([x.ravel() for m in sorted(u.delta) for x in u.delta[m]])

        groups = [int(x) for x in args.client_batches.split(",") if x.strip()]
        fns = ({"C=1": round_(1)} | {f"C={'all' if C == 0 else C}": round_(C) for C in groups}
               | {wname(W): forked_round(W) for W in worker_counts})
        t = interleaved(fns, args.eval_reps)
        print(f"\n(c) one round of {args.clients} clients (mixed k_n), H={args.steps}, batch {bs} each, "
              f"{args.eval_reps} interleaved reps (median)")
        print(f"    C=1 (sequential PEFT) {np.median(t['C=1']):.2f} s (" + ", ".join(f"{x:.2f}" for x in t["C=1"]) + ")")
        for key in list(fns)[1:]:
            rc = np.median(t["C=1"]) / np.median(t[key])
            worst = max(float(np.abs(a - flat(b)).max() / np.abs(a).max())
                        for a, b in zip(map(flat, fns["C=1"].ups), fns[key].ups, strict=True))
            results[f"c {key}"] = rc
            print(f"    {key} ({'forked' if key.startswith('workers') else 'fused'}) {np.median(t[key]):.2f} s (" + ", ".join(f"{x:.2f}" for x in t[key]) + f") "
                  f"-> ratio {rc:.2f}x; max relative upload difference {worst:.1e}")

    if "d" not in skip:
        from torch.utils.flop_counter import FlopCounterMode

        from fedsketch.engine.scoring import grouped_response_loss, pack
        from fedsketch.engine.stacked import StackedLoRA

        C = min(args.fused_clients, len(eng.client_data))
        fused = collate([eng.client_data[n][i] for n in range(C) for i in range(bs)], eng.tok.pad_token_id)
        fused = {k: v.to(dev) for k, v in fused.items()}

        def fused_step():  # one local step of train.client_batch = C (engine.train_clients), scored loss
            stack = StackedLoRA(eng.modules, [state] * C, [float(eng.scaling)] * C, 1)
            eng.model.train()
            with eng.model.disable_adapter(), stack:
                grouped_response_loss(eng.model, fused, C).sum().backward()
            sync()
            eng.model.eval()

        print(f"\n(d) achieved FLOP/s of a training step (scored loss) / fp32 GEMM peak ({args.gemm_n}^3 matmul, "
              f"best of {args.gemm_reps}), the peak re-measured right before each timed step (load varies)")
        print("    " + flop_model_text(eng))
        cases = ((f"PEFT step, batch {bs} (the default local step)", step("scored", train_batch), train_batch, 1),
                 (f"fused step, client_batch={C} ({C} x {bs} sequences, one row per client)", fused_step, fused, C))
        for label, fn, batch, groups in cases:
            with FlopCounterMode(display=False) as fc:
                fn()
            flops = fc.get_total_flops()
            if groups == 1:
                step_flop_count = flops
            rows = next(g for g in range(1, batch["input_ids"].shape[0] + 1) if batch["input_ids"].shape[0] % g == 0
                        and batch["input_ids"].shape[0] // g <= 8) if groups == 1 else groups
            analytic = analytic_flops(eng, batch, rows)
            shares, peaks, times = [], [], []
            for _ in range(args.reps):
                peaks.append(gemm_peak(args.gemm_n, args.gemm_reps, dev))
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
                shares.append(flops / times[-1] / peaks[-1])
            results[f"d {'fused step' if groups > 1 else 'step'}"] = float(np.median(shares))
            ids = pack(batch, rows)[0]
            real = int(batch["attention_mask"].sum()) - batch["input_ids"].shape[0]  # each sequence but its last token
            print(f"\n    {label}: packed rows {tuple(ids.shape)}, {real} of {ids.numel()} positions real "
                  f"({100 * (1 - real / ids.numel()):.0f} % padding, counted as computed); {flops / 1e9:.1f} GFLOP (torch flop counter), "
                  f"{analytic['total'] / 1e9:.1f} GFLOP (formula: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in analytic.items()
                                                                  if k != "total") + ")")
            print("      per rep: step " + ", ".join(f"{t:.2f} s" for t in times) + "; GEMM peak "
                  + ", ".join(f"{p / 1e9:.1f}" for p in peaks) + " GFLOP/s; share "
                  + ", ".join(f"{100 * x:.0f} %" for x in shares) + f" -> median {100 * np.median(shares):.0f} %")
            if args.profile:
                profile_step(fn, dev, args.gemm_n, args.gemm_reps, float(np.median(peaks)))
        eng.settings = settings
        # the batch-4 step as train.workers runs it: W forked processes of one thread, each running
        # the step back to back, all started together; FLOPs = W x steps x the step's count above
        for W in sorted({resolve_workers(w, len(jobs), torch.get_num_threads()) for w in worker_counts} - {1}):
            shares, walls = [], []
            for _ in range(args.reps):
                peak = gemm_peak(args.gemm_n, args.gemm_reps, dev)
                t = concurrent_steps(step("scored", train_batch), W, args.steps)
                walls.append(t)
                shares.append(W * args.steps * step_flop_count / t / peak)
            results[f"d {W} concurrent steps"] = float(np.median(shares))
            print(f"\n    {W} forked workers (one thread each), each running the batch-{bs} step {args.steps} times back to back: "
                  "wall " + ", ".join(f"{t:.2f} s" for t in walls) + " (" + ", ".join(f"{W * args.steps / t:.2f}" for t in walls)
                  + " steps/s); share " + ", ".join(f"{100 * x:.0f} %" for x in shares) + f" -> median {100 * np.median(shares):.0f} %")
        if "r" not in skip:
            # a whole round of (c)'s clients (H steps each, data, optimizer, state swaps, forks included):
            # FLOPs counted on the sequential round, time measured without the counter
            with FlopCounterMode(display=False) as fc:
                for n, idx, s in jobs:
                    eng.train_client(state, n, 1, idx, scale=s)
            round_flops = fc.get_total_flops()

            def seq_round():
                for n, idx, s in jobs:
                    eng.train_client(state, n, 1, idx, scale=s)

            rounds = {"one process (train.workers=1)": seq_round} | {wname(W): forked_round(W) for W in worker_counts}
            print(f"\n    a round of {len(jobs)} clients x H={args.steps} local steps of batch {bs} (what (c) times): "
                  f"{round_flops / 1e9:.1f} GFLOP (torch flop counter); each timed right after a peak measurement")
            for fn in rounds.values():
                fn()  # warm-up
            shares = {k: [] for k in rounds}
            peaks = {k: [] for k in rounds}
            times = {k: [] for k in rounds}
            for _ in range(args.eval_reps):  # interleaved, each right after a peak measurement
                for label, fn in rounds.items():
                    peaks[label].append(gemm_peak(args.gemm_n, args.gemm_reps, dev))
                    t0 = time.perf_counter()
                    fn()
                    times[label].append(time.perf_counter() - t0)
                    shares[label].append(round_flops / times[label][-1] / peaks[label][-1])
            for label in rounds:
                results[f"d round, {label}"] = float(np.median(shares[label]))
                print(f"      {label}: " + ", ".join(f"{t:.2f} s" for t in times[label]) + "; GEMM peak "
                      + ", ".join(f"{p / 1e9:.1f}" for p in peaks[label]) + " GFLOP/s; share "
                      + ", ".join(f"{100 * x:.0f} %" for x in shares[label]) + f" -> median {100 * np.median(shares[label]):.0f} %")
    print(f"\nload {os.getloadavg()[0]:.2f} at end")
    summary = ", ".join(f"({k}) {v:.2f}x" if not k.startswith("d ") else f"({k}) {100 * v:.0f} %"
                        for k, v in results.items())
    print("summary:", summary)


if __name__ == "__main__":
    main()
