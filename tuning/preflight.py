"""The validation before any GPU: a job's dataset checked and its tokens counted, on CPU.

Dispatch runs it on a job's first delivery (the job is `validating`), and the estimate route
(`POST /train:estimate`) on a request, creating nothing. It reads what the trainer would read:
the dataset's split files (tuning.dataset: the same split choice, row rules and messages as the
trainer's) and the base model's tokenizer files, and it counts tokens as the trainer's trainers
tokenize (tuning.dataset.tokens). A missing dataset, a bad row or a base model snapshot that
cannot be read is a user error here, before a GPU is claimed; the trainer still re-checks.

A split is read in chunks (tuning.dataset.splits.row_chunks) and only each row's length is
kept, so a split of a million rows needs its file's bytes and a list of ints, not a million
Python rows.

What it cannot read without the job's Hugging Face token (a gated Hub model's tokenizer, in
dispatch, which is not given the job's secrets) it leaves to the trainer and says so
(`tokens_note`); rows are still checked.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from tuning.dataset.isolated import CountingLimitError, IsolatedCounter, UnreadableModelFiles
from tuning.dataset.rows import RowFormat, RowNormalizer, validate_rows
from tuning.dataset.rules import UnsupportedPairError, evaluation_enabled, row_rules
from tuning.dataset.splits import SplitFile, choose_splits, row_chunks, split_files
from tuning.dataset.tokens import TOKENIZER_FILE, TOKENIZER_FILES, CannotCountError
from tuning.errors import NotFoundError
from tuning.failures import DatasetError, UserError
from tuning.gcp.storage import GcsStore
from tuning.jobs import DatasetStats, SplitCounts, Validation, utcnow
from tuning.layout import StorageLayout
from tuning.spec import Modality, TrainerType, TrainingConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
# TRL packs a dataset with `datasets.map(batched=True)`: best-fit decreasing within each batch
# of this many rows (datasets' default batch_size).
PACKING_BATCH_ROWS = 1000
DEFAULT_HOLDOUT = 0.1
# How long counting may take in all (tuning.dataset.isolated's deadline): inside dispatch's
# 540 s with room for reading the splits; the estimate route passes its own.
COUNTING_SECONDS = 420.0
HUB = "https://huggingface.co"
HUB_TIMEOUT_SECONDS = 20
# How much of a parser's complaint about a model's file an error message quotes.
MAX_QUOTED = 200


class ModelUnreadableError(UserError):
    """The base model snapshot cannot be read (no config.json, no such folder)."""

    code = "model_unreadable"


class UnsupportedJobError(UserError):
    code = "unsupported"


class RowCounter(Protocol):
    def row_lengths(
        self,
        rows: list[dict[str, Any]],
        row_format: RowFormat,
        *,
        split: SplitFile,
        max_length: int | None = None,
        first_row: int = 0,
    ) -> list[int]: ...


@dataclass(frozen=True)
class Tokenizing:
    """What to count with: a model's tokenizer files, which are counted in a child process
    with limits (tuning.dataset.isolated: they are whatever the model's uploader wrote), or a
    counter of trusted files in this process (benchmarks); or neither, and why."""

    files: Mapping[str, bytes] | None = None
    source: str = ""
    from_hub: bool = False  # the Hub's files are the trainer's to judge: unreadable is a note
    note: str | None = None
    counter: RowCounter | None = None


def read_tokenizer(base_model_id: str, *, storage: GcsStore, hf_token: str | None) -> Tokenizing:
    """The base model's tokenizer: a `gs://` snapshot's files, or the Hub's (with `hf_token`,
    anonymously without)."""
    if base_model_id.startswith("gs://"):
        return _snapshot_tokenizer(base_model_id, storage)
    return _hub_tokenizer(base_model_id, hf_token)


def _snapshot_tokenizer(prefix: str, storage: GcsStore) -> Tokenizing:
    prefix = prefix if prefix.endswith("/") else f"{prefix}/"
    try:
        names = {uri[len(prefix) :] for uri in storage.list(prefix)}
    except NotFoundError:
        names = set()
    if CONFIG_FILE not in names:
        raise ModelUnreadableError(
            f"training_config.base_model_id: {prefix} holds no {CONFIG_FILE}, so it is not a "
            "model snapshot; upload the model folder there (`tuning models upload DIR --to "
            f"{prefix}`) or name another"
        )
    files = {
        name: storage.download_bytes(prefix + name) for name in TOKENIZER_FILES if name in names
    }
    if TOKENIZER_FILE not in files:
        return Tokenizing(note=f"{prefix} has no {TOKENIZER_FILE}; the trainer counts tokens")
    return Tokenizing(files=files, source=prefix)


def _hub_tokenizer(repo_id: str, hf_token: str | None) -> Tokenizing:
    """The tokenizer files from the Hub's `resolve` URLs, one bounded try each: a function
    must not spend its delivery on the Hub's retries, and the trainer counts when this fails.
    HF_HUB_OFFLINE and HF_ENDPOINT mean what they mean to huggingface_hub."""
    import requests

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return Tokenizing(note="the Hub is off here (HF_HUB_OFFLINE); the trainer counts tokens")
    endpoint = os.environ.get("HF_ENDPOINT", HUB).rstrip("/")
    headers = {"Authorization": f"Bearer {hf_token}"} if hf_token else {}
    files: dict[str, bytes] = {}
    for name in TOKENIZER_FILES:
        url = f"{endpoint}/{repo_id}/resolve/main/{name}"
        try:
            answer = requests.get(url, headers=headers, timeout=HUB_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            logger.info("the Hub could not be reached for %s: %s", repo_id, type(error).__name__)
            return Tokenizing(note="the Hub could not be reached; the trainer counts tokens")
        if answer.status_code == 404 and name != TOKENIZER_FILE:
            continue  # an optional file this model does not have
        if answer.status_code != 200:  # gated without a token, private, or not found
            return Tokenizing(
                note=f"the Hub did not give {repo_id}'s tokenizer (HTTP {answer.status_code}: a "
                "gated or private model is read with the job's token by the trainer, which "
                "counts tokens then)",
            )
        files[name] = answer.content
    return Tokenizing(files=files, source=repo_id, from_hub=True)


# The dataset --------------------------------------------------------------------------------


@dataclass
class _SplitRead:
    file: SplitFile
    row_format: RowFormat
    lengths: list[int] | None  # tokens per row; None: not counted
    rows: int
    note: str | None = None  # why its tokens were not counted, when the model's files say


def validate_dataset(
    config: TrainingConfig,
    *,
    dataset_prefix: str,
    storage: GcsStore,
    tokenizing: Callable[[], Tokenizing],
    evaluate: bool,
    counting_seconds: float = COUNTING_SECONDS,
) -> Validation:
    """Check every row of the splits the trainer will read and count their tokens.

    `tokenizing` is called once the dataset is found: a job naming no dataset fails without
    a read of its model. Counting stops after `counting_seconds` (or when its worker hits a
    limit): the rows are still checked, and the note says the trainer counts the tokens.
    """
    try:
        normalize = row_rules(config.trainer_type, config.modality, config.reward_config)
    except UnsupportedPairError as error:
        raise UnsupportedJobError(str(error)) from None
    try:
        files = split_files(storage.list(dataset_prefix), dataset_prefix)
    except NotFoundError:
        files = []
    if not files:
        raise DatasetError(
            f"no dataset found: {dataset_prefix} holds no .parquet or .jsonl split files "
            "(processed_dataset_id; upload one with `tuning datasets upload FILE --id ID`)"
        )
    train_file, eval_file = choose_splits(files)
    with _opened(tokenizing(), seconds=counting_seconds) as (tokenizer, tokens_note):
        return _validate_splits(
            config,
            storage=storage,
            normalize=normalize,
            tokenizer=tokenizer,
            tokens_note=tokens_note,
            train_file=train_file,
            eval_file=eval_file,
            evaluate=evaluate,
        )


def validate_request(
    config: TrainingConfig,
    *,
    dataset_id: str,
    layout: StorageLayout,
    storage: GcsStore,
    hf_token: str | None,
    counting_seconds: float = COUNTING_SECONDS,
) -> Validation:
    """`validate_dataset` for a job's request: its dataset in the deployment's data bucket,
    counted with its base model's tokenizer, its eval split read when it evaluates."""
    return validate_dataset(
        config,
        dataset_prefix=layout.dataset_prefix(dataset_id),
        storage=storage,
        tokenizing=functools.partial(
            read_tokenizer, config.base_model_id, storage=storage, hf_token=hf_token
        ),
        evaluate=evaluation_enabled(config),
        counting_seconds=counting_seconds,
    )


