"""The samples artifact: the base and the fine-tuned model's answers to the same prompts.

The trainer writes it at the end of training (trainer/samples.py) to
`gs://<models>/evaluations/<job_id>/samples.jsonl`, one JSON object a line, and the status
function reads it for `GET /jobs/{job_id}/samples`; this module is the format both share (no
torch). A line is one distinct prompt: the requested sample prompts (`source` "request") or
the dataset's (`eval`, else `train`), then the other scored eval rows; `reference` is the
dataset's answer where it has one, `scores` what each built-in scorer gave the two answers.
`base_answer` is null when the base model's answers are unknown (a Full fine-tuning job
resumed on a later attempt whose first attempt left none).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

logger = logging.getLogger(__name__)

SampleSource = Literal["request", "eval", "train"]
# A bound on what the status function reads back: far above what the trainer writes (at most
# 80 lines of bounded prompts and answers), low enough that no reply can grow without limit.
MAX_SAMPLES_FILE_BYTES = 4 * 1024 * 1024
# Prompts and references are stored shortened to this many characters (the answers are
# bounded by sample_max_new_tokens already).
MAX_STORED_CHARS = 4000


class ScorePair(BaseModel):
    """One scorer's score of one prompt's two answers (null: that answer is unknown)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    base: float | None = None
    tuned: float | None = None


class SampleLine(BaseModel):
    """One line of samples.jsonl."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt: str = Field(..., description="The last user turn (or the plain prompt).")
    reference: str | None = Field(None, description="The dataset's answer, where known.")
    base_answer: str | None = Field(
        None, description="The base model's answer (greedy); null when unknown."
    )
    tuned_answer: str = Field(..., description="The fine-tuned model's answer (greedy).")
    source: SampleSource = Field(..., description="request, eval or train: where it came from.")
    scored: bool = Field(False, description="Whether the row counts in `metrics.eval_scores`.")
    scores: dict[str, ScorePair] | None = Field(
        None, description="Per built-in scorer, where the row has a reference."
    )


def encode_lines(lines: Iterable[SampleLine]) -> bytes:
    return "".join(json.dumps(line.model_dump(mode="json")) + "\n" for line in lines).encode()


def decode_lines(data: bytes) -> list[SampleLine]:
    """The lines of a samples file; a line that is not one (never written so) is skipped."""
    lines = []
    for number, text in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            lines.append(SampleLine.model_validate_json(text))
        except ValidationError:
            logger.warning("samples file: line %d is not a sample; skipped", number)
    return lines


def shorten(text: str, limit: int = MAX_STORED_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
