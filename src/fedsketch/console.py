"""A quiet console: third-party output of a run goes to ``run.log`` in its run folder.

Inside :func:`third_party_to_log`, everything written to standard error (progress bars of
transformers / huggingface_hub / tqdm, Python warnings, library logging, C-level writes to
file descriptor 2) is appended to the log file, so the console shows only fedsketch's own
lines, which the CLI prints to standard output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def third_party_to_log(log_path: str | Path) -> Iterator[Path]:
    """Send stderr, warnings and logging to ``log_path`` (appended) for the duration of the block."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    saved_fd = None
    try:
        sys.stderr.flush()
        saved_fd = os.dup(2)
        os.dup2(fh.fileno(), 2)  # C-level writes (torch, tokenizers) too
    except (OSError, ValueError, AttributeError):
        saved_fd = None
    saved_stderr = sys.stderr
    sys.stderr = fh
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    handler = logging.StreamHandler(fh)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    # libraries with their own stderr handler (transformers) log through it; route them to the file too
    redirected = []
    for name in ("transformers", "huggingface_hub", "peft", "datasets", "flwr", "torch"):
        lg = logging.getLogger(name)
        redirected.append((lg, lg.handlers[:], lg.propagate))
        lg.handlers = [handler]
        lg.propagate = False
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield log_path
    finally:
        logging.captureWarnings(False)
        for lg, handlers, propagate in redirected:
            lg.handlers, lg.propagate = handlers, propagate
        root.handlers = saved_handlers
        root.setLevel(saved_level)
        sys.stderr = saved_stderr
        with contextlib.suppress(OSError, ValueError):
            fh.flush()
        if saved_fd is not None:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
        fh.close()
