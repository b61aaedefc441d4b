"""Loading the LLM-Adapters JSON files (every embedded file) and the error paths."""

from __future__ import annotations

import builtins
import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from fedsketch.data import TASK_DIRS, DataError, MCQExample, build_instruction, load_task, parse_instruction

# (task, split) -> (examples, {options: count}) as listed in the folder's README.
EXPECTED = {
    ("arc_e", "train"): (2251, {3: 6, 5: 4}),
    ("arc_e", "test"): (2376, {3: 7, 5: 4}),
    ("arc_c", "train"): (1119, {3: 1, 5: 1}),
    ("arc_c", "test"): (1172, {3: 4, 5: 3}),
    ("obqa", "train"): (4957, {}),
    ("obqa", "test"): (500, {}),
    ("siqa", "train"): (33410, {}),
    ("siqa", "test"): (1954, {}),
}
MAIN_OPTIONS = {"arc_e": 4, "arc_c": 4, "obqa": 4, "siqa": 3}

GOOD = {
    "instruction": build_instruction("Which is a mammal?", ["a shark", "a whale", "a trout"]),
    "input": "",
    "output": "the correct answer is answer2",
    "answer": "answer2",
}


def write(tmp_path: Path, payload: object, task: str = "arc_e", split: str = "train", raw: str | None = None) -> Path:
    folder = tmp_path / TASK_DIRS[task]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.json"
    path.write_text(raw if raw is not None else json.dumps(payload))
    return path


@pytest.mark.parametrize(("task", "split"), sorted(EXPECTED))
def test_every_embedded_file_parses(task: str, split: str) -> None:
    examples = load_task(task, split, source="embedded")
    count, odd = EXPECTED[(task, split)]
    assert len(examples) == count
    sizes = Counter(len(ex.options) for ex in examples)
    assert sizes == Counter({MAIN_OPTIONS[task]: count - sum(odd.values()), **odd})
    for ex in examples:
        assert isinstance(ex, MCQExample)
        assert 0 <= ex.label < len(ex.options)
        assert ex.output == f"the correct answer is answer{ex.label + 1}"
        # The parse is lossless: re-rendering gives the original instruction byte for byte.
        assert build_instruction(ex.question, ex.options) == ex.instruction
        assert all(o.strip() for o in ex.options) and ex.question.strip()


def test_question_with_blank_lines_is_kept_whole() -> None:
    text = build_instruction("Ctx.\n\nPrompt word count: 5. Why?", ["a", "b", "c"])
    q, opts = parse_instruction(text)
    assert q == "Ctx.\n\nPrompt word count: 5. Why?" and opts == ("a", "b", "c")


def test_missing_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        load_task("arc_e", "train", source="local", data_dir=tmp_path / "nope")
    with pytest.raises(DataError, match=r"ARC-Easy.train\.json: file not found"):
        load_task("arc_e", "train", source="local", data_dir=tmp_path)


def test_bad_json(tmp_path: Path) -> None:
    path = write(tmp_path, None, raw='[{"instruction": ')
    with pytest.raises(DataError, match="not valid JSON") as e:
        load_task("arc_e", "train", source="local", data_dir=tmp_path)
    assert str(path) in str(e.value)


def test_not_a_list_and_not_an_object(tmp_path: Path) -> None:
    write(tmp_path, {"a": 1})
    with pytest.raises(DataError, match="expected a JSON list"):
        load_task("arc_e", "train", source="local", data_dir=tmp_path)
    write(tmp_path, [GOOD, 7])
    with pytest.raises(DataError, match="record 1: expected a JSON object"):
        load_task("arc_e", "train", source="local", data_dir=tmp_path)


@pytest.mark.parametrize("field", ["instruction", "output", "answer"])
def test_missing_field(tmp_path: Path, field: str) -> None:
    rec = {k: v for k, v in GOOD.items() if k != field}
    path = write(tmp_path, [GOOD, GOOD, rec])
    with pytest.raises(DataError) as e:
        load_task("arc_e", "train", source="local", data_dir=tmp_path)
    msg = str(e.value)
    assert str(path) in msg and "record 2" in msg and f"missing field {field!r}" in msg


def test_ill_typed_field(tmp_path: Path) -> None:
    write(tmp_path, [dict(GOOD, answer=2)])
    with pytest.raises(DataError, match="record 0: field 'answer' must be a string"):
        load_task("arc_e", "train", source="local", data_dir=tmp_path)


@pytest.mark.parametrize("answer", ["answer9", "answer0", "B", ""])
def test_bad_answer(tmp_path: Path, answer: str) -> None:
    path = write(tmp_path, [dict(GOOD, answer=answer)])
    with pytest.raises(DataError, match="record 0: field 'answer'") as e:
        load_task("arc_e", "train", source="local", data_dir=tmp_path)
    assert str(path) in str(e.value)


