"""The validation before any GPU reads a `gs://` model's files, which whoever uploaded the
model wrote: a file that cannot be parsed is that model's user error (`model_unreadable`,
naming training_config.base_model_id), never an exception. An exception fails dispatch's
delivery, so Pub/Sub redelivers it until it is dead-lettered and reconcile republishes it,
with the job `validating` all along, and makes `POST /train:estimate` answer 500.

A model without a chat template (a pretrained checkpoint) is trained with the Gemma template
the trainer brings (trainer/modeling.py): its chat rows are checked, not counted.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from tuning.errors import NotFoundError
from tuning.failures import PermanentError
from tuning.jobs import Validation
from tuning.preflight import ModelUnreadableError, read_tokenizer, validate_dataset
from tuning.spec import parse_train_request

MODEL = "gs://models-bucket/base_models/uploaded/"
DATASET = "gs://data-bucket/processed_datasets/ds/"
TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
ROWS = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
] * 3


class Store:
    """Just what the validation reads: listings and objects."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def list(self, prefix: str) -> list[str]:
        return sorted(uri for uri in self.objects if uri.startswith(prefix))

    def download_bytes(self, uri: str) -> bytes:
        if uri not in self.objects:
            raise NotFoundError(uri)
        return self.objects[uri]

    def open_read(self, uri: str) -> io.BytesIO:
        return io.BytesIO(self.download_bytes(uri))


def tokenizer_json() -> bytes:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "hi": 1, "yo": 2, "<": 3, ">": 4}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str().encode()


def model_files(**replaced: bytes | None) -> dict[str, bytes]:
    files: dict[str, bytes | None] = {
        "config.json": json.dumps({"model_type": "gemma3_text"}).encode(),
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": json.dumps({"eos_token": "[UNK]"}).encode(),
        "chat_template.jinja": TEMPLATE.encode(),
    }
    files.update({name.replace("__", "."): data for name, data in replaced.items()})
    return {name: data for name, data in files.items() if data is not None}


def validate(files: dict[str, bytes], rows: list[dict[str, Any]] = ROWS) -> Validation:
    objects = {MODEL + name: data for name, data in files.items()}
    objects[DATASET + "train.jsonl"] = "\n".join(json.dumps(row) for row in rows).encode()
    storage: Any = Store(objects)
    request = parse_train_request(
        {
            "processed_dataset_id": "ds",
            "training_config": {
                "base_model_id": MODEL,
                "method": "LoRA",
                "trainer_type": "sft",
                "modality": "text",
                "hyperparameters": {"epochs": 1, "batch_size": 1},
            },
        }
    )
    return validate_dataset(
        request.training_config,
        dataset_prefix=DATASET,
        storage=storage,
        tokenizing=lambda: read_tokenizer(MODEL, storage=storage, hf_token=None),
        evaluate=False,
    )


def test_a_readable_model_is_counted() -> None:
    validation = validate(model_files())
    assert validation.train.rows == 3
    assert validation.train.tokens is not None and validation.train.tokens > 0


@pytest.mark.parametrize(
    "replaced",
    [
        {"tokenizer__json": b"{not json"},
        {"tokenizer__json": b"\xff\xfe not utf-8"},
        {"tokenizer__json": b"[1, 2, 3]"},
        {"tokenizer_config__json": b"{not json"},
        {"tokenizer_config__json": b"\xff"},
        {"chat_template__jinja": b"\xff\xfe"},
    ],
    ids=[
        "tokenizer-json",
        "tokenizer-utf8",
        "tokenizer-shape",
        "config-json",
        "config-utf8",
        "template-utf8",
    ],
)
def test_an_unparsable_tokenizer_file_is_the_models_user_error(replaced: dict[str, bytes]) -> None:
    with pytest.raises(ModelUnreadableError) as raised:
        validate(model_files(**replaced))
    assert raised.value.message.startswith("training_config.base_model_id: ")
    assert MODEL in raised.value.message
    assert isinstance(raised.value, PermanentError)


def test_a_template_that_does_not_compile_is_the_models_error_not_every_rows() -> None:
    with pytest.raises(ModelUnreadableError, match=r"chat template of .* \(it does not compile"):
        validate(model_files(chat_template__jinja=b"{% for %}"))


def test_a_template_that_raises_is_still_the_rows_error() -> None:
    template = (
        b"{% if messages[0].role != 'system' %}"
        b"{{ raise_exception('needs a system turn') }}{% endif %}"
    )
    with pytest.raises(PermanentError, match=r"row 0, field 'messages'.*needs a system turn"):
        validate(model_files(chat_template__jinja=template))


def test_a_model_without_a_chat_template_checks_its_rows_and_leaves_counting() -> None:
    validation = validate(model_files(chat_template__jinja=None))
    assert validation.train.rows == 3
    assert validation.train.tokens is None
    assert validation.tokens_note and "no chat template" in validation.tokens_note


@pytest.mark.parametrize(
    "template",
    [
        # The sandbox caps range() at 100,000 but not nested loops: 10^10 iterations.
        b"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        # Gigabytes of string, which the sandbox does not refuse either.
        b"{{ 'a' * 3000000000 }}",
    ],
    ids=["hours-of-loops", "gigabytes-of-string"],
)
def test_a_template_that_would_hold_the_function_is_stopped_and_the_rows_still_checked(
    template: bytes,
) -> None:
    import time

    from tuning import preflight

    objects = {
        MODEL + name: data for name, data in model_files(chat_template__jinja=template).items()
    }
    objects[DATASET + "train.jsonl"] = "\n".join(json.dumps(row) for row in ROWS).encode()
    storage: Any = Store(objects)
    request = parse_train_request(
        {"processed_dataset_id": "ds", "training_config": {"base_model_id": MODEL}}
    )
    started = time.monotonic()

    validation = preflight.validate_dataset(
        request.training_config,
        dataset_prefix=DATASET,
        storage=storage,
        tokenizing=lambda: read_tokenizer(MODEL, storage=storage, hf_token=None),
        evaluate=False,
        counting_seconds=5,
    )

    assert time.monotonic() - started < 20  # the worker was stopped, not waited for
    assert validation.train.rows == 3 and validation.train.tokens is None
    assert (
        validation.tokens_note is not None and "the trainer counts tokens" in validation.tokens_note
    )
