"""Scorers shared by numeric-answer tasks."""

from __future__ import annotations

import re

SIGNED_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# What inspect's numeric matching strips before reading numbers: currency signs, thousands separators, markup.
NUMERIC_PUNCTUATION = re.compile(r"[$€£,*_]")


def last_number(text: str) -> str | None:
    """The last whitespace-separated word of `text` that is a number, sign kept, after numeric punctuation
    is stripped (the extraction inspect's `match(numeric=True)` uses, plus a leading minus)."""
    words = NUMERIC_PUNCTUATION.sub("", text.strip().casefold()).split()
    for word in reversed(words):
        word = word.rstrip(".")  # a sentence-final full stop is not a decimal point
        if SIGNED_NUMBER.fullmatch(word):
            return word
    return None


def numbers_equal(answer: str | None, target: str) -> bool:
    """Exact comparison by value: "15" is not "5", "-5" is not "5", "1,000" equals "1000"."""
    if answer is None:
        return False
    t = NUMERIC_PUNCTUATION.sub("", target.strip())
    if not SIGNED_NUMBER.fullmatch(t):
        raise ValueError(f"target {target!r} is not a number")
    return abs(float(answer) - float(t)) < 1e-9


def exact_last_number():
    """inspect-ai scorer: the completion's last number must equal the target exactly (PostTrainBench's final
    gsm8k scorer; inspect's `match(numeric=True)` compares with `endswith`, so 15 would pass for 5)."""
    from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, scorer, stderr

    @scorer(metrics=[accuracy(), stderr()])
    def exact_last_number_match():
        async def score(state, target: Target) -> Score:
            completion = state.output.completion
            answer = last_number(completion)
            ok = any(numbers_equal(answer, t) for t in target)
            return Score(value=CORRECT if ok else INCORRECT, answer=answer, explanation=completion)

        return score

    return exact_last_number_match()
