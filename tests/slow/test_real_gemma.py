"""Gemma 3 270M for real: a gs:// snapshot, LoRA SFT through the trainer, a GGUF that talks.

The snapshot (tests/slow/real_gemma.py) is uploaded to the emulated GCS, and one job runs the
real trainer pipeline on it in-process (config in GCS -> events on Pub/Sub -> artifacts in
GCS): LoRA on a dozen capital-city facts in a fixed answer format, evaluated on held-out
countries, exported as a verified q8_0 GGUF. The GGUF is then loaded back with transformers
and must answer a trained question, in the trained format, and continue plain text coherently.
See docs/slow-tests.md for the command, the runtime and what was observed.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import TrainerStack, to_jsonl
from tuning.events import CompletedEvent, EvaluationEvent, JobEvent, ProgressEvent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

QUESTION = "What is the capital of {country}?"
ANSWER = "The capital of {country} is {city}."
# Trained facts; the model knows most of them already and learns the answer format.
TRAIN_FACTS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Germany": "Berlin",
    "Spain": "Madrid",
    "Egypt": "Cairo",
    "Russia": "Moscow",
    "China": "Beijing",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Austria": "Vienna",
}
# The held-out split: countries the job never trains on.
EVAL_FACTS = {
    "Norway": "Oslo",
    "Poland": "Warsaw",
    "Cuba": "Havana",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Sweden": "Stockholm",
}
# 6-12 s a step on 2 shared cores (batch 2, ~25 tokens a row; the 262k-token LM head dominates).
# 1e-3 learns the format in a few steps; 2e-3 (16 steps, in a trial) made every answer one word.
HYPERPARAMETERS = {
    "learning_rate": 1e-3,
    "batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_steps": 8,
    "packing": False,
    "max_seq_length": 64,
    "lr_scheduler_type": "constant",
    "save_strategy": "no",
    "logging_steps": 2,
    "lora_rank": 16,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "seed": 7,
}
QUANTIZATION = "q8_0"
NEW_TOKENS = 20
# Coherence, measured: the share of ASCII letters and spaces, distinct words, and the longest
# run of one token (a broken GGUF tends to repeat one token or emit byte soup).
MIN_LETTER_SHARE = 0.8
MIN_DISTINCT_WORDS = 3
MAX_TOKEN_RUN = 3
GENERIC_PROMPT = "Once upon a time, a little fox"


def fact_rows(facts: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": QUESTION.format(country=country)},
                {"role": "assistant", "content": ANSWER.format(country=country, city=city)},
            ]
        }
        for country, city in facts.items()
    ]


def training_request(base_model_id: str) -> dict[str, Any]:
    return {
        "processed_dataset_id": "capitals",
        "job_name": "gemma 3 270m capitals",
        "training_config": {
            "base_model_id": base_model_id,
            "method": "LoRA",
            "trainer_type": "sft",
            "modality": "text",
            "hyperparameters": HYPERPARAMETERS,
            "export_config": {
                "format": "adapter",
                "destination": "gcs",
                "include_gguf": True,
                "gguf_quantization": QUANTIZATION,
            },
            "eval_config": {"eval_strategy": "steps", "eval_steps": 2},
        },
    }


@dataclass
class FinishedJob:
    stack: TrainerStack
    job_id: str
    exit_code: int
    events: list[JobEvent]

    def of_type(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    @property
    def completed(self) -> CompletedEvent:
        completed = self.of_type(CompletedEvent)
        assert completed, f"the job did not complete: {[e.type.value for e in self.events]}"
        return completed[0]


@pytest.fixture(scope="module")
def job(
    emulators: dict[str, str],
    real_gemma: Path,
    llama_cpp_sources: None,
    tmp_path_factory: pytest.TempPathFactory,
    report: dict[str, Any],
) -> FinishedJob:
    from trainer.main import main

    root = tmp_path_factory.mktemp("real-gemma-job")
    stack = TrainerStack(
        project=emulators["GOOGLE_CLOUD_PROJECT"],
        unique=uuid.uuid4().hex[:10],
        work_dir=root / "work",
        secrets_file=root / "secrets.json",
    )
    stack.upload_dataset(
        "capitals",
        {
            "train.jsonl": to_jsonl(fact_rows(TRAIN_FACTS)),
            "validation.jsonl": to_jsonl(fact_rows(EVAL_FACTS)),
        },
    )
    request = training_request(stack.upload_model(real_gemma, "gemma-3-270m"))
    job_id = stack.submit(request)
    started = time.monotonic()
    exit_code = main(settings=stack.settings(job_id), services=stack.services(job_id))
    seconds = time.monotonic() - started
    report["training job"] = f"exit {exit_code} in {seconds:.0f} s (training, export, GGUF check)"
    return FinishedJob(stack, job_id, exit_code, stack.pull_events(job_id))


def test_job_completes_with_a_gguf_file(job: FinishedJob, report: dict[str, Any]) -> None:
    artifacts = job.completed.payload.artifacts
    uri = artifacts.gguf_files.get(QUANTIZATION)
    progress = [event.payload for event in job.of_type(ProgressEvent)]

    assert job.exit_code == 0
    assert uri == job.stack.settings(job.job_id).layout.gguf_uri(job.job_id, QUANTIZATION)
    assert job.stack.storage.list(uri) == [uri]
    assert progress and progress[-1].step == HYPERPARAMETERS["max_steps"]
    report["train loss by step"] = {p.step: round(p.loss, 3) for p in progress if p.loss}


def test_eval_loss_on_held_out_countries_fell(
    job: FinishedJob, real_gemma: Path, report: dict[str, Any]
) -> None:
    from transformers import AutoTokenizer

    from tests.trainer.reference import load_causal_lm, reference_eval

    evaluations = [e.payload.metrics for e in job.of_type(EvaluationEvent)]
    losses = {m.step: round(m.eval_loss, 3) for m in evaluations}
    base_loss, base_accuracy = reference_eval(
        load_causal_lm(real_gemma),
        AutoTokenizer.from_pretrained(real_gemma),
        fact_rows(EVAL_FACTS),
    )
    final = job.completed.payload.metrics
    report["eval loss"] = f"base {base_loss:.3f}, by step {losses}, final {final.eval_loss:.3f}"
    report["eval token accuracy"] = f"base {base_accuracy:.3f}, final {final.accuracy:.3f}"
    report["train runtime"] = f"{final.train_runtime:.0f} s for {final.step} steps"

    assert len(evaluations) >= 2, losses
    assert evaluations[-1].eval_loss < evaluations[0].eval_loss, losses
    assert final.eval_loss < base_loss / 2, (base_loss, final.eval_loss)


# ---------------------------------------------------------------------------------------------
# The exported GGUF, loaded back and generating


@dataclass
class Generation:
    prompt: str
    token_ids: list[int]  # the new tokens only
    text: str  # decoded, special tokens dropped
    answer: str  # the text before the first special token (the end of the model's turn)
    stopped_by: str | None  # that special token


class GgufChat:
    """The exported GGUF loaded with transformers (model and tokenizer both from the file)."""

    def __init__(self, gguf_path: Path, config_dir: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        directory, name = gguf_path.parent, gguf_path.name
        self.tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        # GGUF does not store query_pre_attn_scalar, layer_types or the rope types.
        config = AutoConfig.from_pretrained(config_dir)
        self.model = AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=name, config=config, dtype=torch.float32
        ).eval()
        self.special_ids = {
            token_id
            for token_id, token in self.tokenizer.added_tokens_decoder.items()
            if token.special
        }

    def chat_ids(self, question: str) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text).input_ids

    def generate(self, prompt: str, ids: list[int]) -> Generation:
        import torch

        end_of_turn = self.tokenizer.convert_tokens_to_ids("<end_of_turn>")
        with torch.no_grad():
            output = self.model.generate(
                torch.tensor([ids]),
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                eos_token_id=[self.tokenizer.eos_token_id, end_of_turn],
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = output[0, len(ids) :].tolist()
        cut = next((i for i, token in enumerate(new) if token in self.special_ids), len(new))
        return Generation(
            prompt=prompt,
            token_ids=new,
            text=self.tokenizer.decode(new, skip_special_tokens=True),
            answer=self.tokenizer.decode(new[:cut], skip_special_tokens=True).strip(),
            stopped_by=self.tokenizer.convert_ids_to_tokens(new[cut]) if cut < len(new) else None,
        )


def coherence_problems(generation: Generation) -> list[str]:
    """What makes the generated text incoherent by the measurable criteria; empty when none."""
    text = generation.text
    problems = []
    letters = sum(c.isascii() and (c.isalpha() or c.isspace()) for c in text)
    if not text.strip() or letters / len(text) < MIN_LETTER_SHARE:
        problems.append(f"only {letters}/{len(text)} characters are ASCII letters or spaces")
    words = set(re.findall(r"[a-z]+", text.lower()))
    if len(words) < MIN_DISTINCT_WORDS:
        problems.append(f"only {len(words)} distinct words")
    run, longest = 1, 1
    for previous, token in zip(generation.token_ids, generation.token_ids[1:], strict=False):
        run = run + 1 if token == previous else 1
        longest = max(longest, run)
    if longest > MAX_TOKEN_RUN:
        problems.append(f"one token repeated {longest} times in a row")
    return problems


@pytest.fixture(scope="module")
def gguf_chat(
    job: FinishedJob,
    real_gemma: Path,
    tmp_path_factory: pytest.TempPathFactory,
    report: dict[str, Any],
) -> GgufChat:
    uri = job.completed.payload.artifacts.gguf_files[QUANTIZATION]
    path = tmp_path_factory.mktemp("gguf") / uri.rsplit("/", 1)[-1]
    path.write_bytes(job.stack.storage.download_bytes(uri))
    started = time.monotonic()
    chat = GgufChat(path, config_dir=real_gemma)
    report["gguf"] = f"{uri}: {path.stat().st_size / 2**20:.0f} MiB, loaded in " + (
        f"{time.monotonic() - started:.0f} s"
    )
    return chat


def test_gguf_vocabulary_tokenizes_like_the_base_model(
    gguf_chat: GgufChat, real_gemma: Path
) -> None:
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(real_gemma)
    question = QUESTION.format(country="France")
    chat = base.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )

    assert gguf_chat.chat_ids(question) == base(chat, add_special_tokens=False).input_ids
    assert gguf_chat.text_ids(GENERIC_PROMPT) == base(GENERIC_PROMPT).input_ids


@pytest.mark.parametrize(
    ("country", "trained"), [("France", True), ("Norway", False)], ids=["trained", "held-out"]
)
def test_gguf_answers_a_fact_in_the_trained_format(
    gguf_chat: GgufChat, country: str, trained: bool, report: dict[str, Any]
) -> None:
    city = (TRAIN_FACTS if trained else EVAL_FACTS)[country]
    question = QUESTION.format(country=country)
    generation = gguf_chat.generate(question, gguf_chat.chat_ids(question))
    report[f"gguf, {'trained' if trained else 'held-out'} fact {question!r}"] = (
        f"{generation.text!r} (answer {generation.answer!r}, ended by {generation.stopped_by})"
    )

    assert coherence_problems(generation) == [], generation.text
    assert generation.answer.startswith(f"The capital of {country} is"), generation.answer
    if trained:  # a held-out country's city is what the 270M model knows: reported, not required
        assert city in generation.answer, generation.answer


def test_gguf_continues_plain_text_coherently(gguf_chat: GgufChat, report: dict[str, Any]) -> None:
    generation = gguf_chat.generate(GENERIC_PROMPT, gguf_chat.text_ids(GENERIC_PROMPT))
    report[f"gguf, generic prompt {GENERIC_PROMPT!r}"] = repr(generation.text)

    assert coherence_problems(generation) == [], generation.text
