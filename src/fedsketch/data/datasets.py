"""Load the four multiple-choice commonsense tasks as :class:`MCQExample` lists.

Three sources share one output type:

* ``source="embedded"`` (the default) reads the same files shipped gzip-compressed inside the
  package (``fedsketch/data/embedded/<TASK_DIRS[task]>/<split>.json.gz``; licences and
  attribution in ``fedsketch/data/embedded/README.md`` and ``DATA_LICENSE``), so a fresh
  checkout needs no data folder and no internet.
* ``source="local"`` reads ``<data_dir>/<TASK_DIRS[task]>/<split>.json`` in the LLM-Adapters
  JSON format: a list of records ``{"instruction", "input", "output", "answer"}`` whose
  instruction is::

      Please choose the correct answer to the question: <question>

      Answer1: <a> Answer2: <b> ...

      Answer format: answer1/answer2/...

  The instruction is parsed back into the question and its options; the number of options must
  match the ``Answer format`` line and the ``answer``/``output`` fields must name one of them.
* ``source="hub"`` loads the original public datasets with the Hugging Face ``datasets`` library
  (imported lazily; needs internet) and rebuilds the same LLM-Adapters instruction/output text,
  so both sources feed identical prompts.

Every problem raises :class:`DataError` naming the file (or hub dataset), the record index and
the field. This module is pure Python: it never imports torch.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK_DIRS: dict[str, str] = {
    "arc_e": "ARC-Easy",
    "arc_c": "ARC-Challenge",
    "obqa": "openbookqa",
    "siqa": "social_i_qa",
}
"""Task name -> folder of the LLM-Adapters data (``<data_dir>/<folder>/<split>.json``)."""

SPLITS: tuple[str, ...] = ("train", "test")
"""Splits of every task. For Social IQa, ``test`` is the official dev set (as in LLM-Adapters)."""

DEFAULT_DATA_DIR = "../shared/data/commonsense"

SOURCES: tuple[str, ...] = ("embedded", "local", "hub")
"""Where the data comes from: the package's own copy, a local folder, or the Hugging Face hub."""

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
"""The package data: ``<TASK_DIRS[task]>/<split>.json.gz`` plus README.md, DATA_LICENSE, MANIFEST.json."""

HUB_DATASETS: dict[str, tuple[str, str | None]] = {
    "arc_e": ("allenai/ai2_arc", "ARC-Easy"),
    "arc_c": ("allenai/ai2_arc", "ARC-Challenge"),
    "obqa": ("allenai/openbookqa", "main"),
    "siqa": ("allenai/social_i_qa", None),
}
"""Task name -> (hub repo id, config name) of the original public dataset."""

HUB_SPLITS: dict[str, dict[str, str]] = {
    "arc_e": {"train": "train", "test": "test"},
    "arc_c": {"train": "train", "test": "test"},
    "obqa": {"train": "train", "test": "test"},
    # Social IQa's test labels are hidden; LLM-Adapters' test.json is the official dev set.
    "siqa": {"train": "train", "test": "validation"},
}

INSTRUCTION_PREFIX = "Please choose the correct answer to the question: "
OPTIONS_SEP = "\n\n"
FORMAT_MARKER = "\n\nAnswer format: "
OUTPUT_PREFIX = "the correct answer is "
MIN_OPTIONS = 2

_FORMAT_RE = re.compile(r"answer1(?:/answer\d+)*")
_ANSWER_RE = re.compile(r"answer(\d+)")


class DataError(ValueError):
    """A data file, record or hub dataset could not be loaded; the message says where and why."""


@dataclass(frozen=True)
class MCQExample:
    """One multiple-choice question.

    Attributes
    ----------
    question : str
        Question text (for Social IQa: context and question joined by a space).
    options : tuple of str
        Answer options, in the dataset's order.
    label : int
        0-based index of the correct option.
    instruction : str
        The LLM-Adapters instruction text (question and numbered options).
    output : str
        The LLM-Adapters target, ``"the correct answer is answerN"`` with N = label + 1.
    """

    question: str
    options: tuple[str, ...]
    label: int
    instruction: str
    output: str

    def __post_init__(self) -> None:
        if len(self.options) < MIN_OPTIONS:
            raise ValueError(f"MCQExample needs at least {MIN_OPTIONS} options, got {len(self.options)}")
        if not 0 <= self.label < len(self.options):
            raise ValueError(f"MCQExample label {self.label} is out of range for {len(self.options)} options")


# --------------------------------------------------------------------------- LLM-Adapters text


