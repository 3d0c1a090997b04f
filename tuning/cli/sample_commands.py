"""`tuning samples JOB`: the base and the fine-tuned model's answers, side by side."""

from __future__ import annotations

import argparse
import shutil
import textwrap
from itertools import zip_longest
from typing import Any

from tuning.cli import add_command, client_from, print_json

MIN_COLUMN = 20
GUTTER = " | "


def register(sub: Any) -> None:
    parser = add_command(
        sub, "samples", samples, "show a job's sample answers: base and fine-tuned, side by side"
    )
    parser.add_argument("job_id")
    parser.add_argument("--width", type=int, help="columns to fill (default: the terminal's width)")


def samples(args: argparse.Namespace) -> int:
    answer = client_from(args).samples(args.job_id)
    if args.json:
        print_json(answer)
        return 0
    width = args.width or shutil.get_terminal_size((100, 24)).columns
    print(describe_samples(answer, width=width))
    return 0


def describe_samples(answer: dict[str, Any], *, width: int = 100) -> str:
    """The samples as text: each prompt and its reference, then the two answers in columns;
    the scores first, where the job scored any rows."""
    blocks = []
    scores = answer.get("eval_scores") or {}
    if scores:
        rows = next(iter(scores.values())).get("rows")
        lines = [f"eval scores over {rows} eval rows (base -> fine-tuned):"]
        for name, score in sorted(scores.items()):
            lines.append(f"  {name:<14} {_figure(score.get('base'))} -> {_figure(score['tuned'])}")
        blocks.append("\n".join(lines))
    column = max(MIN_COLUMN, (width - len(GUTTER)) // 2)
    for number, sample in enumerate(answer.get("samples") or [], 1):
        blocks.append(_describe_one(number, sample, column))
    if len(blocks) == (1 if scores else 0):
        blocks.append("no samples")
    return "\n\n".join(blocks)


def _describe_one(number: int, sample: dict[str, Any], column: int) -> str:
    full = 2 * column + len(GUTTER)
    head = f"[{number}] ({sample.get('source', '?')}) "
    lines = textwrap.wrap(head + sample["prompt"], full, subsequent_indent=" " * len(head)) or [
        head
    ]
    if sample.get("reference") is not None:
        lines += textwrap.wrap(
            f"reference: {sample['reference']}",
            full,
            initial_indent="    ",
            subsequent_indent="    ",
        )
    for name, pair in sorted((sample.get("scores") or {}).items()):
        lines.append(f"    {name}: {_figure(pair.get('base'))} -> {_figure(pair.get('tuned'))}")
    base = sample.get("base_answer")
    left = _wrap("base" if base is not None else "base (unknown)", base or "", column)
    right = _wrap("fine-tuned", sample.get("tuned_answer") or "", column)
    for one, other in zip_longest(left, right, fillvalue=""):
        lines.append(f"{one:<{column}}{GUTTER}{other}".rstrip())
    return "\n".join(lines)


def _wrap(title: str, text: str, column: int) -> list[str]:
    body = []
    for paragraph in text.splitlines() or [""]:
        body += textwrap.wrap(paragraph, column, replace_whitespace=False) or [""]
    return [title, "-" * min(column, len(title) + 4), *body]


def _figure(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"
