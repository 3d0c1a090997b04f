"""Sample answers and scored evaluation, end to end on the tiny Gemma: a Full job that learns
a small colour task answers better than the model as loaded (its base answers made before
training), and a LoRA job whose base answers are the same model with the adapter disabled."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tests.trainer.harness import TrainerStack, base_request, to_jsonl
from tests.trainer.reference import load_causal_lm, load_with_adapter
from trainer.main import main
from tuning.events import CompletedEvent, EvaluationEvent, JobEvent, MessageEvent
from tuning.samples import decode_lines

# Two words, two colours: a mapping the random-initialised tiny model memorises in 80 steps.
COLOUR_OF = {"apple": "red", "river": "blue"}


def colour_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        word = rng.choice(sorted(COLOUR_OF))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What colour is {word}?"},
                    {"role": "assistant", "content": COLOUR_OF[word]},
                ]
            }
        )
    return rows


def colour_job(stack: TrainerStack, model: Path, **hyperparameters: Any) -> dict[str, Any]:
    stack.upload_dataset(
        "colours",
        {
            "train.jsonl": to_jsonl(colour_rows(32, seed=1)),
            "validation.jsonl": to_jsonl(colour_rows(8, seed=2)),
        },
    )
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"]["base_model_id"] = stack.upload_model(model, model.name)
    request["training_config"]["export_config"] = {"format": "adapter"}
    request["training_config"]["eval_config"] = {
        "eval_strategy": "epoch",
        "samples": 3,
        "scored_rows": 8,
        "sample_max_new_tokens": 8,
    }
    request["training_config"]["hyperparameters"].update(
        {"save_strategy": "no", "logging_steps": 10, **hyperparameters}
    )
    return request


def run(stack: TrainerStack, request: dict[str, Any]) -> tuple[str, list[JobEvent]]:
    job_id = stack.submit(request)
    assert main(settings=stack.settings(job_id), services=stack.services(job_id)) == 0
    return job_id, stack.pull_events(job_id)


def greedy(model: Any, model_dir: Path, question: str, max_new_tokens: int = 8) -> str:
    """A model's answer, generated here without the trainer."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    stops = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")]
    with torch.no_grad():
        out = model.eval().generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_a_full_job_that_learns_scores_above_its_base(
    stack: TrainerStack, tiny_gemma3: Path
) -> None:
    request = colour_job(stack, tiny_gemma3, max_steps=80, learning_rate=0.005)
    request["training_config"]["method"] = "Full"

    job_id, events = run(stack, request)

    completed = events[-1]
    assert isinstance(completed, CompletedEvent)
    layout = stack.services(job_id).settings.layout
    assert completed.payload.artifacts.samples_path == layout.samples_uri(job_id)
    data = stack.storage.download_bytes(layout.samples_uri(job_id))
    raw = [json.loads(line) for line in data.splitlines()]
    lines = decode_lines(data)
    # Every distinct eval prompt once (two words: the three samples find two), with its answer.
    assert sorted(line.prompt for line in lines) == [
        "What colour is apple?",
        "What colour is river?",
    ]
    assert {"prompt", "reference", "base_answer", "tuned_answer", "source", "scores"} <= set(raw[0])
    assert all(line.source == "eval" and line.scored for line in lines)
    assert {line.reference for line in lines} == {"red", "blue"}
    assert all(line.tuned_answer == line.reference for line in lines), lines
    base = load_causal_lm(tiny_gemma3)
    for line in lines:  # the model as loaded, before its first step
        assert line.base_answer == greedy(base, tiny_gemma3, line.prompt)
        assert line.scores["exact_match"].base == 0.0
        assert line.scores["exact_match"].tuned == 1.0
    scores = completed.payload.metrics.eval_scores
    assert set(scores) == {"exact_match"}
    assert (scores["exact_match"].base, scores["exact_match"].tuned) == (0.0, 1.0)
    assert scores["exact_match"].rows == 8
    evaluation = [e for e in events if isinstance(e, EvaluationEvent)][-1]
    assert evaluation.payload.metrics.eval_scores == scores
    assert evaluation.payload.metrics.eval_loss is not None  # the final figures, with scores
    assert stack.storage.exists(layout.base_answers_uri(job_id))
    notes = [e.payload.text for e in events if isinstance(e, MessageEvent)]
    assert any(text.startswith("sample answers: the base model answered 2") for text in notes)


def test_a_lora_job_answers_with_its_adapter_and_without(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    request = colour_job(stack, tiny_gemma3, max_steps=4, learning_rate=0.01)
    request["training_config"]["eval_config"]["sample_prompts"] = ["What colour is frost?"]

    job_id, events = run(stack, request)

    completed = events[-1]
    assert isinstance(completed, CompletedEvent)
    layout = stack.services(job_id).settings.layout
    lines = decode_lines(stack.storage.download_bytes(layout.samples_uri(job_id)))
    asked, *scored = lines
    assert (asked.prompt, asked.source, asked.reference, asked.scores, asked.scored) == (
        "What colour is frost?",
        "request",
        None,
        None,
        False,
    )
    assert {line.prompt for line in scored} == {"What colour is apple?", "What colour is river?"}
    assert all(line.scored and line.scores for line in scored)
    stack.storage.download_dir(completed.payload.artifacts.adapter_path, tmp_path / "adapter")
    base, tuned = load_causal_lm(tiny_gemma3), load_with_adapter(tiny_gemma3, tmp_path / "adapter")
    for line in lines:
        assert line.base_answer == greedy(base, tiny_gemma3, line.prompt)
        assert line.tuned_answer == greedy(tuned, tiny_gemma3, line.prompt)
    assert not stack.storage.exists(layout.base_answers_uri(job_id))  # LoRA needs none
    assert completed.payload.metrics.eval_scores["exact_match"].rows == 8
