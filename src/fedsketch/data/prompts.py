"""Prompt formatting for training and multiple-choice evaluation (pure strings).

Two formats (``data.prompt_format``):

``"cloze"``
    prompt ``"Question: {question}\\nAnswer:"``; the response is the correct option's text
    with a leading space, ``" {options[label]}"``. Evaluation scores every option's text.
``"llm_adapters"``
    the LLM-Adapters (Alpaca) template around the original instruction::

        Below is an instruction that describes a task. Write a response that appropriately completes the request.

        ### Instruction:
        {instruction}

        ### Response:

    and the response is the original output, ``"the correct answer is answerN"``. Evaluation
    scores ``"the correct answer is answer1"`` ... ``"answerK"``; the candidates share every token
    but the answer digit, so the ranking is that of the digit's log-probability.

Scoring (used by the engine's evaluation): for each candidate response c of
:func:`format_choices`, compute the sum of the log-probabilities of c's tokens given the prompt
(teacher forcing, prompt tokens not scored); the prediction is the argmax over candidates, and
is correct when it equals ``ex.label``. Candidates are in the order of ``ex.options``.
Training computes the loss on the response tokens only.
"""

from __future__ import annotations

from .datasets import MCQExample, build_output

PROMPT_FORMATS: tuple[str, ...] = ("cloze", "llm_adapters")

CLOZE_TEMPLATE = "Question: {question}\nAnswer:"
LLM_ADAPTERS_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


def _check(fmt: str) -> None:
    if fmt not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; allowed: {', '.join(PROMPT_FORMATS)}")


def format_prompt(ex: MCQExample, fmt: str) -> str:
    """The prompt (context before the response) of ``ex`` in format ``fmt``."""
    _check(fmt)
    if fmt == "cloze":
        return CLOZE_TEMPLATE.format(question=ex.question)
    return LLM_ADAPTERS_TEMPLATE.format(instruction=ex.instruction)


def format_train(ex: MCQExample, fmt: str) -> tuple[str, str]:
    """Training pair ``(prompt, response)``; the loss is taken on the response tokens only.

    Parameters
    ----------
    ex : MCQExample
        The example.
    fmt : {"cloze", "llm_adapters"}
        ``"cloze"``: ``("Question: {question}\\nAnswer:", " {options[label]}")``.
        ``"llm_adapters"``: (Alpaca template around ``ex.instruction``, ``ex.output``), e.g.
        ``"the correct answer is answer2"``.

    Returns
    -------
    prompt, response : str
    """
    prompt = format_prompt(ex, fmt)
    if fmt == "cloze":
        return prompt, " " + ex.options[ex.label]
    return prompt, ex.output


def format_choices(ex: MCQExample, fmt: str) -> tuple[str, list[str]]:
    """Evaluation prompt and one candidate response per option, in option order.

    The engine scores candidate i by the summed log-likelihood of its tokens after the prompt
    and predicts the argmax; ``candidates[ex.label]`` equals the training response of
    :func:`format_train`.

    Parameters
    ----------
    ex : MCQExample
        The example.
    fmt : {"cloze", "llm_adapters"}
        ``"cloze"``: ``[" " + o for o in ex.options]``.
        ``"llm_adapters"``: ``["the correct answer is answer1", ..., "... answerK"]`` (the
        candidates differ only in the answer digit, which is what gets scored).

    Returns
    -------
    prompt : str
    candidates : list of str
    """
    prompt = format_prompt(ex, fmt)
    if fmt == "cloze":
        return prompt, [" " + o for o in ex.options]
    return prompt, [build_output(i) for i in range(len(ex.options))]
