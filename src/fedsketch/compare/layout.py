"""Where a suite's runs live in its output folder: ``runs/<strategy>-seed<k>/``.

The one place that names a run folder of a suite (:func:`run_name`, used for ``output.name`` of
every strategy x seed) and reads the name back (:func:`parse_run_name`, used by the HTML report
and the scripts that walk a suite folder).
"""

from __future__ import annotations

import re
from pathlib import Path

RUNS_DIR = "runs"
"""The folder of a suite's output that holds one folder per run."""

_RUN_NAME = re.compile(r"^(?P<strategy>.+)-seed(?P<seed>\d+)$")


def run_name(strategy: str, seed: int) -> str:
    """The folder name of ``strategy``'s run at ``seed``."""
    return f"{strategy}-seed{seed}"


def parse_run_name(name: str) -> tuple[str, int] | None:
    """``(strategy, seed)`` of a run folder name, None if it is not one."""
    m = _RUN_NAME.match(name)
    return (m["strategy"], int(m["seed"])) if m else None


def runs_dir(output: Path) -> Path:
    """The folder of a suite output folder that holds its runs."""
    return Path(output) / RUNS_DIR