@contextlib.contextmanager
def _opened(
    counting: Tokenizing, *, seconds: float
) -> Iterator[tuple[RowCounter | None, str | None]]:
    """The counter of `counting` (its worker started, stopped after), and its note."""
    if counting.counter is not None or counting.files is None:
        yield counting.counter, counting.note
        return
    try:
        counter = IsolatedCounter(counting.files, seconds=seconds)
    except UnreadableModelFiles as error:
        if counting.from_hub:  # the trainer reads the Hub's files itself
            logger.info("%s's tokenizer is unreadable here: %s", counting.source, error)
            yield (
                None,
                f"{counting.source}'s tokenizer could not be read here; the trainer counts tokens",
            )
            return
        what = "chat template" if error.template else "tokenizer files"
        raise ModelUnreadableError(
            f"training_config.base_model_id: the {what} of {counting.source} cannot be read "
            f"({str(error)[:MAX_QUOTED]}); upload the model folder again or name another"
        ) from None
    except CountingLimitError as error:
        yield None, f"{error}; the trainer counts tokens"
        return
    with counter:
        yield counter, counting.note


def _validate_splits(
    config: TrainingConfig,
    *,
    storage: GcsStore,
    normalize: RowNormalizer,
    tokenizer: RowCounter | None,
    tokens_note: str | None,
    train_file: SplitFile,
    eval_file: SplitFile | None,
    evaluate: bool,
) -> Validation:
    hp = config.hyperparameters
    train = _read_split(train_file, storage, normalize, tokenizer, max_length=hp.max_seq_length)
    limit = hp.max_prompt_length if config.trainer_type is TrainerType.GRPO else hp.max_seq_length
    eval_counts: SplitCounts | None = None
    train_lengths = train.lengths
    train_rows = train.rows
    if evaluate and eval_file is not None:
        read = _read_split(
            eval_file,
            storage,
            normalize,
            tokenizer if train.lengths is not None else None,
            max_length=hp.max_seq_length,
            expected=train.row_format,
        )
        eval_counts = _counts(eval_file.uri, read.rows, read.lengths, limit)
    elif evaluate:
        fraction = (
            config.eval_config.eval_holdout_fraction if config.eval_config else DEFAULT_HOLDOUT
        )
        held = held_out_rows(train.rows, fraction, hp.seed)
        kept = [length for index, length in enumerate(train.lengths or []) if index not in held]
        out = [length for index, length in enumerate(train.lengths or []) if index in held]
        source = f"{fraction:.0%} of {train_file.uri} held out (seed {hp.seed})"
        eval_counts = _counts(source, len(held), out if train.lengths is not None else None, limit)
        train_lengths = kept if train.lengths is not None else None
        train_rows = train.rows - len(held)
    packing = (
        hp.packing and config.trainer_type is TrainerType.SFT and config.modality is Modality.TEXT
    )
    packed = packed_rows(train_lengths, limit) if packing and train_lengths is not None else None
    sequences = packed if packing else train_rows
    steps_per_epoch, total_steps = training_steps(config, sequences)
    train_counts = _counts(train_file.uri, train_rows, train_lengths, limit)
    tokens_to_train = None
    if train_counts.tokens is not None and steps_per_epoch:
        tokens_to_train = round(train_counts.tokens * (total_steps or 0) / steps_per_epoch)
    return Validation(
        row_format=train.row_format.value,
        train=train_counts,
        eval=eval_counts,
        token_limit=limit,
        tokens_note=tokens_note or train.note,
        packed_rows=packed,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        tokens_to_train=tokens_to_train,
        validated_at=utcnow(),
    )


