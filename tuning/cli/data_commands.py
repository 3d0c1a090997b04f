"""Data commands: check and upload datasets, upload base models for air-gapped use.

Datasets are checked here, before any upload, with the same row rules the
trainer applies (so a job never waits for a GPU only to fail on row 3).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from tuning.cli import add_command, print_json
from tuning.cli.client import ClientError

TRAINER_TYPES = ["sft", "dpo", "orpo", "grpo"]
MODALITIES = ["text", "vision"]
NOT_TEXT = {"role", "type", "images", "image"}


def register(sub: Any) -> None:
    datasets = sub.add_parser("datasets", help="check and upload datasets")
    datasets_sub = datasets.add_subparsers(title="dataset commands", metavar="COMMAND")

    parser = add_command(datasets_sub, "validate", validate, "check a dataset file's rows locally")
    parser.add_argument("file", type=Path, help="a .jsonl or .parquet split")
    parser.add_argument(
        "--split",
        help="the split it will be (default: the file's name if it names one, else train)",
    )
    _row_options(parser)
    parser.add_argument("--tokenizer", type=Path, help="a model folder: count real tokens")

    parser = add_command(datasets_sub, "upload", upload, "validate, then upload a dataset split")
    parser.add_argument("file", type=Path)
    parser.add_argument("--id", required=True, help="the processed_dataset_id to create")
    parser.add_argument("--split", default="train", help="train, eval, test, validation ...")
    _row_options(parser)
    parser.add_argument("--bucket", help="the data bucket (default: $TUNING_DATA_BUCKET)")

    models = sub.add_parser("models", help="upload base models")
    models_sub = models.add_subparsers(title="model commands", metavar="COMMAND")
    parser = add_command(models_sub, "upload", upload_model, "upload a model folder to GCS")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--to", required=True, help="gs://bucket/prefix/ to use as base_model_id")


def _row_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trainer-type", choices=TRAINER_TYPES, default="sft")
    parser.add_argument(
        "--modality",
        choices=MODALITIES,
        help="text or vision rows (default: vision when a row has images, else text)",
    )


def check_file(
    path: Path,
    trainer_type: str,
    tokenizer: Path | None = None,
    *,
    modality: str | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Validate every row of one split file; return row and token statistics."""
    from tuning.dataset.rows import validate_rows
    from tuning.dataset.splits import SplitFile, read_rows
    from tuning.failures import DatasetError

    if path.suffix not in {".jsonl", ".parquet"}:
        raise ClientError(f"{path}: a dataset split is a .jsonl or .parquet file")
    if not path.is_file():
        raise ClientError(f"{path}: no such file")
    # Messages name the split the rows will be (as the trainer's do), with the file beside it.
    split_file = SplitFile(name=split or split_name(path), uri=str(path), suffix=path.suffix)
    try:
        raw_rows = read_rows(path.read_bytes(), split_file)
        modality = modality or detect_modality(raw_rows)
        rules = _row_rules(trainer_type, modality)
        row_format, rows = validate_rows(raw_rows, split=split_file, normalize=rules)
    except DatasetError as error:
        raise ClientError(str(error)) from None
    texts = [_row_text(row) for row in rows]
    stats: dict[str, Any] = {"rows": len(rows), "format": row_format.value, "modality": modality}
    if tokenizer is None:
        stats["words"] = sum(len(text.split()) for text in texts)
        return stats
    from tuning.cli.token_counts import count_tokens, templated_counter

    counter = templated_counter(tokenizer)
    if counter is not None:  # counted as dispatch and the trainer count: through the template
        try:
            counts = counter.row_lengths(rows, row_format, split=split_file)
        except DatasetError as error:
            raise ClientError(str(error)) from None
    else:  # no chat template: the rows' text
        counts = count_tokens(tokenizer, texts)
    stats.update(tokens=sum(counts), max_tokens=max(counts), mean_tokens=sum(counts) / len(counts))
    return stats


def split_name(path: Path) -> str:
    """`eval` for eval.jsonl; a file not named after a split (my-chats.jsonl) trains."""
    from tuning.dataset.splits import EVAL_SPLIT_NAMES, TRAIN_SPLIT_NAMES

    stem = path.stem
    return stem if stem.lower() in {*TRAIN_SPLIT_NAMES, *EVAL_SPLIT_NAMES} else "train"


def detect_modality(rows: list[Any]) -> str:
    """`vision` when any row carries images (an images column or an image part), else `text`."""
    for row in rows:
        if not isinstance(row, dict):
            continue
        if row.get("images") is not None or row.get("image") is not None:
            return "vision"
        for message in row.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list) and any(
                isinstance(part, dict) and part.get("type") == "image" for part in content
            ):
                return "vision"
    return "text"


def _row_rules(trainer_type: str, modality: str) -> Any:
    from tuning.dataset.rules import UnsupportedPairError, row_rules
    from tuning.spec import Modality, TrainerType

    try:
        return row_rules(TrainerType(trainer_type), Modality(modality))
    except (UnsupportedPairError, ValueError) as error:
        raise ClientError(str(error)) from None


def _row_text(row: Any) -> str:
    if isinstance(row, str):
        return row
    if isinstance(row, dict):  # roles, part types and images are not text
        return " ".join(_row_text(v) for k, v in row.items() if k not in NOT_TEXT)
    if isinstance(row, list):
        return " ".join(_row_text(value) for value in row)
    return "" if row is None else str(row)


def validate(args: argparse.Namespace) -> int:
    stats = check_file(
        args.file, args.trainer_type, args.tokenizer, modality=args.modality, split=args.split
    )
    if args.json:
        print_json(stats)
    else:
        details = ", ".join(f"{key} {value}" for key, value in stats.items())
        print(f"{args.file}: ok ({details})")
    return 0


def upload(args: argparse.Namespace) -> int:
    from tuning.errors import InvalidRequestError
    from tuning.gcp.storage import GcsStore
    from tuning.layout import StorageLayout

    stats = check_file(args.file, args.trainer_type, modality=args.modality, split=args.split)
    bucket = args.bucket or os.environ.get("TUNING_DATA_BUCKET")
    if not bucket:
        raise ClientError("no data bucket: pass --bucket or set TUNING_DATA_BUCKET")
    layout = StorageLayout(data_bucket=bucket, config_bucket=bucket, models_bucket=bucket)
    try:
        prefix = layout.dataset_prefix(args.id)
    except InvalidRequestError as error:  # an id that cannot be a path segment
        raise ClientError(error.message) from None
    uri = f"{prefix}{args.split}{args.file.suffix}"
    GcsStore().upload_bytes(uri, args.file.read_bytes())
    if args.json:
        print_json({"uri": uri, **stats})
    else:
        print(f"{uri} ({stats['rows']} rows); use processed_dataset_id '{args.id}'")
    return 0


def upload_model(args: argparse.Namespace) -> int:
    from tuning.gcp.storage import GcsStore

    if not (args.directory / "config.json").is_file():
        raise ClientError(f"{args.directory} has no config.json: not a Hugging Face model folder")
    target = args.to if args.to.endswith("/") else f"{args.to}/"
    uris = GcsStore().upload_dir(args.directory, target)
    if args.json:
        print_json({"base_model_id": target, "files": uris})
    else:
        print(f"uploaded {len(uris)} files; use base_model_id '{target}'")
    return 0
