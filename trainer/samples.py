"""Which prompts the base and the fine-tuned model answer at the end of training, and how
their answers are scored. Pure Python (no torch): trainer/sample_generation.py generates.

- **Samples.** `eval_config.sample_prompts` when given (one user turn each), else the first
  `eval_config.samples` distinct prompts of the eval split, or of train when there is none.
- **Scored rows.** With an eval split, its first `eval_config.scored_rows` rows that carry a
  reference answer: an SFT row's last assistant turn (or its completion), a GRPO row's
  reference column (carried when a reward compares with it). Preference rows (DPO, ORPO) and
  vision rows have none; vision jobs get no samples at all (their prompts hold images).
- **Prompts are rendered as training rendered them:** conversations and SFT prompt/completion
  rows through the chat template, the plain-string prompts of DPO, ORPO and GRPO rows as raw
  text (TRL applies no template to them).
- **Scorers.** A GRPO job's own reward functions; otherwise `exact_match`, with
  `numeric_match` when every scored reference holds a number and `format` when every one is in
  the `<reasoning>`/`<answer>` format. Unlike the GRPO rewards, an answer or reference that
  marks no final answer (`<answer>`, `Answer:`) is compared whole, so free-text SFT answers
  score too: a reference `ember is teal.` matches the answer `Ember is teal`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trainer.data import DatasetSplits
from tuning.dataset.rows import RowFormat
from tuning.jobs import EvalScore
from tuning.rewards import (
    ABSOLUTE_TOLERANCE,
    FULL_FORMAT,
    REFERENCE,
    RELATIVE_TOLERANCE,
    completion_text,
    extract_answer,
    format_score,
    normalize_answer,
    parse_number,
)
from tuning.samples import SampleLine, SampleSource, ScorePair, shorten
from tuning.spec import EvalConfig, RewardFunction, TrainerType, TrainingConfig

# Prompts longer than this many tokens are cut from the left (keeping BOS) before generation,
# which bounds the memory the key-value cache takes beside the trained model.
MAX_PROMPT_TOKENS = 1024
GENERATION_BATCH = 8  # prompts generated at once
# Formats whose prompt TRL renders as plain text (no chat template) when it trains on them.
RAW_TEXT_FORMATS = frozenset({RowFormat.PREFERENCE, RowFormat.PROMPT_ONLY})


@dataclass(frozen=True)
class SamplePrompt:
    """One prompt to answer: chat turns (rendered through the template) or raw text."""

    shown: str  # what the artifact shows: the last user turn, or the plain prompt
    source: SampleSource
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) before the answer
    text: str | None = None  # a plain prompt that training fed the model without a template
    reference: str | None = None

    @property
    def key(self) -> str:
        """Equal for prompts the model sees identically (their answers are generated once)."""
        return json.dumps([self.messages, self.text])

    def chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages or ()]


@dataclass
class SamplePlan:
    """What to generate at the end of training; `prompts` is every distinct prompt, once."""

    samples: list[SamplePrompt]
    scored: list[SamplePrompt]
    scorers: list[RewardFunction]
    max_new_tokens: int
    prompt_tokens: int
    prompts: list[SamplePrompt] = field(init=False)

    def __post_init__(self) -> None:
        seen: dict[str, SamplePrompt] = {}
        for prompt in [*self.samples, *self.scored]:
            seen.setdefault(prompt.key, prompt)
        self.prompts = list(seen.values())


def eval_config_of(config: TrainingConfig) -> EvalConfig:
    return config.eval_config or EvalConfig()


def plan_samples(
    config: TrainingConfig, splits: DatasetSplits, *, evaluate: bool
) -> SamplePlan | None:
    """The prompts to answer and score, or None when there is nothing to generate."""
    settings = eval_config_of(config)
    if settings.samples == 0 or splits.row_format is RowFormat.VISION_MESSAGES:
        return None
    eval_rows = splits.eval if evaluate and splits.eval else None
    if settings.sample_prompts is not None:
        samples = [request_prompt(text) for text in settings.sample_prompts]
    else:
        source: SampleSource = "eval" if eval_rows else "train"
        rows = eval_rows or splits.train
        samples = distinct(
            (row_prompt(row, splits.row_format, source) for row in rows), settings.samples
        )
    scored: list[SamplePrompt] = []
    if eval_rows and settings.scored_rows:
        candidates = (row_prompt(row, splits.row_format, "eval") for row in eval_rows)
        scored = [prompt for prompt in candidates if prompt.reference][: settings.scored_rows]
    scorers = scorers_for(config, [prompt.reference or "" for prompt in scored])
    if not scorers:
        scored = []
    if not samples and not scored:
        return None
    return SamplePlan(
        samples=samples,
        scored=scored,
        scorers=scorers,
        max_new_tokens=settings.sample_max_new_tokens,
        prompt_tokens=min(config.hyperparameters.max_seq_length, MAX_PROMPT_TOKENS),
    )


def request_prompt(text: str) -> SamplePrompt:
    return SamplePrompt(shown=text, source="request", messages=(("user", text),))


def distinct(prompts: Any, count: int) -> list[SamplePrompt]:
    """The first `count` prompts, each rendered prompt once."""
    chosen: dict[str, SamplePrompt] = {}
    for prompt in prompts:
        if len(chosen) >= count:
            break
        chosen.setdefault(prompt.key, prompt)
    return list(chosen.values())


def row_prompt(row: dict[str, Any], row_format: RowFormat, source: SampleSource) -> SamplePrompt:
    """A normalized row (tuning.dataset) as a prompt and its reference answer."""
    reference: Any = None
    if row_format is RowFormat.MESSAGES:
        messages = row["messages"]
        last = max(
            (i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages)
        )
        turns = messages[:last]
        reference = completion_text(messages[last]) if last < len(messages) else None
    elif row_format is RowFormat.PROMPT_COMPLETION:
        turns, reference = [{"role": "user", "content": row["prompt"]}], row["completion"]
    elif row_format is RowFormat.CONVERSATIONAL_PROMPT_COMPLETION:
        turns, reference = row["prompt"], completion_text(row["completion"])
    elif row_format in RAW_TEXT_FORMATS:
        text = str(row["prompt"])
        return SamplePrompt(
            shown=shorten(text), source=source, text=text, reference=_reference(row.get(REFERENCE))
        )
    else:  # conversational preference and prompt-only rows
        turns, reference = row["prompt"], row.get(REFERENCE)
    messages = tuple((str(m["role"]), completion_text(m)) for m in turns)
    users = [content for role, content in messages if role == "user"]
    return SamplePrompt(
        shown=shorten(users[-1] if users else ""),
        source=source,
        messages=messages,
        reference=_reference(reference),
    )


def _reference(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def scorers_for(config: TrainingConfig, references: Sequence[str]) -> list[RewardFunction]:
    """The built-in scorers that apply to these references (none without references)."""
    if not references:
        return []
    if config.trainer_type is TrainerType.GRPO and config.reward_config is not None:
        return list(config.reward_config.functions)
    scorers = [RewardFunction.EXACT_MATCH]
    if all(parse_number(reference_answer(text)) is not None for text in references):
        scorers.append(RewardFunction.NUMERIC_MATCH)
    if all(format_score(text) == FULL_FORMAT for text in references):
        scorers.append(RewardFunction.FORMAT)
    return scorers


def reference_answer(text: str) -> str:
    """The final answer a reference marks (`<answer>`, `Answer:`), else all of it."""
    return extract_answer(text) or text


def score(function: RewardFunction, answer: str, reference: str) -> float:
    """One scorer's score of a generated answer against the row's reference."""
    if function is RewardFunction.FORMAT:
        return format_score(answer)
    found, expected = reference_answer(answer), reference_answer(reference)
    if function is RewardFunction.EXACT_MATCH:
        return 1.0 if normalize_answer(found) == normalize_answer(expected) else 0.0
    got, wanted = parse_number(found), parse_number(expected)
    if got is None or wanted is None:
        return 0.0
    close = math.isclose(got, wanted, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)
    return 1.0 if close else 0.0


@dataclass(frozen=True)
class Answers:
    """Generated answers by prompt key; `base` is None when the base's are unknown."""

    tuned: dict[str, str]
    base: dict[str, str] | None