def _read_split(
    file: SplitFile,
    storage: GcsStore,
    normalize: RowNormalizer,
    tokenizer: RowCounter | None,
    *,
    max_length: int,
    expected: RowFormat | None = None,
) -> _SplitRead:
    try:
        data = storage.open_read(file.uri)  # read as it goes: a split may be gigabytes
    except NotFoundError:  # deleted between the listing and the read
        raise DatasetError(f"split '{file.name}' ({file.uri}) is gone; upload it again") from None
    with data:
        return _check_chunks(data, file, normalize, tokenizer, max_length, expected)


def _check_chunks(
    data: BinaryIO,
    file: SplitFile,
    normalize: RowNormalizer,
    tokenizer: RowCounter | None,
    max_length: int,
    expected: RowFormat | None,
) -> _SplitRead:
    row_format = expected
    lengths: list[int] | None = [] if tokenizer is not None else None
    note = None
    count = 0
    for chunk in row_chunks(data, file):
        row_format, rows = validate_rows(
            chunk, split=file, normalize=normalize, expected_format=row_format, first_row=count
        )
        if lengths is not None and tokenizer is not None:
            try:
                lengths += tokenizer.row_lengths(
                    rows, row_format, split=file, max_length=max_length, first_row=count
                )
            except (CannotCountError, CountingLimitError) as error:  # rows are still checked
                lengths, note = None, f"{error}; the trainer counts tokens"
        count += len(chunk)
    if row_format is None or count == 0:
        raise DatasetError(f"split '{file.name}' ({file.uri}) has no rows")
    return _SplitRead(file, row_format, lengths, count, note)


