"""The one definition of a diverged run, shared by the run's stop rule and ``fedsketch compare``.

DEFINITION. An evaluation has *diverged* when its test loss is not at most ``factor`` times the
lowest test loss of the run's earlier evaluations (round 0 included); a NaN test loss always
counts as diverged. ``factor`` is ``fl.stop_divergence`` (default :data:`DIVERGENCE_FACTOR` = 2).

Why against the best loss so far rather than against round 0: a run that first learns and then
blows up (test loss 6.0 at round 0, 3.3 after training, then 11.7) is diverged although it
never reaches twice its untrained loss. Why 2 and not a smaller factor: evaluation noise on a
few hundred questions moves the loss by far less than 2x, so a run is only stopped for a real
blow-up. The run stops at the first diverged evaluation (``stop = "stop_divergence"``);
the stability report of ``fedsketch compare`` dates a run's divergence to that same evaluation.

The rule misses a run that collapses at once: test loss 6.0 at round 0, then 10.5, 11.1, 8.3
(results/n50/table1, FSLoRA seed 2) never exceeds twice its best (12.0), and the run trains to its
budget at a guess's accuracy. The report therefore also dates :func:`worse_than_start`, the first
evaluation whose test loss is above the untrained model's (round 0). That is a report column only;
it does not stop a run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from fedsketch.config import DIVERGENCE_FACTOR  # default of fl.stop_divergence, defined with the config
from fedsketch.records import RoundRecord


def best_loss(records: Iterable[RoundRecord]) -> float:
    """Lowest finite test loss among ``records`` (``inf`` when none was evaluated)."""
    losses = [r.test_loss for r in records if r.test_loss is not None and math.isfinite(r.test_loss)]
    return min(losses, default=math.inf)


def is_diverged(test_loss: float, earlier: Iterable[RoundRecord], factor: float = DIVERGENCE_FACTOR) -> bool:
    """Whether an evaluation with ``test_loss`` after the ``earlier`` records has diverged (see the
    module docstring); ``factor <= 0`` switches the rule off."""
    if factor <= 0:
        return False
    return not test_loss <= factor * best_loss(earlier)  # NaN compares False: diverged


def divergence_onset(records: Sequence[RoundRecord], factor: float = DIVERGENCE_FACTOR) -> float | None:
    """Simulated seconds of the first diverged evaluation after round 0 (None if none)."""
    for i, r in enumerate(records):
        if i > 0 and r.test_loss is not None and is_diverged(r.test_loss, records[:i], factor):
            return float(r.sim_seconds)
    return None


def worse_than_start(records: Sequence[RoundRecord]) -> float | None:
    """Simulated seconds of the first evaluation after round 0 whose test loss is above round 0's
    (the untrained model's) or NaN; None if none, or if round 0 has no test loss."""
    start = records[0].test_loss if records else None
    if start is None:
        return None
    for r in records[1:]:
        x = r.test_loss
        if x is not None and not x <= start:  # NaN compares False
            return float(r.sim_seconds)
    return None
