"""The job's dataset as the trainer loads it: split files read, rows validated, eval held out.

Everything here runs before the model is downloaded or loaded, so a broken row costs seconds,
not GPU time. The rules themselves live in `tuning.dataset` (torch-free, shared with the CLI and
the validation before any GPU): errors name the split, the file, the row and the field, and are
`user` errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuning.dataset.rows import RowFormat, RowNormalizer, normalize_sft_row, validate_rows
from tuning.dataset.splits import choose_splits, holdout, read_rows, split_files
from tuning.failures import DatasetError

if TYPE_CHECKING:
    from tuning.gcp.storage import GcsStore


@dataclass
class DatasetSplits:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]] | None
    row_format: RowFormat
    train_source: str
    eval_source: str | None  # a file URI, or a description of the hold-out


def load_splits(
    storage: GcsStore,
    prefix: str,
    *,
    evaluate: bool,
    holdout_fraction: float,
    seed: int,
    normalize: RowNormalizer = normalize_sft_row,
) -> DatasetSplits:
    """Read and validate the dataset under `prefix`; eval rows only when evaluation is on."""
    files = split_files(storage.list(prefix), prefix)
    if not files:
        raise DatasetError(f"no dataset found: {prefix} holds no .parquet or .jsonl split files")
    train_file, eval_file = choose_splits(files)
    row_format, train = validate_rows(
        read_rows(storage.download_bytes(train_file.uri), train_file),
        split=train_file,
        normalize=normalize,
    )
    if not evaluate:
        return DatasetSplits(train, None, row_format, train_file.uri, None)
    if eval_file is None:
        train, held_out = holdout(train, holdout_fraction, seed)
        source = f"{holdout_fraction:.0%} of {train_file.uri} held out (seed {seed})"
        return DatasetSplits(train, held_out, row_format, train_file.uri, source)
    _, evaluation = validate_rows(
        read_rows(storage.download_bytes(eval_file.uri), eval_file),
        split=eval_file,
        normalize=normalize,
        expected_format=row_format,
    )
    return DatasetSplits(train, evaluation, row_format, train_file.uri, eval_file.uri)
