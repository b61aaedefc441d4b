"""Running an experiment: build a :class:`Run` from the config once, then advance it round by round.

- :mod:`fedsketch.runner.build`: the config -> a :class:`Run` (the only reader of the whole config);
- :mod:`fedsketch.runner.run`: :class:`Run`, whose :meth:`Run.round` is Algorithm 1's round;
- :mod:`fedsketch.runner.executor`: the ``Engine`` and ``ClientExecutor`` protocols, in-process clients;
- :mod:`fedsketch.runner.pilot`: pilot runs of Algorithm 2 (a Run with a fixed allocation and a probe).
"""

from fedsketch.runner.build import build_run, prepare, run_dir_for, run_experiment
from fedsketch.runner.executor import (
    ClientExecutor,
    Engine,
    InProcessExecutor,
    RoundPlan,
)
from fedsketch.runner.run import Run, RunResult

__all__ = [
    "ClientExecutor",
    "Engine",
    "InProcessExecutor",
    "RoundPlan",
    "Run",
    "RunResult",
    "build_run",
    "prepare",
    "run_dir_for",
    "run_experiment",
]
