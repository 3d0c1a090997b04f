"""The built-in GRPO rewards: answer format, exact match, numeric match (pure)."""

from __future__ import annotations

import pytest

from tuning.rewards import (
    ANSWER_ONLY,
    FULL_FORMAT,
    NEEDS_REFERENCE,
    exact_match_score,
    extract_answer,
    format_score,
    normalize_answer,
    numeric_match_score,
    parse_number,
    reward_functions,
)
from tuning.spec import RewardFunction

FORMATTED = "<reasoning>\n6 times 7 is 42.\n</reasoning>\n<answer>\n42\n</answer>\n"


@pytest.mark.parametrize(
    ("completion", "score"),
    [
        (FORMATTED, FULL_FORMAT),
        ("<reasoning>x</reasoning><answer>Paris</answer>", FULL_FORMAT),
        ("<reasoning>x</reasoning><answer>Paris</answer> and more", ANSWER_ONLY),
        ("<reasoning> </reasoning><answer>Paris</answer>", ANSWER_ONLY),  # no reasoning
        ("<reasoning>x</reasoning><answer> </answer>", 0.0),  # an empty answer is none
        ("<answer>Paris</answer>", ANSWER_ONLY),
        ("It is the capital.\nAnswer: Paris", ANSWER_ONLY),
        ("**Final answer:** Paris", ANSWER_ONLY),
        ("Paris", 0.0),
        ("", 0.0),
    ],
)
def test_format_reward_levels(completion: str, score: float) -> None:
    assert format_score(completion) == score


def test_the_answer_is_the_last_answer_given() -> None:
    assert extract_answer(FORMATTED) == "42"
    assert extract_answer("<answer>1</answer> no, <answer>2</answer>") == "2"
    assert extract_answer("Answer: 1\nwait\nAnswer: 3") == "3"
    assert extract_answer("<answer>4</answer>\nAnswer: 5") == "4"  # the tag wins over a line
    assert extract_answer("no answer here") is None


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        ("Six times seven.\n**Final Answer:** 4", "4"),  # the emphasis closes after the colon
        ("**Final Answer**: 4", "4"),
        ("**Answer: 4**", "4"),
        ("*Answer:* 4", "4"),
        ("__Final answer:__ 4", "4"),
        ("Final Answer: **4**", "**4**"),  # the answer's own emphasis: normalization drops it
        ("**Final Answer:** **4**", "**4**"),
        ("**Final Answer:** $\\boxed{4}$", "$\\boxed{4}$"),
        ("**Answer:** first\n**Final Answer:** 1,234.5", "1,234.5"),
    ],
)
def test_markdown_answer_lines_give_the_answer_without_the_labels_emphasis(
    completion: str, answer: str
) -> None:
    assert extract_answer(completion) == answer


@pytest.mark.parametrize(
    "completion",
    ["**Final Answer:** 4", "**Final Answer**: 4.", "**Answer: 4**", "Final Answer: $4$"],
)
def test_markdown_final_answers_match_exactly_and_numerically(completion: str) -> None:
    assert exact_match_score(completion, "4") == 1.0
    assert numeric_match_score(completion, "4") == 1.0
    assert exact_match_score(completion, "5") == 0.0
    assert numeric_match_score(completion, "5") == 0.0


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("  Paris.  ", "paris"),
        ("**Paris**", "paris"),
        ('"New  York"', "new york"),
        ("\\boxed{42}", "42"),
        ("`x = 1`", "x = 1"),
    ],
)
def test_answers_compare_without_case_spacing_or_decoration(given: str, normalized: str) -> None:
    assert normalize_answer(given) == normalized


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("42", 42.0),
        ("The total is 1,234.5 dollars", 1234.5),
        ("#### 72", 72.0),
        ("-3 and then 7", 7.0),  # the last number
        ("x = -3", -3.0),
        ("\u22125", -5.0),
        ("3/4", 0.75),
        ("2e3", 2000.0),
        (".5", 0.5),
        ("none", None),
        ("1/0", None),
    ],
)
def test_numbers_are_read_from_the_end(text: str, number: float | None) -> None:
    assert parse_number(text) == number


def test_numeric_match_within_tolerance_and_not_beyond() -> None:
    assert numeric_match_score("Answer: 1,000", "1000") == 1.0
    assert numeric_match_score("<answer>0.75</answer>", "3/4") == 1.0
    assert numeric_match_score("<answer>72.0000001</answer>", "#### 72") == 1.0
    assert numeric_match_score("<answer>72.01</answer>", "72") == 0.0
    assert numeric_match_score("I think 72", "72") == 0.0  # no stated answer, no reward


def test_reward_functions_take_trl_batches_and_are_named_for_their_metrics() -> None:
    functions = reward_functions(
        [RewardFunction.FORMAT, RewardFunction.EXACT_MATCH, RewardFunction.NUMERIC_MATCH]
    )
    conversational = [
        [{"role": "assistant", "content": FORMATTED}],
        [{"role": "assistant", "content": "Answer: 41"}],
    ]
    plain = [FORMATTED, "forty-two"]
    kwargs = {"prompts": ["q", "q"], "completion_ids": [[1], [2]], "trainer_state": None}

    assert [f.__name__ for f in functions] == ["format", "exact_match", "numeric_match"]
    format_reward, exact_match, numeric_match = functions
    assert format_reward(completions=conversational, **kwargs) == [1.0, 0.5]
    assert exact_match(completions=conversational, reference=["42", "41"], **kwargs) == [1.0, 1.0]
    assert numeric_match(completions=plain, reference=["#### 42", "42"], **kwargs) == [1.0, 0.0]
    assert {RewardFunction.EXACT_MATCH, RewardFunction.NUMERIC_MATCH} == NEEDS_REFERENCE
