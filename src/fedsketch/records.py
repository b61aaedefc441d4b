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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypedDict

from fedsketch.config.readers import ReadError, check_type, read_json_lines, short, warn_stderr, where
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


#: what each field of a record on disk must be (``"?"``: or null); a record is checked against it on reading
_KINDS: dict[str, str] = {
    "round": "int",
    "sim_seconds": "number",
    "real_seconds": "number",
    "round_sim_seconds": "number?",
    "sampled": "ints",
    "failed": "failures",
    "uploaded_bytes": "int",
    "client_bytes": "ints?",
    "bandwidth_mbps": "numbers?",
    "train_loss": "number?",
    "client_compute_seconds": "number?",
    "download_mbit": "number?",
    "accuracy": "number?",
    "test_loss": "number?",
    "pred_max_share": "number?",
    "num_eval": "int?",
    "stop": "str?",
}
_KIND_WORDS = {
    "int": "an integer",
    "number": "a number",
    "str": "a string",
    "ints": "a list of integers",
    "numbers": "a list of numbers",
    "failures": "a list of {client, reason} objects",
}


def _is(value: Any, kind: str) -> bool:
    if kind.endswith("?"):
        return value is None or _is(value, kind[:-1])
    if kind == "ints":
        return isinstance(value, list) and all(check_type(v, "int") for v in value)
    if kind == "numbers":
        return isinstance(value, list) and all(check_type(v, "number") for v in value)
    if kind == "failures":
        return isinstance(value, list) and all(
            isinstance(f, dict) and check_type(f.get("client"), "int") and isinstance(f.get("reason"), str)
            for f in value
        )
    return check_type(value, kind)


def record_problem(d: Any) -> str | None:
    """What is wrong with one record as read from ``metrics.jsonl`` (None when nothing): a JSON object
    with an integer ``round`` >= 0, every known field of its type (:data:`_KINDS`), ``client_bytes``
    and ``bandwidth_mbps`` as long as ``sampled``, client ids >= 0."""
    if not isinstance(d, dict):
        return f"expected a JSON object (one round's record), got {short(d, 40)}"
    if "round" not in d:
        return "no 'round'"
    for key, kind in _KINDS.items():
        if key in d and not _is(d[key], kind):
            words = _KIND_WORDS[kind.rstrip("?")] + (" or null" if kind.endswith("?") else "")
            return f"{key} must be {words}, got {short(d[key], 40)}"
    if d["round"] < 0:
        return f"round must be >= 0, got {d['round']}"
    sampled = d.get("sampled", [])
    if any(c < 0 for c in sampled) or any(f["client"] < 0 for f in d.get("failed", [])):
        return "client ids must be >= 0"
    for key in ("client_bytes", "bandwidth_mbps"):
        if d.get(key) is not None and len(d[key]) != len(sampled):
            return f"{key} has {len(d[key])} entries but sampled has {len(sampled)}; they are aligned"
    return None


def read_metrics_dicts(path: str | Path, *, warn: Callable[[str], None] | None = warn_stderr) -> list[dict[str, Any]]:
    """The JSON objects of a ``metrics.jsonl`` as written, one per record (blank lines skipped).

    Read by :func:`fedsketch.config.readers.read_json_lines`: a cut-off last line (a crash mid-write) is left
    out with a warning (``warn``); any other bad line, or a record of the wrong shape
    (:func:`record_problem`), is a :class:`~fedsketch.config.readers.ReadError` naming the file and line.
    """
    out = []
    for line, d in read_json_lines(path, warn=warn):
        problem = record_problem(d)
        if problem is not None:
            raise ReadError(f"{where(path, line)}: {problem}")
        out.append(d)
    return out


def read_metrics(path: str | Path, *, warn: Callable[[str], None] | None = warn_stderr) -> list[RoundRecord]:
    """The records of a ``metrics.jsonl`` (:func:`read_metrics_dicts`)."""
    return [RoundRecord.from_dict(d) for d in read_metrics_dicts(path, warn=warn)]
