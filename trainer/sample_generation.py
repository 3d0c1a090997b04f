"""Sample answers of the base and the fine-tuned model, generated on the main process.

What is generated is planned by trainer/samples.py; this module runs the model. Greedy
decoding, at most `eval_config.sample_max_new_tokens` new tokens, prompts cut to
`trainer.samples.MAX_PROMPT_TOKENS` from the left, eight prompts a batch (left-padded),
stopping at EOS or `<end_of_turn>`.

- **LoRA, QLoRA:** after training, the trained model answers, then the same model answers
  again inside PEFT's `disable_adapter()`: the base weights as loaded (4-bit for QLoRA), no
  second model in memory. A job continuing another's adapter (`from_job`) thus compares with
  the plain base model.
- **Full:** the trained weights replace the base's, so the base answers are generated when
  training begins, from the model as loaded (`BaseAnswersCallback`, on the first attempt
  only), and stored beside the samples (`evaluations/<job>/base-answers.jsonl`), so a later
  attempt that resumes a checkpoint reads them instead; if the first attempt stopped before
  storing them, the base answers are null (with a warning event). A `from_job` Full job's
  base is the parent's weights it starts from.
- **Several GPUs (FSDP):** skipped, with a warning event: the model is sharded over the
  processes and only rank 0 runs the job (trainer/distributed.py), so generating there alone
  would wait forever on the other ranks' shards.

The optimizer state is released before generating (export releases it anyway), the
generation is bounded as `tuning.spec.SAMPLE_COST` states, and any failure of it is a warning
event, never the job's failure. Imported lazily: it needs torch.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from trainer.errors import JobGone
from trainer.samples import (
    GENERATION_BATCH,
    Answers,
    SamplePlan,
    SamplePrompt,
    eval_scores,
    sample_lines,
)
from tuning.errors import TuningError
from tuning.samples import encode_lines

if TYPE_CHECKING:
    from trainer.run import TrainingOutcome, TrainingRun
    from tuning.gcp.storage import GcsStore
    from tuning.jobs import EvalScore, Metrics
    from tuning.layout import StorageLayout
    from tuning.reporting import EventReporter

logger = logging.getLogger(__name__)
END_OF_TURN = "<end_of_turn>"


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[SamplePrompt],
    *,
    max_new_tokens: int,
    prompt_tokens: int,
    batch_size: int = GENERATION_BATCH,
) -> dict[str, str]:
    """Greedy answers by prompt key (trainer.samples.SamplePrompt.key)."""
    import torch
    from transformers import GenerationConfig

    encoded = [(prompt.key, _encode(tokenizer, prompt, prompt_tokens)) for prompt in prompts]
    encoded.sort(key=lambda item: len(item[1]))  # similar lengths share a batch: less padding
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generation = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=_stop_tokens(tokenizer),
        pad_token_id=pad,
        # The checkpoint's sampling defaults mean nothing to greedy decoding (and warn).
        temperature=None,
        top_p=None,
        top_k=None,
    )
    device = next(model.parameters()).device
    answers: dict[str, str] = {}
    with _inference(model), torch.no_grad(), _autocast(model, device):
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            width = max(len(ids) for _, ids in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, ids) in enumerate(batch):
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids) :] = 1
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                generation_config=generation,
                use_cache=True,
            )
            for row, (key, _) in enumerate(batch):
                text = tokenizer.decode(output[row, width:], skip_special_tokens=True)
                answers[key] = text.strip()
    return answers


def _encode(tokenizer: Any, prompt: SamplePrompt, limit: int) -> list[int]:
    """The prompt's token ids as training rendered it, cut from the left (BOS kept)."""
    if prompt.messages is not None:
        text = tokenizer.apply_chat_template(
            prompt.chat(), tokenize=False, add_generation_prompt=True
        )
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    else:
        ids = list(tokenizer(prompt.text or "")["input_ids"])
    if len(ids) <= limit:
        return ids
    bos = tokenizer.bos_token_id
    if bos is not None and ids and ids[0] == bos:
        return [bos, *ids[len(ids) - limit + 1 :]]
    return ids[len(ids) - limit :]


def _stop_tokens(tokenizer: Any) -> list[int]:
    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        stops.append(end_of_turn)
    return stops