def build_instruction(question: str, options: Sequence[str]) -> str:
    """Render the LLM-Adapters instruction for a question and its options.

    Parameters
    ----------
    question : str
        Question text.
    options : sequence of str
        Answer options in order.

    Returns
    -------
    str
        ``"Please choose the correct answer to the question: {q}\\n\\nAnswer1: {a} Answer2: {b}
        ...\\n\\nAnswer format: answer1/answer2/..."`` (byte-identical to the shipped files).
    """
    opts = " ".join(f"Answer{i + 1}: {o}" for i, o in enumerate(options))
    fmt = "/".join(f"answer{i + 1}" for i in range(len(options)))
    return f"{INSTRUCTION_PREFIX}{question}{OPTIONS_SEP}{opts}{FORMAT_MARKER}{fmt}"


def build_output(label: int) -> str:
    """The LLM-Adapters target for a 0-based label: ``"the correct answer is answer{label+1}"``."""
    return f"{OUTPUT_PREFIX}answer{label + 1}"


def parse_instruction(instruction: str) -> tuple[str, tuple[str, ...]]:
    """Split an LLM-Adapters instruction into (question, options).

    The text is parsed from both ends, so a question that itself contains blank lines (a few
    Social IQa records do) is kept whole: the ``Answer format`` line gives the number of options
    n, the *last* ``"\\n\\nAnswer1: "`` starts the options, and the markers ``" Answer2: "`` ...
    ``" AnswerN: "`` are found in order after it.

    Parameters
    ----------
    instruction : str
        The record's ``instruction`` field.

    Returns
    -------
    question : str
    options : tuple of str

    Raises
    ------
    ValueError
        With a short reason when the text does not follow the template.
    """
    if not instruction.startswith(INSTRUCTION_PREFIX):
        raise ValueError(f"does not start with {INSTRUCTION_PREFIX!r}")
    body, sep, fmt = instruction[len(INSTRUCTION_PREFIX) :].rpartition(FORMAT_MARKER)
    if not sep:
        raise ValueError(f"has no {FORMAT_MARKER.strip()!r} line")
    fmt = fmt.strip()
    if not _FORMAT_RE.fullmatch(fmt):
        raise ValueError(f"'Answer format' line {fmt!r} is not 'answer1/answer2/...'")
    numbers = [int(m) for m in _ANSWER_RE.findall(fmt)]
    n = len(numbers)
    if numbers != list(range(1, n + 1)):
        raise ValueError(f"'Answer format' line {fmt!r} does not number the answers 1..{n}")
    if n < MIN_OPTIONS:
        raise ValueError(f"'Answer format' line {fmt!r} lists fewer than {MIN_OPTIONS} answers")
    first = OPTIONS_SEP + "Answer1: "
    start = body.rfind(first)
    if start < 0:
        raise ValueError(f"has no {first.strip()!r} block after the question")
    question = body[:start]
    block = body[start + len(first) :]
    options: list[str] = []
    pos = 0
    for i in range(2, n + 1):
        marker = f" Answer{i}: "
        nxt = block.find(marker, pos)
        if nxt < 0:
            raise ValueError(f"'Answer format' lists {n} answers but {marker.strip()!r} is missing")
        options.append(block[pos:nxt])
        pos = nxt + len(marker)
    options.append(block[pos:])
    if re.search(rf" Answer{n + 1}: ", options[-1]):
        raise ValueError(f"has more options than the {n} the 'Answer format' line lists")
    if not question.strip():
        raise ValueError("has an empty question")
    for i, o in enumerate(options):
        if not o.strip():
            raise ValueError(f"Answer{i + 1} is empty")
    return question, tuple(options)


