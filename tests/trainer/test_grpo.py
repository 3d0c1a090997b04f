"""GRPO end to end with the built-in rewards (no vLLM), and its dataset checks."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.trainer.harness import TrainerStack, base_request, to_jsonl
from trainer.main import main
from tuning.events import CompletedEvent, EvaluationEvent, EventType, JobEvent, ProgressEvent
from tuning.jobs import ErrorType

SYSTEM = "Answer as <reasoning>...</reasoning><answer>...</answer>."


def sum_rows(count: int, *, column: str = "answer", seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randrange(10), rng.randrange(10)
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"What is {a} plus {b}?"},
                ],
                column: a + b if rng.random() < 0.5 else f"#### {a + b}",
            }
        )
    return rows


def grpo_request(stack: TrainerStack, model_uri: str, **rewards: Any) -> dict[str, Any]:
    request = base_request()
    request["processed_dataset_id"] = "sums"
    config = request["training_config"]
    config.update(base_model_id=model_uri, trainer_type="grpo")
    config["reward_config"] = {
        "functions": ["format", "exact_match", "numeric_match"],
        "weights": [0.5, 1.0, 1.0],
        **rewards,
    }
    config["hyperparameters"].update(
        {
            "max_steps": 2,
            "batch_size": 2,
            "gradient_accumulation_steps": 2,
            "num_generations": 2,
            "max_completion_length": 8,
            "max_prompt_length": 24,
            "max_seq_length": 64,
            "save_strategy": "no",
            "logging_steps": 1,
        }
    )
    config["eval_config"] = None
    config["export_config"] = {"format": "adapter"}
    return request


def run(stack: TrainerStack, request: dict[str, Any]) -> tuple[int, list[JobEvent]]:
    job_id = stack.submit(request)
    code = main(settings=stack.settings(job_id), services=stack.services(job_id))
    return code, stack.pull_events(job_id)


def test_grpo_generates_scores_and_reports_each_reward(
    stack: TrainerStack, tiny_gemma3: Path
) -> None:
    stack.upload_dataset("sums", {"train.jsonl": to_jsonl(sum_rows(8, column="solution"))})
    model_uri = stack.upload_model(tiny_gemma3, "tiny")

    code, events = run(stack, grpo_request(stack, model_uri, reference_column="solution"))

    assert code == 0 and isinstance(events[-1], CompletedEvent), events[-1]
    (training,) = [e for e in events if e.type is EventType.TRAINING]
    reported = [e.payload.metrics.model_dump() for e in events if isinstance(e, EvaluationEvent)]
    final = events[-1].payload.metrics.model_dump()
    assert training.payload.total_steps == 2
    # The prompts (system + question) are longer than max_prompt_length: cut, keeping their end.
    assert training.payload.dataset_stats.truncated_rows > 0
    assert reported == []  # evaluation is off: no evaluation events
    progress = [e.payload for e in events if isinstance(e, ProgressEvent)]
    assert [p.step for p in progress] == [1, 2]
    assert all(p.metrics and "rewards_format_mean" in p.metrics for p in progress)
    for key in ("reward", "reward_std", "completions_mean_length"):
        assert key in final
    assert "kl" not in final  # beta defaults to 0 for GRPO: no reference model, no KL term
    for name in ("format", "exact_match", "numeric_match"):
        assert 0.0 <= final[f"rewards_{name}_mean"] <= 1.0
    assert final["completions_mean_length"] <= 8


def test_grpo_rows_missing_the_reference_column_fail_before_the_model(
    stack: TrainerStack,
) -> None:
    rows = sum_rows(4)
    del rows[2]["answer"]
    rows[3]["answer"] = "no number here"
    stack.upload_dataset("sums", {"train.jsonl": to_jsonl(rows)})
    missing_model = f"gs://{stack.models_bucket}/base_models/never-uploaded/"

    code, events = run(stack, grpo_request(stack, missing_model))

    assert code == 0 and [e.type for e in events] == [EventType.PREPARING, EventType.FAILED]
    error = events[-1].payload.error
    assert (error.type, error.code) == (ErrorType.USER, "invalid_dataset")
    assert "row 2, field 'answer': the reference answer is missing" in error.message
    assert "row 3, field 'answer': numeric_match needs a number" in error.message