@contextmanager
def _inference(model: Any) -> Iterator[None]:
    """Evaluation mode (no dropout, no gradient checkpointing) for the generation only."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _autocast(model: Any, device: Any) -> Any:
    """Full fine-tuning keeps float32 master weights on the GPU and trains under bfloat16
    autocast (trainer/modeling.py): generate the same way, at the same speed."""
    import torch

    floating = next(model.parameters()).dtype
    if device.type == "cuda" and floating == torch.float32 and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# The end of training ---------------------------------------------------------------------


def answer_samples(
    plan: SamplePlan,
    *,
    model: Any,
    tokenizer: Any,
    uses_adapter: bool,
    trainer: Any,
    storage: GcsStore,
    layout: StorageLayout,
    job_id: str,
    ensure_job_active: Callable[[], Any],
    note: Callable[[str], Any],
    warn: Callable[[str], Any],
) -> tuple[str | None, dict[str, EvalScore] | None]:
    """Generate, score and upload the samples; (their URI, metrics.eval_scores). A failure
    is a warning and (None, None): the samples never cost the job its trained model."""
    started = time.monotonic()
    try:
        _release_optimizer(trainer, model)
        tuned = _generate(model, tokenizer, plan)
        base: dict[str, str] | None
        if uses_adapter:
            with model.disable_adapter():
                base = _generate(model, tokenizer, plan)
        else:
            base = load_base_answers(storage, layout.base_answers_uri(job_id))
            if base is None:
                warn(
                    "sample answers: the base model's answers are unknown (the first attempt "
                    "stopped before storing them), so samples show the fine-tuned answers only"
                )
        answers = Answers(tuned=tuned, base=base)
        lines, scores = sample_lines(plan, answers), eval_scores(plan, answers)
    except JobGone:
        raise
    except Exception as error:  # an observer: the trained model is exported regardless
        logger.exception("sample answers failed")
        warn(f"sample answers skipped: {type(error).__name__}: {str(error)[:300]}")
        return None, None
    seconds = time.monotonic() - started
    ensure_job_active()
    uri = layout.samples_uri(job_id)
    try:
        storage.upload_bytes(uri, encode_lines(lines), content_type="application/jsonl")
    except TuningError as error:
        warn(f"sample answers were not stored: {error.message}")
        return None, scores
    scored = f", {len(plan.scored)} eval rows scored" if plan.scored else ""
    note(
        f"sample answers: {len(plan.prompts)} prompts{scored}, answered by the "
        f"{'base and the ' if uses_adapter else ''}fine-tuned model in {seconds:.1f} s"
    )
    return uri, scores


def _generate(model: Any, tokenizer: Any, plan: SamplePlan) -> dict[str, str]:
    return generate_answers(
        model,
        tokenizer,
        plan.prompts,
        max_new_tokens=plan.max_new_tokens,
        prompt_tokens=plan.prompt_tokens,
    )


def _release_optimizer(trainer: Any, model: Any) -> None:
    """Training is over: its gradients and optimizer state only take room from the
    generation's cache (the export releases them too)."""
    import torch

    model.zero_grad(set_to_none=True)
    if trainer is not None:
        trainer.optimizer = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# Full fine-tuning: the base answers, before training -----------------------------------


def load_base_answers(storage: GcsStore, uri: str) -> dict[str, str] | None:
    """What the first attempt stored (None: nothing)."""
    if not storage.exists(uri):
        return None
    answers = {}
    for line in storage.download_bytes(uri).decode().splitlines():
        if line.strip():
            entry = json.loads(line)
            answers[str(entry["key"])] = str(entry["answer"])
    return answers


class BaseAnswersCallback(TrainerCallback):  # type: ignore[misc]
    """Full fine-tuning: the base model's answers, generated and stored as training begins
    (the model as loaded, before its first step). A resumed attempt (its model already holds
    trained weights) does nothing: the first attempt's answers are in storage."""

    def __init__(
        self,
        plan: SamplePlan,
        tokenizer: Any,
        *,
        resumed: bool,
        store: Callable[[bytes], Any],
        note: Callable[[str], Any],
        warn: Callable[[str], Any],
    ) -> None:
        self.plan = plan
        self.tokenizer = tokenizer
        self.resumed = resumed
        self.store = store
        self.note = note
        self.warn = warn

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs.get("model")
        if self.resumed or state.global_step > 0 or model is None:
            return
        started = time.monotonic()
        try:
            answers = _generate(model, self.tokenizer, self.plan)
            data = "".join(
                json.dumps({"key": key, "answer": answer}) + "\n" for key, answer in answers.items()
            )
            self.store(data.encode())
        except JobGone:
            raise
        except Exception as error:  # the samples then show tuned answers only
            logger.exception("base answers failed")
            self.warn(f"base model answers skipped: {type(error).__name__}: {str(error)[:300]}")
            return
        self.note(
            f"sample answers: the base model answered {len(answers)} prompts before training "
            f"in {time.monotonic() - started:.1f} s"
        )


# What the pipeline calls --------------------------------------------------------------------


def base_answers_callback(
    plan: SamplePlan,
    run: TrainingRun,
    *,
    storage: GcsStore,
    layout: StorageLayout,
    job_id: str,
    ensure_job_active: Callable[[], Any],
    reporter: EventReporter,
) -> BaseAnswersCallback | None:
    """Full fine-tuning's callback that answers with the base before training (None for
    LoRA and QLoRA, whose base answers come from the adapter disabled)."""
    if run.config.method.uses_adapter:
        return None
    uri = layout.base_answers_uri(job_id)

    def store(data: bytes) -> None:
        ensure_job_active()
        storage.upload_bytes(uri, data, content_type="application/jsonl")

    return BaseAnswersCallback(
        plan,
        run.tokenizer,
        resumed=run.resume_from is not None,
        store=store,
        note=reporter.message,
        warn=run.warn,
    )


def finish_samples(
    plan: SamplePlan | None,
    outcome: TrainingOutcome,
    run: TrainingRun,
    *,
    storage: GcsStore,
    layout: StorageLayout,
    job_id: str,
    ensure_job_active: Callable[[], Any],
    reporter: EventReporter,
) -> tuple[Metrics, str | None]:
    """The job's final metrics (with `eval_scores`, also published as an evaluation) and the
    samples' URI, once training is over and before the export releases the model."""
    if plan is None:
        return outcome.metrics, None
    uri, scores = answer_samples(
        plan,
        model=outcome.trainer.model,
        tokenizer=run.tokenizer,
        uses_adapter=run.config.method.uses_adapter,
        trainer=outcome.trainer,
        storage=storage,
        layout=layout,
        job_id=job_id,
        ensure_job_active=ensure_job_active,
        note=reporter.message,
        warn=run.warn,
    )
    metrics = outcome.metrics
    if scores:
        metrics = metrics.model_copy(update={"eval_scores": scores})
        reporter.evaluation(metrics)
    return metrics, uri