def _parse_answer(value: str, n_options: int) -> int:
    m = _ANSWER_RE.fullmatch(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not 'answerN'")
    k = int(m.group(1))
    if not 1 <= k <= n_options:
        raise ValueError(f"{value!r} is out of range for {n_options} options (answer1..answer{n_options})")
    return k - 1


def parse_record(record: Any, where: str) -> MCQExample:
    """Parse one LLM-Adapters record; ``where`` (e.g. ``"file.json: record 3"``) prefixes errors.

    Raises
    ------
    DataError
        Naming ``where`` and the offending field.
    """
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    fields: dict[str, str] = {}
    for name in ("instruction", "output", "answer"):
        if name not in record:
            raise DataError(f"{where}: missing field {name!r}")
        if not isinstance(record[name], str):
            raise DataError(f"{where}: field {name!r} must be a string, got {type(record[name]).__name__}")
        fields[name] = record[name]
    try:
        question, options = parse_instruction(fields["instruction"])
    except ValueError as e:
        raise DataError(f"{where}: field 'instruction' {e}") from None
    try:
        label = _parse_answer(fields["answer"], len(options))
    except ValueError as e:
        raise DataError(f"{where}: field 'answer' {e}") from None
    out = fields["output"]
    if not out.strip().endswith(f"answer{label + 1}"):
        raise DataError(f"{where}: field 'output' {out!r} disagrees with field 'answer' {fields['answer']!r}")
    return MCQExample(question=question, options=options, label=label, instruction=fields["instruction"], output=out)


# --------------------------------------------------------------------------- local


def _check_task_split(task: str, split: str) -> None:
    if task not in TASK_DIRS:
        raise DataError(f"unknown task {task!r}; allowed tasks: {', '.join(TASK_DIRS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed splits: {', '.join(SPLITS)}")


def task_file(task: str, split: str, data_dir: str | Path) -> Path:
    """Path of a task's split in an LLM-Adapters folder: ``<data_dir>/<TASK_DIRS[task]>/<split>.json``."""
    _check_task_split(task, split)
    return Path(data_dir) / TASK_DIRS[task] / f"{split}.json"


def _parse_records(text: str, where: Path | str) -> list[MCQExample]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(records, list):
        raise DataError(f"{where}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise DataError(f"{where}: contains no records")
    return [parse_record(r, f"{where}: record {i}") for i, r in enumerate(records)]


def embedded_file(task: str, split: str) -> Path:
    """Path of a task's split in the package data: ``EMBEDDED_DIR/<TASK_DIRS[task]>/<split>.json.gz``."""
    _check_task_split(task, split)
    return EMBEDDED_DIR / TASK_DIRS[task] / f"{split}.json.gz"


def load_embedded(task: str, split: str) -> list[MCQExample]:
    """Load a task's split from the data shipped in the package; see :func:`load_task`."""
    path = embedded_file(task, split)
    if not path.is_file():
        raise DataError(
            f"{path}: the embedded data file is missing from this installation (task {task!r}, "
            f'split {split!r}); reinstall fedsketch, or set data.source = "local" and '
            "data.data_dir to a folder with the LLM-Adapters JSON files"
        )
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the embedded data file: {e}; reinstall fedsketch") from None
    return _parse_records(text, path)


def load_local(task: str, split: str, data_dir: str | Path) -> list[MCQExample]:
    """Load ``<data_dir>/<TASK_DIRS[task]>/<split>.json``; see :func:`load_task`."""
    path = task_file(task, split, data_dir)
    if not Path(data_dir).is_dir():
        raise DataError(
            f"{data_dir}: data folder not found (task {task!r} expects {path}); "
            "set data.data_dir to the folder holding the LLM-Adapters JSON files"
        )
    if not path.is_file():
        raise DataError(f"{path}: file not found (task {task!r}, split {split!r})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read file: {e}") from None
    return _parse_records(text, path)


# --------------------------------------------------------------------------- hub


def _from_choices(row: Mapping[str, Any], question: str, where: str) -> MCQExample:
    """ARC / OpenBookQA rows: ``choices = {"text": [...], "label": [...]}`` and ``answerKey``."""
    choices = row.get("choices")
    if not isinstance(choices, Mapping) or "text" not in choices or "label" not in choices:
        raise DataError(f"{where}: field 'choices' must hold 'text' and 'label' lists")
    texts, keys = list(choices["text"]), [str(k) for k in choices["label"]]
    key = str(row.get("answerKey", "")).strip()
    if key not in keys:
        raise DataError(f"{where}: field 'answerKey' {key!r} is not one of the choice labels {keys}")
    label = keys.index(key)
    return MCQExample(
        question=question,
        options=tuple(texts),
        label=label,
        instruction=build_instruction(question, texts),
        output=build_output(label),
    )


def hub_row_to_example(row: Mapping[str, Any], where: str) -> MCQExample:
    """Map one row of a hub dataset to :class:`MCQExample`, recognising it by its columns.

    Supported layouts: ARC (``question``, ``choices``, ``answerKey``), OpenBookQA
    (``question_stem``, ``choices``, ``answerKey``), Social IQa (``context``, ``question``,
    ``answerA..C``, ``label`` "1".."3") and LLM-Adapters records (``instruction``, ``answer``).
    """
    try:
        if "instruction" in row and "answer" in row:
            return parse_record(row, where)
        if "question_stem" in row:
            return _from_choices(row, str(row["question_stem"]), where)
        if "choices" in row and "question" in row:
            return _from_choices(row, str(row["question"]), where)
        if "context" in row and "answerA" in row:
            texts = [str(row[f"answer{c}"]) for c in "ABC"]
            question = f"{row['context']} {row['question']}"
            raw = str(row.get("label", "")).strip()
            if raw not in {str(i + 1) for i in range(len(texts))}:
                raise DataError(f"{where}: field 'label' {raw!r} is not one of 1..{len(texts)}")
            label = int(raw) - 1
            return MCQExample(
                question=question,
                options=tuple(texts),
                label=label,
                instruction=build_instruction(question, texts),
                output=build_output(label),
            )
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{where}: malformed row: {type(e).__name__}: {e}") from None
    raise DataError(
        f"{where}: unrecognised columns {sorted(row)}; expected an ARC, OpenBookQA, Social IQa or LLM-Adapters layout"
    )


def _hub_id(task: str, hub_dataset: str) -> tuple[str, str | None]:
    if not hub_dataset:
        return HUB_DATASETS[task]
    repo, _, config = hub_dataset.partition(":")
    return repo, (config or None)


def load_hub(task: str, split: str, hub_dataset: str = "") -> list[MCQExample]:
    """Load a task from the Hugging Face hub; see :func:`load_task`."""
    _check_task_split(task, split)
    repo, config = _hub_id(task, hub_dataset)
    hub_split = HUB_SPLITS[task][split]
    name = repo + (f" (config {config!r})" if config else "")
    fallback = (
        'without internet, use the data shipped with fedsketch (data.source = "embedded"), or set '
        'data.source = "local" and data.data_dir to a folder with the LLM-Adapters JSON files'
    )
    try:
        import datasets as hf_datasets  # lazy: optional dependency, needs internet
    except ImportError as e:
        raise DataError(
            f"task {task!r}: source='hub' loads {name} with the Hugging Face 'datasets' "
            f"package, which is not installed ({e}); `pip install datasets`, or {fallback}"
        ) from None
    try:
        ds = hf_datasets.load_dataset(repo, config, split=hub_split)
    except Exception as e:  # noqa: BLE001 - network, auth and format errors all surface here
        raise DataError(
            f"task {task!r}: could not load hub dataset {name}, split {hub_split!r}: "
            f"{type(e).__name__}: {e}; {fallback} (or point data.hub_dataset to "
            "another 'repo[:config]')"
        ) from e
    where = f"hub dataset {name}, split {hub_split!r}"
    out = [hub_row_to_example(row, f"{where}: row {i}") for i, row in enumerate(ds)]
    if not out:
        raise DataError(f"{where}: contains no rows")
    return out


# --------------------------------------------------------------------------- entry point


def load_task(
    task: str, split: str, *, source: str = "embedded", data_dir: str | Path = DEFAULT_DATA_DIR, hub_dataset: str = ""
) -> list[MCQExample]:
    """Load one split of one task.

    Parameters
    ----------
    task : {"arc_e", "arc_c", "obqa", "siqa"}
        Task name (keys of :data:`TASK_DIRS`).
    split : {"train", "test"}
        Split. For Social IQa, ``"test"`` is the official dev set (LLM-Adapters convention).
    source : {"embedded", "local", "hub"}
        ``"embedded"``: the copy shipped in the package (offline, the default).
        ``"local"``: read ``<data_dir>/<TASK_DIRS[task]>/<split>.json`` (LLM-Adapters format).
        ``"hub"``: download the original dataset with the ``datasets`` library (needs internet).
    data_dir : str or Path
        Folder of the LLM-Adapters JSON files (``source="local"``).
    hub_dataset : str
        ``"repo"`` or ``"repo:config"`` overriding :data:`HUB_DATASETS` (``source="hub"``).

    Returns
    -------
    list of MCQExample
        In file (or hub) order.

    Raises
    ------
    DataError
        Unknown task/split/source, missing folder or file, invalid JSON, a malformed record
        (the message names the file, the record index and the field), or a hub failure (the
        message names the dataset id and suggests ``data.source = "local"``).
    """
    _check_task_split(task, split)
    if source == "embedded":
        return load_embedded(task, split)
    if source == "local":
        return load_local(task, split, data_dir)
    if source == "hub":
        return load_hub(task, split, hub_dataset)
    raise DataError(f"unknown data source {source!r}; allowed: {', '.join(map(repr, SOURCES))}")
