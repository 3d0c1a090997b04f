"""DPO and ORPO end to end on preference rows, reporting their reward metrics as events."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.trainer.harness import COLOURS, WORDS, TrainerStack, base_request, to_jsonl
from trainer.main import main
from tuning.events import CompletedEvent, EvaluationEvent, EventType, JobEvent, ProgressEvent


def preference_rows(count: int, *, conversational: bool, seed: int = 0) -> list[dict[str, Any]]:
    """Each word has one right colour (chosen) and a wrong one (rejected)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        index = rng.randrange(len(WORDS))
        word, right = WORDS[index], COLOURS[index]
        wrong = COLOURS[(index + 1 + rng.randrange(len(COLOURS) - 1)) % len(COLOURS)]
        prompt, chosen, rejected = (
            f"What colour is {word}?",
            f"{word} is {right}.",
            f"{word} is {wrong}.",
        )
        if conversational:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        else:
            rows.append({"prompt": f"{prompt}\n", "chosen": chosen, "rejected": rejected})
    return rows


def run_preference_job(
    stack: TrainerStack, model: Path, trainer_type: str, rows: list[dict[str, Any]]
) -> tuple[int, list[JobEvent]]:
    stack.upload_dataset("prefs", {"train.jsonl": to_jsonl(rows)})
    request = base_request()
    request["processed_dataset_id"] = "prefs"
    config = request["training_config"]
    config.update(base_model_id=stack.upload_model(model, "tiny"), trainer_type=trainer_type)
    config["hyperparameters"].update(
        {
            "max_steps": 4,
            "batch_size": 4,
            "learning_rate": 0.005,
            "save_strategy": "no",
            "logging_steps": 1,
            "beta": 0.5,
            "max_prompt_length": 16,
            "max_seq_length": 64,
        }
    )
    config["eval_config"] = {
        "eval_strategy": "steps",
        "eval_steps": 2,
        "eval_holdout_fraction": 0.2,
    }
    config["export_config"] = {"format": "adapter"}
    job_id = stack.submit(request)
    code = main(settings=stack.settings(job_id), services=stack.services(job_id))
    return code, stack.pull_events(job_id)


def metrics_of(events: list[JobEvent]) -> list[dict[str, Any]]:
    return [e.payload.metrics.model_dump() for e in events if isinstance(e, EvaluationEvent)]


def test_dpo_trains_and_reports_reward_margins(stack: TrainerStack, tiny_gemma3: Path) -> None:
    code, events = run_preference_job(
        stack, tiny_gemma3, "dpo", preference_rows(20, conversational=True)
    )

    assert code == 0 and isinstance(events[-1], CompletedEvent), events[-1]
    reported = metrics_of(events)
    final = events[-1].payload.metrics.model_dump()
    # An evaluation event per evaluation (steps 2 and 4), with the training figures beside.
    assert [m["step"] for m in reported] == [2, 4]
    assert all("rewards_margins" in m and "eval_rewards_margins" in m for m in reported)
    # Each progress event carries the training figures of its step.
    progress = [e.payload for e in events if isinstance(e, ProgressEvent)]
    assert [p.step for p in progress] == [1, 2, 3, 4]
    assert all(p.metrics and "rewards_margins" in p.metrics for p in progress)
    for key in ("rewards_chosen", "rewards_rejected", "rewards_margins", "rewards_accuracies"):
        assert key in final and f"eval_{key}" in final
    assert final["eval_rewards_margins"] > 0  # the chosen answers gained on the rejected ones
    assert final["perplexity"] is None  # a DPO loss is no language-model loss
    assert final["eval_loss"] == reported[-1]["eval_loss"]
    assert final["rewards_margins"] == reported[-1]["rewards_margins"]


def test_orpo_on_plain_strings_reports_log_odds(stack: TrainerStack, tiny_gemma3: Path) -> None:
    code, events = run_preference_job(
        stack, tiny_gemma3, "orpo", preference_rows(20, conversational=False, seed=1)
    )

    assert code == 0 and events[-1].type is EventType.COMPLETED, events[-1]
    final = events[-1].payload.metrics.model_dump()
    for key in ("log_odds_ratio", "log_odds_chosen", "nll_loss", "rewards_margins"):
        assert key in final and f"eval_{key}" in final
    reported = metrics_of(events)
    assert len(reported) == 2 and all("eval_log_odds_ratio" in m for m in reported)
    progress = [e.payload for e in events if isinstance(e, ProgressEvent)]
    assert progress and all(p.metrics and "log_odds_ratio" in p.metrics for p in progress)
