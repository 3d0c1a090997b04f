"""The demo job of `make run`: a small chat task a tiny Gemma learns in about a minute.

Each animal has one colour; the model learns to answer "What colour is the
X?" with "The X is Y." The eval split asks the same facts in other words, so
its loss falls only if the facts (not just the phrasing) were learned.
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
TRAIN_QUESTIONS = ["What colour is the {}?", "Which colour does the {} have?", "Colour of the {}?"]
EVAL_QUESTIONS = ["Tell me the colour of the {}.", "What is the colour of a {}?"]
SYSTEM = "Answer in one short sentence."


def conversation(question: str, animal: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question.format(animal)},
            {"role": "assistant", "content": f"The {animal} is {ANIMALS[animal]}."},
        ]
    }


def demo_dataset_splits(seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """`train` and `eval` rows in the conversational format the trainer reads."""
    rng = random.Random(seed)
    train = [conversation(q, a) for a in ANIMALS for q in TRAIN_QUESTIONS]
    rng.shuffle(train)
    evaluation = [conversation(q, a) for a in ANIMALS for q in EVAL_QUESTIONS]
    return {"train": train, "eval": evaluation}


def demo_request(model_uri: str, dataset_id: str) -> dict[str, Any]:
    """The demo job: LoRA SFT for a few dozen steps, evaluated, merged on export."""
    return {
        "processed_dataset_id": dataset_id,
        "job_name": "demo: animal colours on a tiny Gemma 3",
        "training_config": {
            "base_model_id": model_uri,
            "method": "LoRA",
            "trainer_type": "sft",
            "modality": "text",
            "hyperparameters": {
                "learning_rate": 0.01,
                "batch_size": 4,
                "gradient_accumulation_steps": 1,
                "epochs": 6,
                "max_seq_length": 128,
                "logging_steps": 2,
                "save_strategy": "epoch",
                "lora_rank": 16,
                "lora_alpha": 32,
                "lora_dropout": 0.0,
            },
            "eval_config": {"eval_strategy": "epoch"},
            "export_config": {"format": "merged", "destination": "gcs"},
        },
    }
