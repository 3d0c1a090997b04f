"""Built-in GRPO rewards: answer format, exact match and numeric match against a reference.

The answer format the rewards expect (tell the model in the prompt or system message):

    <reasoning>
    how the answer was found
    </reasoning>
    <answer>
    the final answer
    </answer>

`format` scores 1.0 for exactly that (both parts non-empty, nothing after `</answer>`), 0.5 for
a completion that states an answer some other way (an `<answer>` tag, or a last line
`Answer: X`), 0.0 otherwise. `exact_match` scores 1.0 when the extracted answer equals the
row's reference after normalization (case, surrounding space, quotes, markdown emphasis,
`\\boxed{}`, `$...$`, trailing full stop; the label's own emphasis, as in `**Final Answer:** 4`,
is not part of the answer); `numeric_match` scores 1.0 when the last number of the extracted
answer equals the last number of the reference within a relative tolerance of 1e-6
(commas as thousands separators, decimals, exponents and `a/b` fractions are understood). A
completion without an answer scores 0.0 for both. Pure functions: no torch, no TRL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

from tuning.spec import RewardFunction

FULL_FORMAT = 1.0
ANSWER_ONLY = 0.5
# The column normalized GRPO rows carry the reference answer in (see tuning.dataset.formats).
REFERENCE = "reference"
RELATIVE_TOLERANCE = 1e-6
ABSOLUTE_TOLERANCE = 1e-9

_FULL = re.compile(
    r"^\s*<reasoning>\s*\S.*?</reasoning>\s*<answer>(?P<answer>.*?)</answer>\s*$", re.DOTALL
)
_ANSWER_TAG = re.compile(r"<answer>(?P<answer>.*?)</answer>", re.DOTALL)
# Markdown emphasis around the label may close before the colon (`**Answer**: 4`), right after
# it (`**Final Answer:** 4`) or after the answer (`**Answer: 4**`).
_EMPHASIS = r"\*\*|__|\*|_"
_ANSWER_LINE = re.compile(
    rf"^[ \t]*(?P<opened>{_EMPHASIS})?(?:final[ \t]+)?answer(?P<closed>{_EMPHASIS})?[ \t]*[:=]"
    rf"[ \t]*(?P<after>{_EMPHASIS})?[ \t]*(?P<answer>.+?)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_BOXED = re.compile(r"\\boxed\{(?P<inner>[^{}]*)\}")
_NUMBER = re.compile(
    r"(?P<sign>[-+\u2212]?)(?P<value>"
    r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+)"
    r"(?:\s*/\s*(?P<denominator>\d+))?"
)
MINUS_SIGN = "\u2212"  # as some models and typesetting write negative numbers
_WRAPPERS = ("**", "__", "`", '"', "'", "*", "_", "$")


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or the content of conversational messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(_content_text(message.get("content")) for message in completion)
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return ""


def extract_answer(text: str) -> str | None:
    """The completion's final answer: the last non-empty `<answer>` tag, else an `Answer:` line."""
    tagged = [match["answer"].strip() for match in _ANSWER_TAG.finditer(text)]
    tagged = [answer for answer in tagged if answer]
    if tagged:
        return tagged[-1]
    lines = [_line_answer(match) for match in _ANSWER_LINE.finditer(text)]
    lines = [answer for answer in lines if answer]
    return lines[-1] if lines else None


def _line_answer(match: re.Match[str]) -> str:
    """The answer of an `Answer:` line without the label's own emphasis markup."""
    opened, closed, after = match["opened"], match["closed"], match["after"]
    answer = match["answer"].strip()
    if opened and not closed:
        if after == opened:  # `**Final Answer:** 4`: the label's emphasis ends after the colon
            after = None
        elif answer.endswith(opened) and not answer.startswith(opened):  # `**Answer: 4**`
            answer = answer[: -len(opened)]
    return ((after or "") + answer).strip()


def format_score(text: str) -> float:
    match = _FULL.match(text)
    if match and match["answer"].strip():
        return FULL_FORMAT
    return ANSWER_ONLY if extract_answer(text) is not None else 0.0


def normalize_answer(text: str) -> str:
    """Case, spacing, quotes, emphasis, \\boxed{} and a trailing full stop do not count."""
    value = " ".join(text.split()).casefold()
    while True:
        before = value
        boxed = _BOXED.fullmatch(value)
        if boxed:
            value = boxed["inner"].strip()
        value = value.strip().rstrip(".!").strip()
        for wrapper in _WRAPPERS:
            if (
                len(value) > 2 * len(wrapper)
                and value.startswith(wrapper)
                and value.endswith(wrapper)
            ):
                value = value[len(wrapper) : -len(wrapper)].strip()
        if value == before:
            return value


def parse_number(text: str) -> float | None:
    """The last number in `text`: `1,234.5`, `-3`, `2e3`, `3/4`; None when there is none."""
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    value = Fraction(match["value"].replace(",", ""))
    if match["denominator"]:
        denominator = int(match["denominator"])
        if denominator == 0:
            return None
        value /= denominator
    return float(-value if match["sign"] in ("-", MINUS_SIGN) else value)


def exact_match_score(text: str, reference: str) -> float:
    answer = extract_answer(text)
    if answer is None:
        return 0.0
    return 1.0 if normalize_answer(answer) == normalize_answer(reference) else 0.0


def numeric_match_score(text: str, reference: str) -> float:
    answer = extract_answer(text)
    expected = parse_number(reference)
    found = parse_number(answer) if answer is not None else None
    if found is None or expected is None:
        return 0.0
    close = math.isclose(found, expected, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)
    return 1.0 if close else 0.0


# TRL reward functions --------------------------------------------------------------------------
# GRPOTrainer calls each with the batch's prompts and completions and every other dataset column
# as a keyword argument (here `reference`), and names its logged metrics after `__name__`.

RewardCallable = Callable[..., list[float]]


def _format(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    return [format_score(completion_text(completion)) for completion in completions]


def _exact_match(
    completions: Sequence[Any], reference: Sequence[str], **kwargs: Any
) -> list[float]:
    return [
        exact_match_score(completion_text(completion), answer)
        for completion, answer in zip(completions, reference, strict=True)
    ]


def _numeric_match(
    completions: Sequence[Any], reference: Sequence[str], **kwargs: Any
) -> list[float]:
    return [
        numeric_match_score(completion_text(completion), answer)
        for completion, answer in zip(completions, reference, strict=True)
    ]


_REWARDS: dict[RewardFunction, RewardCallable] = {
    RewardFunction.FORMAT: _format,
    RewardFunction.EXACT_MATCH: _exact_match,
    RewardFunction.NUMERIC_MATCH: _numeric_match,
}
for _function, _implementation in _REWARDS.items():
    _implementation.__name__ = _function.value  # TRL's metric names: rewards/{name}/mean
# Rewards that compare with the row's reference answer: its column must be in every row.
NEEDS_REFERENCE = frozenset({RewardFunction.EXACT_MATCH, RewardFunction.NUMERIC_MATCH})


def reward_functions(functions: Sequence[RewardFunction]) -> list[RewardCallable]:
    """TRL reward callables in the configured order, each named after its RewardFunction."""
    return [_REWARDS[RewardFunction(function)] for function in functions]