def sample_lines(plan: SamplePlan, answers: Answers) -> list[SampleLine]:
    """The artifact's lines: every distinct prompt once, samples first."""
    scored_keys = {prompt.key for prompt in plan.scored}
    lines = []
    for prompt in plan.prompts:
        base = answers.base.get(prompt.key) if answers.base is not None else None
        tuned = answers.tuned[prompt.key]
        scores = None
        if prompt.reference is not None and plan.scorers:
            scores = {
                function.value: ScorePair(
                    base=score(function, base, prompt.reference) if base is not None else None,
                    tuned=score(function, tuned, prompt.reference),
                )
                for function in plan.scorers
            }
        lines.append(
            SampleLine(
                prompt=prompt.shown,
                reference=shorten(prompt.reference) if prompt.reference is not None else None,
                base_answer=base,
                tuned_answer=tuned,
                source=prompt.source,
                scored=prompt.key in scored_keys,
                scores=scores,
            )
        )
    return lines


def eval_scores(plan: SamplePlan, answers: Answers) -> dict[str, EvalScore] | None:
    """Each scorer's mean over the scored rows (every row counts, repeated prompts too)."""
    if not plan.scored or not plan.scorers:
        return None
    results = {}
    for function in plan.scorers:
        tuned = [score(function, answers.tuned[p.key], p.reference or "") for p in plan.scored]
        base: list[float] | None = None
        if answers.base is not None and all(p.key in answers.base for p in plan.scored):
            base = [score(function, answers.base[p.key], p.reference or "") for p in plan.scored]
        results[function.value] = EvalScore(
            base=sum(base) / len(base) if base is not None else None,
            tuned=sum(tuned) / len(tuned),
            rows=len(plan.scored),
        )
    return results


def samples_for_job(
    config: TrainingConfig,
    splits: DatasetSplits,
    *,
    evaluate: bool,
    distributed: bool,
    warn: Any,
) -> SamplePlan | None:
    """The job's plan, or None; on several processes none, with a warning (FSDP shards the
    model over them, and only the main process runs the job)."""
    plan = plan_samples(config, splits, evaluate=evaluate)
    if plan is not None and distributed:
        warn(
            "eval_config.samples: sample answers and eval_scores are not generated on a "
            "multi-GPU tier (the model is sharded over its processes); set samples to 0 to "
            "silence this"
        )
        return None
    return plan