def test_output_disagreeing_with_answer(tmp_path: Path) -> None:
    write(tmp_path, [dict(GOOD, output="the correct answer is answer1")])
    with pytest.raises(DataError, match="field 'output'"):
        load_task("arc_e", "train", source="local", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        ("Pick one: x\n\nAnswer1: a Answer2: b\n\nAnswer format: answer1/answer2", "does not start"),
        ("Please choose the correct answer to the question: x\n\nAnswer1: a Answer2: b", "Answer format"),
        ("Please choose the correct answer to the question: x\n\nAnswer1: a Answer2: b\n\n"
         "Answer format: answer1/answer2/answer3", "Answer3"),
        ("Please choose the correct answer to the question: x\n\nAnswer1: a Answer2: b Answer3: c\n\n"
         "Answer format: answer1/answer2", "more options"),
        ("Please choose the correct answer to the question: x\n\nAnswer1: a Answer2: b\n\n"
         "Answer format: a/b", "Answer format"),
        ("Please choose the correct answer to the question: x\n\nAnswer1:  Answer2: b\n\n"
         "Answer format: answer1/answer2", "Answer1 is empty"),
    ],
)
def test_unparsable_instruction(tmp_path: Path, instruction: str, reason: str) -> None:
    write(tmp_path, [GOOD, dict(GOOD, instruction=instruction)])
    with pytest.raises(DataError, match="record 1: field 'instruction'") as e:
        load_task("arc_e", "train", source="local", data_dir=tmp_path)
    assert reason in str(e.value)


def test_unknown_task_split_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="allowed tasks: arc_e, arc_c, obqa, siqa"):
        load_task("boolq", "train", source="local", data_dir=tmp_path)
    with pytest.raises(DataError, match="allowed splits"):
        load_task("arc_e", "dev", source="local", data_dir=tmp_path)
    with pytest.raises(DataError, match="unknown data source"):
        load_task("arc_e", "train", source="ftp", data_dir=tmp_path)


# --------------------------------------------------------------------------- hub

def test_hub_unreachable_names_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(DataError) as e:
        load_task("arc_c", "test", source="hub")
    msg = str(e.value)
    assert "allenai/ai2_arc" in msg and "ARC-Challenge" in msg and "'arc_c'" in msg
    assert 'data.source = "local"' in msg and "data.data_dir" in msg
    assert calls == [(("allenai/ai2_arc", "ARC-Challenge"), {"split": "test"})]


def test_hub_siqa_uses_dev_split_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def load_dataset(repo, config, split):
        seen.append((repo, config, split))
        raise OSError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(DataError, match="allenai/social_i_qa"):
        load_task("siqa", "test", source="hub")
    with pytest.raises(DataError, match="me/mirror"):
        load_task("obqa", "train", source="hub", hub_dataset="me/mirror:main")
    assert seen == [("allenai/social_i_qa", None, "validation"), ("me/mirror", "main", "train")]


def test_hub_without_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "datasets", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DataError, match=r"allenai/openbookqa.*pip install datasets.*data\.source = \"local\""):
        load_task("obqa", "train", source="hub")


def test_hub_rows_map_to_the_llm_adapters_template(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = {
        "allenai/ai2_arc": [{"id": "x", "question": "Q?", "choices": {"text": ["a", "b", "c", "d"],
                                                                      "label": ["A", "B", "C", "D"]},
                             "answerKey": "C"}],
        "allenai/openbookqa": [{"id": "y", "question_stem": "Stem", "choices": {"text": ["p", "q", "r", "s"],
                                                                               "label": ["A", "B", "C", "D"]},
                                "answerKey": "A"}],
        "allenai/social_i_qa": [{"context": "Ctx.", "question": "Why?", "answerA": "u", "answerB": "v",
                                 "answerC": "w", "label": "3"}],
    }
    monkeypatch.setitem(sys.modules, "datasets",
                        types.SimpleNamespace(load_dataset=lambda repo, config, split: rows[repo]))
    arc = load_task("arc_e", "train", source="hub")[0]
    assert (arc.question, arc.options, arc.label) == ("Q?", ("a", "b", "c", "d"), 2)
    assert arc.output == "the correct answer is answer3"
    assert parse_instruction(arc.instruction) == ("Q?", ("a", "b", "c", "d"))
    obqa = load_task("obqa", "test", source="hub")[0]
    assert (obqa.question, obqa.label) == ("Stem", 0)
    siqa = load_task("siqa", "train", source="hub")[0]
    assert (siqa.question, siqa.options, siqa.label) == ("Ctx. Why?", ("u", "v", "w"), 2)
    assert siqa.instruction == ("Please choose the correct answer to the question: Ctx. Why?\n\n"
                                "Answer1: u Answer2: v Answer3: w\n\nAnswer format: answer1/answer2/answer3")


def test_hub_bad_row_names_dataset_and_row(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [{"question": "Q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}]
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a, **k: bad))
    with pytest.raises(DataError, match=r"allenai/ai2_arc.*row 0: field 'answerKey'"):
        load_task("arc_e", "train", source="hub")
