"""How long the validation before any GPU takes on a large split, and how much memory it holds.

`python -m bench.preflight_scale [--rows 1000000]` writes a JSONL split of chat rows to a local
folder, then runs `tuning.preflight.validate_dataset` on it exactly as dispatch does (row
rules, token counts with a tiny Gemma's tokenizer and chat template in the limited child
process, whose address space is capped) through a store that reads local files, and prints
rows/s, seconds and this process's peak RSS. The baseline, in the same
process: reading and parsing the same file with `json.loads` alone (the floor any validation
pays), so the ratio says what the rules and the counting add.

The dispatch function has 540 s and 2 GiB (terraform/functions.tf); the figure to compare is
the seconds for the rows a deployment expects. A real Gemma tokenizer (262k entries) encodes
somewhat slower than the tiny one's 512; the template rendering, which dominates, is the same.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO


class FolderStore:
    """The two reads the preflight makes, from a local folder standing for a bucket."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, uri: str) -> Path:
        return self.root / uri.removeprefix("gs://")

    def list(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        return (
            sorted(f"{prefix}{path.name}" for path in folder.iterdir()) if folder.is_dir() else []
        )

    def download_bytes(self, uri: str) -> bytes:
        return self._path(uri).read_bytes()

    def open_read(self, uri: str) -> BinaryIO:
        return self._path(uri).open("rb")


def write_split(path: Path, rows: int) -> None:
    with path.open("w") as out:
        for index in range(rows):
            row = {
                "messages": [
                    {"role": "system", "content": "You answer questions about colours."},
                    {"role": "user", "content": f"What colour is the fox number {index}?"},
                    {"role": "assistant", "content": f"Fox {index} is red, like most foxes."},
                ]
            }
            out.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args(argv)

    from tuning.dataset.tokens import TOKENIZER_FILES
    from tuning.preflight import Tokenizing, validate_dataset
    from tuning.spec import parse_train_request

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = root / "model"
        # Built in another process: torch stays out of this one, whose peak RSS is the figure.
        subprocess.run(
            [sys.executable, "-m", "trainer.tiny", "--out", str(model), "--family", "gemma3"],
            check=True,
            capture_output=True,
        )
        files = {n: (model / n).read_bytes() for n in TOKENIZER_FILES if (model / n).is_file()}
        split = root / "bucket" / "processed_datasets" / "big"
        split.mkdir(parents=True)
        write_split(split / "train.jsonl", args.rows)
        size = (split / "train.jsonl").stat().st_size

        started = time.perf_counter()
        parsed = sum(1 for line in (split / "train.jsonl").open() if json.loads(line))
        baseline = time.perf_counter() - started

        config = parse_train_request(
            {
                "processed_dataset_id": "big",
                "training_config": {"base_model_id": "gs://models/tiny/"},
            }
        ).training_config
        started = time.perf_counter()
        validation = validate_dataset(
            config,
            dataset_prefix="gs://bucket/processed_datasets/big/",
            storage=FolderStore(root),  # type: ignore[arg-type]
            # As dispatch counts: in the limited child process (tuning.dataset.isolated).
            tokenizing=lambda: Tokenizing(files=files, source="gs://models/tiny/"),
            evaluate=False,
            counting_seconds=3600,
        )
        ours = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report: dict[str, Any] = {
        "rows": validation.train.rows,
        "file_mib": round(size / 2**20, 1),
        "tokens": validation.train.tokens,
        "seconds": round(ours, 1),
        "rows_per_second": round(args.rows / ours),
        "baseline_json_seconds": round(baseline, 1),
        "ratio_to_json_alone": round(ours / baseline, 1),
        "peak_rss_mib": round(peak_mib),
    }
    assert parsed == validation.train.rows
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
