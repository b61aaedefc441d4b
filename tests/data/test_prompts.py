"""Prompt formats: the training response is the correct option; candidates follow option order."""

from __future__ import annotations

import pytest

from fedsketch.data import MCQExample, build_instruction, build_output, format_choices, format_train

OPTS = ("a shark", "a whale", "a trout", "a tuna")
EX = MCQExample(question="Which is a mammal?", options=OPTS, label=1,
                instruction=build_instruction("Which is a mammal?", OPTS), output=build_output(1))
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes "
          "the request.\n\n### Instruction:\n{}\n\n### Response:\n")


def test_cloze() -> None:
    prompt, response = format_train(EX, "cloze")
    assert prompt == "Question: Which is a mammal?\nAnswer:"
    assert response == " a whale"
    p2, cands = format_choices(EX, "cloze")
    assert p2 == prompt
    assert cands == [" a shark", " a whale", " a trout", " a tuna"]
    assert cands[EX.label] == response


def test_llm_adapters() -> None:
    prompt, response = format_train(EX, "llm_adapters")
    assert prompt == ALPACA.format(EX.instruction)
    assert response == "the correct answer is answer2" == EX.output
    p2, cands = format_choices(EX, "llm_adapters")
    assert p2 == prompt
    assert cands == [f"the correct answer is answer{i}" for i in range(1, 5)]
    assert cands[EX.label] == response


@pytest.mark.parametrize("fmt", ["cloze", "llm_adapters"])
def test_every_label_position(fmt: str) -> None:
    for label in range(len(OPTS)):
        ex = MCQExample(EX.question, OPTS, label, EX.instruction, build_output(label))
        prompt, response = format_train(ex, fmt)
        p2, cands = format_choices(ex, fmt)
        assert p2 == prompt and cands.index(response) == label and len(cands) == len(OPTS)


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="allowed: cloze, llm_adapters"):
        format_train(EX, "chat")
