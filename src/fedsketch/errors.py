"""Exit codes and the errors a user can cause (pure Python: imports neither torch nor numpy).

Every command ends with one of

====  =====================================================================
0     success
1     a run or solve that failed: every sampled client failed, an abort
      (``fl.min_completion``), an infeasible plan, an unexpected error
2     bad input: config, data files, model name or folder, profile CSV,
      theta or pilots file, metrics.jsonl, checkpoint mismatch or corruption,
      output folder, suite file
130   interrupted (Ctrl-C); the checkpoint on disk is intact
====  =====================================================================

and prints one short plain-text message for codes 1 and 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

from fedsketch.io import WriteError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class InputError(ValueError):
    """Bad input found outside the config parser (a file, a folder); the message says which and why."""


class ModelError(RuntimeError):
    """The model or tokenizer could not be loaded; the message says which and why."""


class RunFailed(RuntimeError):
    """A run that could not go on (e.g. ``fl.min_completion`` consecutive rounds of only failures)."""


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from fedsketch.checkpoint import CheckpointError
    from fedsketch.config import ConfigError
    from fedsketch.config.readers import ReadError
    from fedsketch.data.datasets import DataError
    from fedsketch.data.partition import PartitionError
    from fedsketch.network.profiles import ProfileError

    types: list[type[BaseException]] = [
        InputError,
        ReadError,
        ModelError,
        ConfigError,
        DataError,
        PartitionError,
        ProfileError,
        CheckpointError,
    ]
    try:
        from fedsketch.planner.estimate import EstimationError

        types.append(EstimationError)
    except ImportError:  # pragma: no cover - planner absent from a checkout
        pass
    return tuple(types)


def classify(exc: BaseException) -> tuple[int, str]:
    """(exit code, one plain-text message) for an exception a command let through."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    msg = str(exc).strip() or type(exc).__name__
    if isinstance(exc, _bad_input_types()):
        return EXIT_BAD_INPUT, msg
    if isinstance(exc, RunFailed):
        return EXIT_FAILED, f"run failed: {msg}"
    if isinstance(exc, WriteError):
        if exc.bad_location:
            return EXIT_BAD_INPUT, f"{msg}; choose another output location"
        return EXIT_FAILED, f"{msg}; any earlier version of that file is intact"
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        return EXIT_FAILED, f"error: {msg}"
    return EXIT_FAILED, (
        f"error: {type(exc).__name__}: {msg}\n"
        "(an unexpected error; run the command again with --debug for the traceback)"
    )
