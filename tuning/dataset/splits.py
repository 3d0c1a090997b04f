"""A dataset's split files: which files are its splits, how their rows are read, the hold-out.

Pure Python (pyarrow for parquet): the CLI, the pre-GPU validation in dispatch and the trainer
all read datasets through here, so a split is the same split everywhere.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from tuning.failures import DatasetError

TRAIN_SPLIT_NAMES = ("train", "training")
EVAL_SPLIT_NAMES = ("test", "validation", "eval", "evaluation")
# Parquet first: when a split exists in both formats, the typed one wins.
SUFFIXES = (".parquet", ".jsonl")
MAX_REPORTED_PROBLEMS = 5
# The longest JSONL line read (a row with its images as base64 fits many times over).
MAX_LINE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class SplitFile:
    name: str  # the file's stem as written, e.g. "Validation"
    uri: str
    suffix: str


def split_files(uris: Iterable[str], prefix: str) -> list[SplitFile]:
    """The dataset's split files directly below `prefix`, sorted by name, one per split."""
    chosen: dict[str, SplitFile] = {}
    for uri in sorted(uris):
        relative = uri[len(prefix) :]
        if "/" in relative:
            continue
        for suffix in SUFFIXES:
            if relative.lower().endswith(suffix) and len(relative) > len(suffix):
                name = relative[: -len(suffix)]
                current = chosen.get(name.lower())
                if current is None or SUFFIXES.index(suffix) < SUFFIXES.index(current.suffix):
                    chosen[name.lower()] = SplitFile(name=name, uri=uri, suffix=suffix)
    return [chosen[key] for key in sorted(chosen)]


def choose_splits(files: list[SplitFile]) -> tuple[SplitFile, SplitFile | None]:
    """(train, eval) by the seed's names; with no train split the first split trains."""
    if not files:
        raise DatasetError("the dataset has no split files (expected {split}.parquet or .jsonl)")
    by_name = {file.name.lower(): file for file in files}
    train = next((by_name[name] for name in TRAIN_SPLIT_NAMES if name in by_name), files[0])
    evaluation = next(
        (by_name[n] for n in EVAL_SPLIT_NAMES if n in by_name and by_name[n] is not train), None
    )
    return train, evaluation


def read_rows(data: bytes, file: SplitFile) -> list[Any]:
    """The rows of a parquet or JSONL file, as plain Python values."""
    return [row for chunk in row_chunks(data, file) for row in chunk]


def row_chunks(data: bytes | BinaryIO, file: SplitFile, size: int = 10_000) -> Iterator[list[Any]]:
    """The rows of a parquet or JSONL file (its bytes, or a binary file read as it goes) in
    chunks of `size`, so that a large split is checked without holding every row as Python
    objects at once. Every broken JSONL line is counted (the first few shown) once the file is
    read; a line over MAX_LINE_BYTES is refused (a row that large is no training example)."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    if file.suffix == ".jsonl":
        yield from _jsonl_chunks(source, file, size)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source)
        for batch in parquet.iter_batches(batch_size=size):
            yield batch.to_pylist()
    except (pa.ArrowInvalid, OSError) as error:
        raise DatasetError(
            f"split '{file.name}' ({file.uri}) is not a readable parquet file: {error}"
        ) from None


def _jsonl_chunks(source: BinaryIO, file: SplitFile, size: int) -> Iterator[list[Any]]:
    rows: list[Any] = []
    bad: list[str] = []
    # Line by line: a decoded copy of a large file and a list of its lines would each cost as
    # much memory as the file again.
    index = 0
    while raw := source.readline(MAX_LINE_BYTES + 1):
        index += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise DatasetError(
                f"split '{file.name}' ({file.uri}): line {index} is longer than "
                f"{MAX_LINE_BYTES // 2**20} MiB; a row is one training example"
            )
        line = raw.decode("utf-8", errors="replace")
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            bad.append(f"line {index}: not valid JSON ({error.msg})")
        if len(rows) == size and not bad:
            yield rows
            rows = []
    if bad:
        shown = bad[:MAX_REPORTED_PROBLEMS]
        more = len(bad) - len(shown)
        tail = f" (and {more} more bad line{'s' if more > 1 else ''})" if more else ""
        raise DatasetError(f"split '{file.name}' ({file.uri}): " + "; ".join(shown) + tail)
    if rows:
        yield rows


def holdout(
    rows: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, eval): a seeded share of the rows held out for evaluation, order kept."""
    if len(rows) < 2:
        raise DatasetError("evaluation needs an eval split or at least 2 training rows to hold out")
    count = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    held = set(random.Random(seed).sample(range(len(rows)), count))
    train = [row for index, row in enumerate(rows) if index not in held]
    evaluation = [row for index, row in enumerate(rows) if index in held]
    return train, evaluation
