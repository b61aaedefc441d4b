"""A round's clients trained side by side in forked worker processes (``train.workers``).

On a CPU, one local step of a small mini-batch (batch 4, ~80 packed tokens) runs its matrix
products with M ~ 80 rows, which split poorly over threads: on the 2-core machine of
``bench/results/engine_speed.md`` a step takes 0.59 s on one thread and 0.38 s on two (1.55x
from twice the cores). Training whole clients in parallel instead, one process per core at one
thread each, keeps every core busy with no synchronisation between them. This is what Flower's
simulation engine does with its client actors, here without leaving the process tree.

How: the engine (frozen base, tokenised client data) is loaded once; for each round the parent
forks ``W`` workers (copy-on-write: the base weights are shared, not copied), each worker runs
``TorchEngine.train_client`` on its share of the sampled clients at **one** torch thread, and
returns the uploads. One thread is not only the efficient choice: GNU OpenMP's thread pool does
not survive ``fork``, and a forked worker that starts a parallel region of two threads after the
parent used its pool hangs (seen here with the tiny model). A round that resolves to one worker
(one client, or ``train.threads = 1`` with ``workers = 0``) trains in the parent at all its threads.

A client's update depends only on (state, client, round, sketch, scale) and its named random
streams, so it is the same in any worker: the uploads equal those of one process at one thread,
bit for bit (``tests/engine/test_workers.py``). The thread count changes the fp32 reduction
order, so against a run at another thread count they agree to rounding (~1e-5 relative).

Forking needs the ``fork`` start method (Linux, macOS) and a CPU engine (a CUDA context does not
survive ``fork``): ``workers = 0`` (auto) trains in process where it cannot fork, and an explicit
``workers > 1`` there is refused with a message (``config.py``, or the engine for ``device = "auto"``).
Nor does a CPU engine fork from a process that holds a CUDA context (something else in the process
used CUDA, :func:`cuda_initialized`): a forked child fails at its first CUDA call ("Cannot
re-initialize CUDA in forked subprocess"), so the round's clients train in this process instead (a
warning in the log). The CPU engine itself never initialises CUDA (``engine.model.scoped_seed``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from fedsketch.sketch import ClientJob, ClientUpdate, LoraState

Job = ClientJob | tuple  # (client, module -> kept indices, scale or None = r/k[, lr or None = train.lr])

_ROUND: tuple[Any, LoraState, int] | None = None
"""(engine, state, round) of the round being trained: set by the parent right
before it forks, read by the workers (they inherit it; nothing is pickled but the jobs)."""


def fork_usable(device_type: str) -> bool:
    """Whether workers can be forked here: a CPU engine on a platform with the ``fork`` start method."""
    return device_type == "cpu" and "fork" in multiprocessing.get_all_start_methods()


def cuda_initialized() -> bool:
    """Whether this process holds a CUDA context, which a forked child cannot use: the one test of it."""
    import torch

    return torch.cuda.is_initialized()


def resolve_workers(workers: int, jobs: int, threads: int) -> int:
    """Processes for a round of ``jobs`` clients: ``workers`` (0 = one per torch thread of the
    engine, i.e. per core unless ``train.threads`` says otherwise), never more than the jobs."""
    return max(1, min(jobs, workers or threads))


def _init_worker(parent: int) -> None:
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it stops the workers)
    # the parent stops a worker with SIGTERM: it must die of it, not take the parent's handler (the CLI
    # turns SIGTERM into KeyboardInterrupt, which the pool would catch and send back as a result)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):  # die with the parent (kill -9, OOM killer): no orphan blocks on its pipes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    torch.set_num_threads(1)  # see the module docstring: more threads would hang after fork


def train_or_reason(engine: Any, state: LoraState, rnd: int, job: Job) -> ClientUpdate | str:
    """One client's upload, or its failure as ``"Type: message"`` (the round goes on, as in process)."""
    n, indices, scale, lr = ClientJob(*job)
    try:
        return engine.train_client(state, n, rnd, indices, scale=scale, lr=lr)
    except Exception as e:  # noqa: BLE001 - a failed client is reported, the round goes on
        return f"{type(e).__name__}: {e}"


def _train(job: Job) -> ClientUpdate | str:
    assert _ROUND is not None  # set by train_forked before the pool forks this worker
    return train_or_reason(*_ROUND, job)


def train_forked(
    engine: Any, state: LoraState, rnd: int, jobs: Sequence[Job], workers: int
) -> dict[int, ClientUpdate | str]:
    """Train ``jobs`` in ``workers`` forked processes of one torch thread each.

    Returns client -> upload, or the failure of that client as ``"Type: message"``. A worker
    that dies (killed, out of memory) breaks the pool: every client not returned by then fails,
    with that reason (the round goes on with the others, as for any failed client).
    """
    global _ROUND
    if cuda_initialized():  # callers train in process instead (TorchEngine.train_parallel)
        raise RuntimeError("this process holds a CUDA context: forked workers could not use CUDA")
    _ROUND = (engine, state, rnd)
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    out: dict[int, ClientUpdate | str] = {}
    try:
        futures = {job[0]: pool.submit(_train, ClientJob(*job)) for job in jobs}
        for n, fut in futures.items():
            try:
                out[n] = fut.result()
            except BrokenProcessPool as e:
                out[n] = f"BrokenProcessPool: a worker process died ({e})"
    except BaseException:  # Ctrl-C or an error here: stop the workers now rather than after their clients
        for p in list(getattr(pool, "_processes", {}).values()):
            p.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _ROUND = None
    return out
