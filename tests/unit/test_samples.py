"""Sample answers: which prompts are answered, how answers score, the artifact's lines and the
CLI's view of them (pure: no model)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from trainer.data import DatasetSplits
from trainer.samples import (
    MAX_PROMPT_TOKENS,
    Answers,
    SamplePlan,
    eval_scores,
    plan_samples,
    row_prompt,
    sample_lines,
    samples_for_job,
    score,
)
from tuning.cli.sample_commands import describe_samples
from tuning.dataset.rows import RowFormat
from tuning.samples import SampleLine, decode_lines, encode_lines
from tuning.spec import MAX_SAMPLES, RewardFunction, TrainingConfig

EXACT, NUMERIC, FORMAT = (
    RewardFunction.EXACT_MATCH,
    RewardFunction.NUMERIC_MATCH,
    RewardFunction.FORMAT,
)


def chat(question: str, answer: str, system: str | None = None) -> dict[str, Any]:
    turns = [{"role": "system", "content": system}] if system else []
    turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": turns}


def config(**eval_config: Any) -> TrainingConfig:
    data: dict[str, Any] = {
        "base_model_id": "google/gemma-3-1b-it",
        "method": "LoRA",
        "eval_config": {"eval_strategy": "epoch", **eval_config},
    }
    return TrainingConfig.model_validate(data)


def splits(
    train: list[dict[str, Any]],
    evaluation: list[dict[str, Any]] | None,
    row_format: RowFormat = RowFormat.MESSAGES,
) -> DatasetSplits:
    return DatasetSplits(
        train=train,
        eval=evaluation,
        row_format=row_format,
        train_source="gs://d/train.jsonl",
        eval_source="gs://d/eval.jsonl" if evaluation is not None else None,
    )


TRAIN = [chat(f"train {i}?", f"t{i}") for i in range(10)]
EVAL = [chat("a?", "1"), chat("b?", "2"), chat("a?", "1"), chat("c?", "3"), chat("d?", "4")]


# Which prompts ------------------------------------------------------------------------------


def test_samples_are_the_first_distinct_eval_prompts_and_scored_rows_the_first_eval_rows():
    plan = plan_samples(config(samples=3, scored_rows=4), splits(TRAIN, EVAL), evaluate=True)

    assert plan is not None
    assert [p.shown for p in plan.samples] == ["a?", "b?", "c?"]  # "a?" twice: once
    assert [p.shown for p in plan.scored] == ["a?", "b?", "a?", "c?"]  # every row counts
    assert [p.shown for p in plan.prompts] == ["a?", "b?", "c?"]  # each generated once
    assert {p.source for p in plan.prompts} == {"eval"}
    assert [p.reference for p in plan.scored] == ["1", "2", "1", "3"]
    assert plan.scorers == [EXACT, NUMERIC]  # every reference holds a number
    assert (plan.max_new_tokens, plan.prompt_tokens) == (64, MAX_PROMPT_TOKENS)


def test_without_an_eval_split_samples_come_from_train_and_nothing_is_scored():
    plan = plan_samples(config(samples=2), splits(TRAIN, None), evaluate=False)

    assert plan is not None
    assert [(p.shown, p.source, p.reference) for p in plan.samples] == [
        ("train 0?", "train", "t0"),
        ("train 1?", "train", "t1"),
    ]
    assert plan.scored == [] and plan.scorers == []


def test_a_job_without_eval_config_still_gets_the_default_samples():
    bare = TrainingConfig.model_validate({"base_model_id": "google/gemma-3-1b-it"})

    plan = plan_samples(bare, splits(TRAIN, None), evaluate=False)

    assert plan is not None and len(plan.samples) == 5


def test_requested_prompts_replace_the_datasets_and_the_eval_rows_are_still_scored():
    plan = plan_samples(
        config(sample_prompts=["Hi there?", "2 + 2?"], scored_rows=2),
        splits(TRAIN, EVAL),
        evaluate=True,
    )

    assert plan is not None
    assert [(p.shown, p.source, p.reference, p.chat()) for p in plan.samples] == [
        ("Hi there?", "request", None, [{"role": "user", "content": "Hi there?"}]),
        ("2 + 2?", "request", None, [{"role": "user", "content": "2 + 2?"}]),
    ]
    assert [p.shown for p in plan.prompts] == ["Hi there?", "2 + 2?", "a?", "b?"]


@pytest.mark.parametrize(
    ("settings", "row_format"),
    [({"samples": 0}, RowFormat.MESSAGES), ({}, RowFormat.VISION_MESSAGES)],
)
def test_samples_off_or_a_vision_job_generate_nothing(
    settings: dict[str, Any], row_format: RowFormat
):
    assert plan_samples(config(**settings), splits(TRAIN, EVAL, row_format), evaluate=True) is None


def test_a_multi_gpu_job_skips_the_samples_with_a_warning():
    warnings: list[str] = []

    plan = samples_for_job(
        config(), splits(TRAIN, EVAL), evaluate=True, distributed=True, warn=warnings.append
    )

    assert plan is None
    assert len(warnings) == 1 and "multi-GPU" in warnings[0]


def test_the_prompt_is_the_conversation_before_the_last_answer():
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "one?"},
            {"role": "assistant", "content": "1"},
            {"role": "user", "content": "two?"},
            {"role": "assistant", "content": "2"},
        ]
    }

    prompt = row_prompt(row, RowFormat.MESSAGES, "eval")

    assert prompt.shown == "two?" and prompt.reference == "2"
    assert [m["role"] for m in prompt.chat()] == ["system", "user", "assistant", "user"]


def test_plain_prompts_keep_the_form_training_gave_them():
    completion = row_prompt(
        {"prompt": "2+2=", "completion": "4"}, RowFormat.PROMPT_COMPLETION, "eval"
    )
    grpo = row_prompt({"prompt": "2+2=", "reference": "4"}, RowFormat.PROMPT_ONLY, "eval")
    dpo = row_prompt(
        {"prompt": "2+2=", "chosen": "4", "rejected": "5"}, RowFormat.PREFERENCE, "eval"
    )
    chat_grpo = row_prompt(
        {"prompt": [{"role": "user", "content": "2+2?"}], "reference": "4"},
        RowFormat.CONVERSATIONAL_PROMPT_ONLY,
        "eval",
    )

    # SFT's plain rows go through the chat template (trainer/sft.py as_turns); TRL feeds the
    # plain prompts of GRPO and DPO rows to the model as they are.
    assert (completion.chat(), completion.text, completion.reference) == (
        [{"role": "user", "content": "2+2="}],
        None,
        "4",
    )
    assert (grpo.messages, grpo.text, grpo.reference) == (None, "2+2=", "4")
    assert (dpo.text, dpo.reference) == ("2+2=", None)  # no reference: never scored
    assert (chat_grpo.chat(), chat_grpo.reference) == ([{"role": "user", "content": "2+2?"}], "4")


def test_a_grpo_job_scores_with_its_own_reward_functions():
    grpo = TrainingConfig.model_validate(
        {
            "base_model_id": "google/gemma-3-1b-it",
            "trainer_type": "grpo",
            "reward_config": {"functions": ["format", "numeric_match"]},
            "hyperparameters": {"batch_size": 2, "num_generations": 2},
            "eval_config": {"eval_strategy": "epoch"},
        }
    )
    rows = [{"prompt": "2+2=", "reference": "4"}]

    plan = plan_samples(grpo, splits(rows, rows, RowFormat.PROMPT_ONLY), evaluate=True)

    assert plan is not None and plan.scorers == [FORMAT, NUMERIC]


def test_format_is_scored_where_every_reference_is_in_the_format():
    formatted = "<reasoning>r</reasoning><answer>x</answer>"
    rows = [chat("q?", formatted)]

    plan = plan_samples(config(), splits(rows, rows), evaluate=True)

    assert plan is not None and plan.scorers == [EXACT, FORMAT]


# Scores -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "answer", "reference", "expected"),
    [
        (EXACT, "Ember is teal", "ember is teal.", 1.0),  # free text: compared whole
        (EXACT, "ember is red.", "ember is teal.", 0.0),
        (EXACT, "Let me think.\n**Final Answer:** 4", "4", 1.0),
        (EXACT, "**Final Answer:** 4", "<reasoning>2+2</reasoning><answer>4</answer>", 1.0),
        (EXACT, "4", "Working.\nAnswer: 4", 1.0),
        (NUMERIC, "It is 1,000.0 in all", "1000", 1.0),
        (NUMERIC, "**Final Answer:** 12", "The total is 12.", 1.0),
        (NUMERIC, "about seven", "7", 0.0),
        (FORMAT, "<reasoning>r</reasoning><answer>x</answer>", "anything", 1.0),
        (FORMAT, "x", "anything", 0.0),
    ],
)
def test_scores_compare_the_final_answer_or_the_whole_text(
    function: RewardFunction, answer: str, reference: str, expected: float
):
    assert score(function, answer, reference) == expected


def scored_plan(**eval_config: Any) -> SamplePlan:
    plan = plan_samples(config(**eval_config), splits(TRAIN, EVAL), evaluate=True)
    assert plan is not None
    return plan


def test_eval_scores_are_means_over_the_scored_rows_for_base_and_tuned():
    plan = scored_plan(samples=1, scored_rows=4)  # rows a?, b?, a?, c? ; prompts a?, b?, c?
    keys = {p.shown: p.key for p in plan.prompts}
    answers = Answers(
        tuned={keys["a?"]: "1", keys["b?"]: "2", keys["c?"]: "x"},
        base={keys["a?"]: "no", keys["b?"]: "2", keys["c?"]: "no"},
    )

    scores = eval_scores(plan, answers)

    assert scores is not None
    assert scores["exact_match"].model_dump() == {"base": 0.25, "tuned": 0.75, "rows": 4}
    assert scores["numeric_match"].model_dump() == {"base": 0.25, "tuned": 0.75, "rows": 4}
    unknown_base = eval_scores(plan, Answers(tuned=answers.tuned, base=None))
    assert unknown_base is not None and unknown_base["exact_match"].base is None


def test_nothing_scored_gives_no_eval_scores():
    plan = plan_samples(config(scored_rows=0), splits(TRAIN, EVAL), evaluate=True)

    assert plan is not None and plan.scored == []
    assert eval_scores(plan, Answers(tuned={p.key: "" for p in plan.prompts}, base={})) is None


# The artifact -------------------------------------------------------------------------------


def test_the_artifact_has_one_line_per_distinct_prompt_with_both_answers_and_scores():
    plan = plan_samples(
        config(sample_prompts=["Hi?"], scored_rows=2), splits(TRAIN, EVAL), evaluate=True
    )
    assert plan is not None
    answers = Answers(
        tuned={p.key: f"tuned {p.shown}" for p in plan.prompts} | {plan.prompts[1].key: "1"},
        base={p.key: f"base {p.shown}" for p in plan.prompts},
    )

    data = encode_lines(sample_lines(plan, answers))
    raw = [json.loads(line) for line in data.decode().splitlines()]

    assert raw == [
        {
            "prompt": "Hi?",
            "reference": None,
            "base_answer": "base Hi?",
            "tuned_answer": "tuned Hi?",
            "source": "request",
            "scored": False,
            "scores": None,
        },
        {
            "prompt": "a?",
            "reference": "1",
            "base_answer": "base a?",
            "tuned_answer": "1",
            "source": "eval",
            "scored": True,
            "scores": {
                "exact_match": {"base": 0.0, "tuned": 1.0},
                "numeric_match": {"base": 0.0, "tuned": 1.0},
            },
        },
        {
            "prompt": "b?",
            "reference": "2",
            "base_answer": "base b?",
            "tuned_answer": "tuned b?",
            "source": "eval",
            "scored": True,
            "scores": {
                "exact_match": {"base": 0.0, "tuned": 0.0},
                "numeric_match": {"base": 0.0, "tuned": 0.0},
            },
        },
    ]
    assert decode_lines(data) == sample_lines(plan, answers)


def test_a_line_that_is_no_sample_is_skipped_when_read():
    good = SampleLine(prompt="p", tuned_answer="t", source="train")

    lines = decode_lines(encode_lines([good]) + b"not json\n{}\n\n" + encode_lines([good]))

    assert lines == [good, good]


# The request fields -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("eval_config", "field"),
    [
        ({"samples": MAX_SAMPLES + 1}, "samples"),
        ({"samples": -1}, "samples"),
        ({"sample_prompts": []}, "sample_prompts"),
        ({"sample_prompts": ["   "]}, "sample_prompts"),
        ({"sample_prompts": ["x" * 2001]}, "sample_prompts"),
        ({"sample_prompts": ["q"] * (MAX_SAMPLES + 1)}, "sample_prompts"),
        ({"sample_prompts": ["q"], "samples": 0}, "sample_prompts"),
        ({"sample_max_new_tokens": 0}, "sample_max_new_tokens"),
        ({"sample_max_new_tokens": 257}, "sample_max_new_tokens"),
        ({"scored_rows": 65}, "scored_rows"),
    ],
)
def test_sample_fields_out_of_bounds_are_refused_naming_the_field(
    eval_config: dict[str, Any], field: str
):
    with pytest.raises(ValidationError) as raised:
        config(**eval_config)

    assert field in str(raised.value)


# The CLI ------------------------------------------------------------------------------------


def test_the_cli_shows_the_scores_then_each_prompt_with_its_answers_side_by_side():
    answer = {
        "job_id": "j",
        "eval_scores": {"exact_match": {"base": 0.0, "tuned": 0.75, "rows": 8}},
        "samples": [
            {
                "prompt": "What colour is apple?",
                "reference": "red",
                "base_answer": "dwhl dwhl",
                "tuned_answer": "red",
                "source": "eval",
                "scores": {"exact_match": {"base": 0.0, "tuned": 1.0}},
            },
            {"prompt": "Hi?", "base_answer": None, "tuned_answer": "hello", "source": "request"},
        ],
    }

    text = describe_samples(answer, width=60)
    lines = text.splitlines()

    assert lines[:2] == [
        "eval scores over 8 eval rows (base -> fine-tuned):",
        "  exact_match    0.00 -> 0.75",
    ]
    assert "[1] (eval) What colour is apple?" in lines
    assert "    reference: red" in lines and "    exact_match: 0.00 -> 1.00" in lines
    assert f"{'base':<28} | fine-tuned" in lines
    assert f"{'dwhl dwhl':<28} | red" in lines
    assert f"{'base (unknown)':<28} | fine-tuned" in lines
    assert all(len(line) <= 60 for line in lines)
    assert describe_samples({"job_id": "j", "samples": []}) == "no samples"
