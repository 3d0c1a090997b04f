"""The demo job of `make run`: a small chat task a tiny Gemma learns in seconds on a CPU.

Each animal has one colour; the model learns to answer "What colour is the
X?" with "The X is Y." The eval split asks the same facts in other words, so
its answers are right only if the facts (not just the phrasing) were learned.

What makes a random two-layer model learn it on a CPU (480 steps, about 12 s of training on
two idle cores): the tiny model's vocabulary holds every animal and colour as one token
(`VOCABULARY_WORDS`, given to `python -m trainer.tiny --words`), every question ends with its
animal (so the answer finds it at the same distance back in every phrasing), no system prompt,
and Full fine-tuning at a high learning rate (LoRA on the random model barely moves in that
time). Seeded: the same answers every run. Measured: after 240 steps it still answered every
question with the most common colour; after 480 all 32 eval questions right.
"""

from __future__ import annotations

import random
from typing import Any

ANIMALS = {
    "cat": "black", "dog": "brown", "frog": "green", "swan": "white", "crow": "black",
    "fox": "red", "sheep": "white", "canary": "yellow", "flamingo": "pink", "whale": "blue",
    "bear": "brown", "lion": "golden", "panther": "black", "parrot": "green", "crab": "red",
    "mouse": "grey",
}  # fmt: skip
TRAIN_QUESTIONS = ["What colour is the {}?", "Which colour is a {}?", "Colour of the {}?"]
EVAL_QUESTIONS = ["Tell me the colour of the {}.", "What is the colour of a {}?"]
VOCABULARY_WORDS = sorted({*ANIMALS, *ANIMALS.values()})
SAMPLES = 3  # questions `make run` shows answered by the base and the trained model


def conversation(question: str, animal: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": question.format(animal)},
            {"role": "assistant", "content": f"The {animal} is {ANIMALS[animal]}."},
        ]
    }


def demo_dataset_splits(seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """`train` and `eval` rows in the conversational format the trainer reads."""
    rng = random.Random(seed)
    train = [conversation(q, a) for a in ANIMALS for q in TRAIN_QUESTIONS]
    rng.shuffle(train)
    # Each animal in both phrasings, alternating, so the first few (the samples) differ in both.
    evaluation = [
        conversation(EVAL_QUESTIONS[(index + turn) % len(EVAL_QUESTIONS)], animal)
        for turn in range(len(EVAL_QUESTIONS))
        for index, animal in enumerate(ANIMALS)
    ]
    return {"train": train, "eval": evaluation}


def demo_request(model_uri: str, dataset_id: str) -> dict[str, Any]:
    """The demo job: Full SFT for 480 steps, evaluated each epoch; the base and the trained
    model answer the first eval questions, and every eval row is scored (exact match)."""
    return {
        "processed_dataset_id": dataset_id,
        "job_name": "demo: animal colours on a tiny Gemma 3",
        "training_config": {
            "base_model_id": model_uri,
            "method": "Full",
            "trainer_type": "sft",
            "modality": "text",
            "hyperparameters": {
                "learning_rate": 0.01,
                "lr_scheduler_type": "linear",
                "warmup_ratio": 0.1,
                "batch_size": 4,
                "gradient_accumulation_steps": 1,
                "epochs": 40,
                "max_seq_length": 64,
                "logging_steps": 4,
                "save_strategy": "no",
                "seed": 0,
            },
            "eval_config": {
                "eval_strategy": "epoch",
                "samples": SAMPLES,
                "scored_rows": len(ANIMALS) * len(EVAL_QUESTIONS),
                "sample_max_new_tokens": 12,
            },
            # Full fine-tuning exports the whole trained model as its "adapter" artifact.
            "export_config": {"format": "adapter", "destination": "gcs"},
        },
    }
