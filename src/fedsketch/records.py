"""The round record of a run and its file, ``metrics.jsonl``: the one writer and reader.

A run writes one :class:`RoundRecord` per round (round 0 is the evaluation of the starting
point) to ``metrics.jsonl``, one JSON object a line with sorted keys, rewritten atomically after
every round. On disk a field that does not apply to a record is absent rather than null: the
per-round accounting (``round_sim_seconds``, ``client_bytes``, ``bandwidth_mbps``,
``client_compute_seconds``) from round 1 on, ``download_mbit`` only where a method downloads
extra bits, the evaluation fields only in evaluated rounds, ``stop`` only in the last record of a
finished run. ``train_loss`` is written as null in a round without a successful upload. Keys this
module does not know (a pilot probe's ``probe_loss``, say) are kept in :attr:`RoundRecord.extra`
and written back as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypedDict

from fedsketch.io import atomic_write_text

METRICS_FILE = "metrics.jsonl"
"""The records' file in a run folder."""

WALL_CLOCK_FIELDS = ("real_seconds", "client_compute_seconds")
"""Fields that measure real (wall-clock) time: they differ between two runs of the same experiment."""


class Failure(TypedDict):
    """A sampled client whose upload was not aggregated, and why."""

    client: int
    reason: str


@dataclass
class RoundRecord:
    """What one round of a run did and measured (see the module docstring for what is on disk)."""

    round: int
    sim_seconds: float = 0.0  # simulated clock after the round
    real_seconds: float = 0.0  # wall clock of the run after the round
    round_sim_seconds: float | None = None  # T of eq. 10 for this round
    sampled: list[int] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    uploaded_bytes: int = 0
    client_bytes: list[int] | None = None  # aligned with sampled: each client's upload (0 if it failed)
    bandwidth_mbps: list[float] | None = None  # aligned with sampled: b_n of eq. 10
    train_loss: float | None = None  # mean local training loss of the aggregated uploads
    client_compute_seconds: float | None = None  # wall clock the clients spent training, summed
    download_mbit: float | None = None  # a method's extra download (FLoRA's stacked module), summed
    # evaluation (``engine.evaluate(state).as_dict()``), in evaluated rounds only
    accuracy: float | None = None
    test_loss: float | None = None  # mean per-token NLL of the correct answer
    pred_max_share: float | None = None  # share of the most frequent predicted option
    num_eval: int | None = None  # questions evaluated
    stop: str | None = None  # the stop rule that ended the run after this round
    extra: dict[str, Any] = field(default_factory=dict)  # other keys, e.g. a pilot probe's probe_loss

    @property
    def evaluated(self) -> bool:
        return self.accuracy is not None

    @property
    def all_failed(self) -> bool:
        """Clients were sampled and every one of them failed."""
        return bool(self.sampled) and len(self.failed) == len(self.sampled)

    @property
    def common_failure(self) -> str | None:
        """The one reason every sampled client failed with, when two or more were sampled (one client's
        failure may be its own), whitespace collapsed to one line; None when some client succeeded or the
        reasons differ."""
        reasons = {" ".join(f["reason"].split()) for f in self.failed}
        return reasons.pop() if self.all_failed and len(self.failed) > 1 and len(reasons) == 1 else None

    def update(self, values: Mapping[str, Any]) -> None:
        """Set the fields named in ``values`` (an evaluation, a probe's result); other keys go to :attr:`extra`."""
        for key, value in values.items():
            if key in _FIELDS:
                setattr(self, key, value)
            else:
                self.extra[key] = value

    def to_dict(self) -> dict[str, Any]:
        """The record as its JSON object: fields in declaration order, the optional ones only when set,
        then :attr:`extra`."""
        out = {
            name: getattr(self, name) for name in _FIELDS if name in _ALWAYS_WRITTEN or getattr(self, name) is not None
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoundRecord:
        """The inverse of :meth:`to_dict`: unknown keys go to :attr:`extra`."""
        return cls(
            **{k: v for k, v in d.items() if k in _FIELDS}, extra={k: v for k, v in d.items() if k not in _FIELDS}
        )


_FIELDS = tuple(f.name for f in fields(RoundRecord) if f.name != "extra")
_ALWAYS_WRITTEN = frozenset(
    {"round", "sim_seconds", "real_seconds", "sampled", "failed", "uploaded_bytes", "train_loss"}
)


def evaluations(records: Iterable[RoundRecord]) -> list[RoundRecord]:
    """The evaluated records."""
    return [r for r in records if r.evaluated]


def run_finished(records: Sequence[RoundRecord], rounds: int) -> bool:
    """Whether a run with these records is over: a stop rule fired, or round ``rounds`` (``fl.rounds``) is done."""
    return bool(records) and (bool(records[-1].stop) or records[-1].round == rounds)


def write_metrics(path: str | Path, records: Iterable[RoundRecord]) -> None:
    """``metrics.jsonl``: one JSON object per record, keys sorted, rewritten atomically."""
    atomic_write_text(path, "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in records))


def read_metrics_dicts(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``metrics.jsonl`` as written, one per record (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_metrics(path: str | Path) -> list[RoundRecord]:
    """The records of a ``metrics.jsonl``."""
    return [RoundRecord.from_dict(d) for d in read_metrics_dicts(path)]