def _counts(source: str, rows: int, lengths: list[int] | None, limit: int) -> SplitCounts:
    if lengths is None:
        return SplitCounts(source=source, rows=rows)
    return SplitCounts(
        source=source,
        rows=rows,
        tokens=sum(min(length, limit) for length in lengths),
        truncated_rows=sum(length > limit for length in lengths),
        longest=max(lengths, default=0),
    )


def held_out_rows(rows: int, fraction: float, seed: int) -> set[int]:
    """The row indices the trainer holds out for evaluation (tuning.dataset.splits.holdout)."""
    if rows < 2:
        raise DatasetError("evaluation needs an eval split or at least 2 training rows to hold out")
    count = min(rows - 1, max(1, round(rows * fraction)))
    return set(random.Random(seed).sample(range(rows), count))


def packed_rows(lengths: Iterable[int], seq_length: int) -> int:
    """How many sequences TRL's best-fit-decreasing packing makes (rows cut at `seq_length`,
    packed within each batch of PACKING_BATCH_ROWS rows, as `pack_dataset(strategy="bfd")`)."""
    values = [min(length, seq_length) for length in lengths if length > 0]
    total = 0
    for start in range(0, len(values), PACKING_BATCH_ROWS):
        spaces: list[int] = []  # the free space of each open sequence, sorted
        for length in sorted(values[start : start + PACKING_BATCH_ROWS], reverse=True):
            at = bisect_left(spaces, length)  # the fullest sequence it still fits in
            if at < len(spaces):
                space = spaces.pop(at) - length
            else:
                total += 1
                space = seq_length - length
            if space > 0:
                insort(spaces, space)
    return total


def training_steps(config: TrainingConfig, sequences: int | None) -> tuple[int | None, int | None]:
    """(optimizer steps per epoch, in total) as transformers' Trainer counts them: a dataloader
    of ceil(sequences / batch_size) micro-batches, ceil(that / gradient_accumulation_steps)
    steps per epoch, ceil(epochs x that) in all; `max_steps` overrides the total."""
    hp = config.resolved_hyperparameters
    if sequences is None:
        return None, hp.max_steps if hp.max_steps and hp.max_steps > 0 else None
    batches = math.ceil(sequences / hp.batch_size)
    per_epoch = max(1, math.ceil(batches / hp.gradient_accumulation_steps))
    if hp.max_steps and hp.max_steps > 0:
        return per_epoch, hp.max_steps
    return per_epoch, math.ceil(hp.epochs * per_epoch)


def dataset_stats(validation: Validation) -> DatasetStats | None:
    """The job's `dataset_stats` as the trainer reports them, from a validation that counted."""
    train = validation.train
    if train.tokens is None:
        return None
    return DatasetStats(
        train_rows=train.rows,
        eval_rows=validation.eval.rows if validation.eval else 0,
        train_tokens=train.tokens,
        truncated_rows=train.truncated_rows or 0,
    )


def describe(validation: Validation) -> str:
    """One line for the job's status_reason."""
    train = validation.train
    tokens = f", {train.tokens} tokens" if train.tokens is not None else ""
    cut = (
        f", {train.truncated_rows} rows cut at {validation.token_limit}"
        if train.truncated_rows
        else ""
    )
    steps = f"; {validation.total_steps} steps" if validation.total_steps else ""
    return f"validated: {train.rows} training rows{tokens}{cut}{steps}"
