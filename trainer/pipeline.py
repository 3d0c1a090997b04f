"""One training job from config to artifacts, in the order of ARCHITECTURE.md "Trainer pipeline".

1. job config and secrets, `preparing`, and what this machine cannot run refused (provider
`unsloth` without CUDA, GGUF without llama.cpp);  2. dataset validated (rows, images, then
tokens);  3. base model config checked (a vision job needs a vision tower), model fetched,
loaded, quantized and wrapped by the recipe;  4. training with events;  5. checkpoints to GCS,
resumed by a retried attempt (`restarted`);  6. export, `completed`, W&B finished. Errors
propagate; `trainer.main` decides what they mean for the task's exit code.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from trainer.base_model import ModelsMount, obtain_base_model
from trainer.batching import BatchingPlan, plan_batching, spread_over_processes
from trainer.checkpoints import CheckpointStore, Retention
from trainer.data import DatasetSplits, load_splits
from trainer.distributed import SINGLE, Cohort, check_shardable
from trainer.errors import (
    HandedOff,
    NoProgressError,
    OutOfMemoryError,
    UnsupportedError,
    UserError,
)
from trainer.export import ExportJob, HubUploader, export_model, prepare_gguf_export
from trainer.handoff import Handoff, PauseRequest, StopSignal, TaskClock
from trainer.hardware import FLASH_ATTENTION, Hardware, choose_attention, detect
from trainer.job import Job, ensure_job_active, load_job
from trainer.modeling import load_model_config, load_processor, load_tokenizer
from trainer.recipes import Recipe, recipe_for
from trainer.room import ensure_room_for_outputs
from trainer.run import TrainingOutcome, TrainingRun
from trainer.samples import samples_for_job
from trainer.stats import dataset_stats, token_lengths
from trainer.storage_access import hub_stager_storage, narrow_job_storage
from trainer.tracking import WandbTracker
from tuning.dataset.rules import evaluation_enabled
from tuning.dataset.splits import SplitFile
from tuning.dataset.tokens import (
    CHAT_TEMPLATE_FILE,
    TOKENIZER_FILE,
    TOKENIZER_FILES,
    ChatTokenizer,
)
from tuning.defaults import describe_hyperparameters, tracked_training_config
from tuning.jobs import DatasetStats, Placement, Validation
from tuning.placement import overflow_of_unestimated_job
from tuning.preflight import dataset_stats as validated_dataset_stats
from tuning.reporting import EventReporter
from tuning.services import Services
from tuning.settings import TrainerSettings
from tuning.spec import ExportFormat, Modality, Provider, TrainerType, TrainingConfig
from tuning.tenancy import BaseModelLocations

if TYPE_CHECKING:
    from trainer.callbacks import CheckpointUploadCallback

logger = logging.getLogger(__name__)
# Vision models whose processor this build knows how to count and train (Gemma 3, 4B and up).
VISION_MODEL_TYPES = frozenset({"gemma3"})


def run_training_job(
    settings: TrainerSettings,
    services: Services,
    reporter: EventReporter,
    *,
    hub_uploader: HubUploader | None = None,
    hardware: Hardware | None = None,
    task: TaskClock | None = None,
    stop: StopSignal | None = None,
    cohort: Cohort | None = None,
) -> None:
    """The job, run by the main process; with several training processes (a multi-GPU
    tier), `cohort` reaches the others, which follow it (trainer.follower)."""
    cohort = cohort or Cohort(SINGLE)
    # Before anything of the job is read from Cloud Storage: from here on, only its own paths
    # (and a Hub model's stager writes only its own copy and marker).
    stager_storage = hub_stager_storage(settings, services)
    services = narrow_job_storage(settings, services)
    job = load_job(settings, services)
    config = job.request.training_config
    reporter.preparing("validating the dataset")
    check_shardable(config, cohort.ranks)
    recipe = recipe_for(config)
    gguf_tools = prepare_gguf_export(config)
    if config.provider is Provider.UNSLOTH:
        from trainer.unsloth import activate_unsloth, require_unsloth

        hardware = hardware or detect()
        require_unsloth(hardware)
        activate_unsloth()
    splits = _load_dataset(job, services, recipe)

    _route_library_logs()
    work_dir = Path(settings.work_dir) / settings.job_id
    shutil.rmtree(work_dir, ignore_errors=True)  # a rerun on the same disk starts clean
    reporter.preparing("fetching the base model")
    # Read in place through the models volume where there is one (trainer/base_model.py).
    model_dir = obtain_base_model(
        config.base_model_id,
        storage=services.storage,
        work_dir=work_dir,
        token=job.hf_token,
        locations=BaseModelLocations.from_settings(settings),
        mount=ModelsMount.from_settings(settings),
        check_config=functools.partial(check_model_config, config, placement=job.placement),
        note=reporter.message,
        stager_storage=stager_storage,
    )
    ensure_room_for_outputs(config, model_dir, work_dir)  # before any GPU time is spent
    continue_from = _parent_weights(job, services, work_dir, reporter)
    if gguf_tools is not None:
        from trainer.gguf import check_exportable

        check_exportable(model_dir)  # e.g. tokenizer.model, which the merge copies from here
    processor = load_processor(model_dir) if config.modality is Modality.VISION else None
    tokenizer = processor.tokenizer if processor is not None else load_tokenizer(model_dir)
    stats = _dataset_statistics(
        splits, model_dir, tokenizer, config, validated=job.validation, processor=processor
    )

    hardware = hardware or detect()
    hp = config.hyperparameters
    attention = choose_attention(
        load_model_config(model_dir), use_fa2=hp.use_fa2, hardware=hardware
    )
    if hp.use_fa2 and attention != FLASH_ATTENTION:
        reporter.message(f"FlashAttention-2 is not available here; using {attention}", "warning")
    active = functools.partial(ensure_job_active, services, settings)
    checkpoints = CheckpointStore(
        services.storage,
        settings.layout,
        settings.job_id,
        ensure_job_active=active,
        retention=Retention(keep_last=config.checkpoints_kept, keep_best=hp.load_best_model_at_end),
    )
    resume_from, resumed_step = _resume_point(checkpoints, work_dir / "output", reporter, settings)
    run = TrainingRun(
        config=config,
        splits=splits,
        model_dir=model_dir,
        output_dir=work_dir / "output",
        tokenizer=tokenizer,
        processor=processor,
        hardware=hardware,
        attention=attention,
        batching=plan_batching(
            packing=_packing(config, reporter),
            batch_size=hp.batch_size,
            gradient_accumulation_steps=hp.gradient_accumulation_steps,
            attention=attention,
        ),
        evaluate=evaluation_enabled(config),
        resume_from=resume_from,
        run_name=settings.job_id,
        warn=functools.partial(_warn, reporter),
        note=functools.partial(_note, reporter),
        ranks=cohort.ranks,
        continue_from=continue_from,
    )
    if cohort.ranks.distributed:
        run.batching = _spread(run, reporter)
    samples = samples_for_job(  # answered by the base and the tuned model (trainer/samples.py)
        config, splits, evaluate=run.evaluate, distributed=cohort.ranks.distributed, warn=run.warn
    )

    reporter.message(describe_hyperparameters(config))  # the per-type defaults it resolved
    tracker, wandb_url = _start_tracking(job, work_dir, reporter)
    failed = True
    try:
        from trainer.callbacks import (
            CheckpointUploadCallback,
            HandoffCallback,
            JobWatchCallback,
            LifecycleEventsCallback,
            LossLedgerCallback,
        )

        uploads = CheckpointUploadCallback(checkpoints, staging_dir=work_dir / "checkpoint-uploads")
        pause = PauseRequest()
        run.callbacks = [
            LifecycleEventsCallback(
                reporter,
                min_interval_seconds=settings.progress_interval_seconds,
                wandb_url=wandb_url,
                dataset_stats=stats,
                report_accuracy=config.eval_config is None
                or config.eval_config.compute_eval_metrics,
                metrics_plan=recipe.metrics,
            ),
            LossLedgerCallback(resume_from),  # before `uploads`: its file is uploaded too
            uploads,
            JobWatchCallback(  # before the handoff callback: a pause it sees acts at once
                active, interval_seconds=settings.job_check_interval_seconds, pause=pause
            ),
            HandoffCallback(  # after `uploads`: it ends the attempt once the upload started
                task or TaskClock(settings.task_timeout_seconds),
                stop or StopSignal(),
                interval_seconds=settings.checkpoint_interval_seconds,
                reserve_seconds=settings.deadline_reserve_seconds,
                grace_seconds=settings.stop_grace_seconds,
                upload_seconds=lambda: uploads.last_upload_seconds,
                pause=pause,
            ),
        ]
        if samples is not None:
            from trainer.sample_generation import base_answers_callback

            base_answers = base_answers_callback(  # Full only: the base answers before training
                samples, run, **_samples_context(services, settings, active, reporter)
            )
            run.callbacks += [base_answers] if base_answers is not None else []
        run.report_to = ["wandb"] if tracker is not None else []
        cohort.tell(for_followers(run))
        try:
            outcome = recipe.train(run)
        except Handoff as handoff:
            failed = False
            hand_off(handoff, uploads, checkpoints, reporter, resumed_step=resumed_step)
        cohort.expect_followers()  # every rank finished training: they wait for the export
        active()
        from trainer.sample_generation import finish_samples

        metrics, samples_path = finish_samples(  # before the export releases the model
            samples, outcome, run, **_samples_context(services, settings, active, reporter)
        )
        reporter.exporting(_export_formats(config))
        artifacts = export_model(
            ExportJob(
                job_id=settings.job_id,
                base_model_id=config.base_model_id,
                export_config=config.export_config,
                method=config.method,
                base_model_dir=model_dir,
                work_dir=work_dir / "export",
                hardware=hardware,
                attention=attention,
                hf_token=job.hf_token,
                gguf_tools=gguf_tools,
                warn=functools.partial(_warn, reporter),
            ),
            trainer=outcome.trainer,
            state_dict=_gathered_weights(outcome, cohort),
            tokenizer=tokenizer,
            processor=processor,
            storage=services.storage,
            layout=settings.layout,
            ensure_job_active=active,
            hub=hub_uploader,
        )
        reporter.completed(artifacts.model_copy(update={"samples_path": samples_path}), metrics)
        failed = False
    finally:
        if tracker is not None:
            tracker.finish(failed=failed)


def hand_off(
    handoff: Handoff,
    uploads: CheckpointUploadCallback,
    checkpoints: CheckpointStore,
    reporter: EventReporter,
    *,
    resumed_step: int,
) -> NoReturn:
    """End the attempt so that a new execution continues the job: once the checkpoint is
    in GCS, publish `handoff` and raise `HandedOff` (exit 0). Without progress since this
    attempt resumed, a handoff would loop: fail the attempt instead (Cloud Run retries)."""
    uploads.wait()  # the checkpoint it just saved, complete in GCS (or its error raised)
    checkpoints.ensure_job_active()  # cancelled meanwhile: JobGone, nothing to continue
    latest = checkpoints.latest()
    if latest is None or latest.step <= resumed_step:
        raise NoProgressError(
            f"the attempt stopped ({handoff.reason.value}) at step {handoff.step} without a "
            f"checkpoint newer than step {resumed_step}, where it resumed"
        )
    reporter.handoff(
        handoff.reason, step=handoff.step, checkpoint_step=latest.step, checkpoint=latest.prefix
    )
    logger.info("handed off at step %d (checkpoint %d)", handoff.step, latest.step)
    raise HandedOff(handoff.reason.value)


def _samples_context(
    services: Services, settings: TrainerSettings, active: Any, reporter: EventReporter
) -> dict[str, Any]:
    return {
        "storage": services.storage,
        "layout": settings.layout,
        "job_id": settings.job_id,
        "ensure_job_active": active,
        "reporter": reporter,
    }


def for_followers(run: TrainingRun) -> TrainingRun:
    """What the other processes train with: the run without the job's callbacks, tracking
    and event reporter, which are the main process's alone."""
    return dataclasses.replace(run, callbacks=[], report_to=[], warn=ignore, note=ignore)


def ignore(text: str) -> None:
    """A follower's `warn`: the main process tells the job."""


def _spread(run: TrainingRun, reporter: EventReporter) -> BatchingPlan:
    plan, warning = spread_over_processes(run.batching, run.ranks.world_size)
    if warning:
        _warn(reporter, warning)
    return plan


def _gathered_weights(outcome: TrainingOutcome, cohort: Cohort) -> dict[str, Any] | None:
    """The trained weights gathered whole from every process (None: one process)."""
    if not cohort.ranks.distributed:
        return None
    from trainer.distributed import GATHER, full_state_dict

    cohort.tell(GATHER)
    return full_state_dict(outcome.trainer.model)


def check_model_config(
    config: TrainingConfig, model_config: dict[str, Any], *, placement: Placement | None = None
) -> None:
    """Refuse a base model that cannot run the job, from its config.json alone (before any
    weights are fetched): among other things, a job submit could not estimate that its
    tier's GPUs cannot hold."""
    if overflow := overflow_of_unestimated_job(config, model_config, placement):
        raise OutOfMemoryError(overflow)
    kind = model_config.get("model_type", "unknown")
    if config.modality is Modality.VISION and not model_config.get("vision_config"):
        raise UserError(
            f"base_model_id: {config.base_model_id} is a text-only model ({kind}, no "
            "vision_config): modality 'vision' needs a Gemma 3 model with a vision tower "
            "(4B and larger), or use modality 'text'"
        )
    if config.modality is Modality.VISION and kind not in VISION_MODEL_TYPES:
        raise UnsupportedError(
            f"modality 'vision' supports {sorted(VISION_MODEL_TYPES)} models in this trainer "
            f"build; {config.base_model_id} is {kind!r}"
        )
    if config.export_config.quantizations:
        from trainer.gguf import (
            ARCHITECTURES,
            incompatible_model_error,
            llama_cpp_incompatibilities,
        )

        if kind not in ARCHITECTURES:
            raise UnsupportedError(
                f"export_config.include_gguf: GGUF export supports {sorted(ARCHITECTURES)} "
                f"models in this trainer build; {config.base_model_id} is {kind!r}"
            )
        if problems := llama_cpp_incompatibilities(model_config):
            raise incompatible_model_error(problems)


def _load_dataset(job: Job, services: Services, recipe: Recipe) -> DatasetSplits:
    """Rows read and validated for the recipe (images fetched and decoded), before anything big
    is downloaded."""
    config = job.request.training_config
    layout = job.settings.layout
    splits = load_splits(
        services.storage,
        layout.dataset_prefix(job.request.processed_dataset_id),
        evaluate=evaluation_enabled(config),
        holdout_fraction=config.eval_config.eval_holdout_fraction if config.eval_config else 0.1,
        seed=config.hyperparameters.seed,
        normalize=recipe.row_normalizer(config),
    )
    if config.modality is Modality.VISION:
        from trainer.images import resolve_split_images

        resolve_split_images(splits, services.storage, data_bucket=layout.data_bucket)
    return splits


def _dataset_statistics(
    splits: DatasetSplits,
    model_dir: Path,
    tokenizer: Any,
    config: TrainingConfig,
    *,
    validated: Validation | None,
    processor: Any = None,
) -> DatasetStats:
    """Token counts, with the counter dispatch's validation used (tuning.dataset.tokens), so the
    figures are the same; rendering every row with the chat template also validates it.

    Tokenized once before training: when the validation before any GPU counted these very
    rows (the same number in each split), its counts stand and nothing is tokenized again here;
    TRL's own tokenizing for training is the only other pass.
    """
    hp = config.hyperparameters
    # GRPO trains on generated completions: its rows are prompts, cut at max_prompt_length.
    limit = hp.max_prompt_length if config.trainer_type is TrainerType.GRPO else hp.max_seq_length
    eval_rows = len(splits.eval or [])
    if validated is not None and (reused := _validated_stats(validated, splits, eval_rows)):
        return reused
    counter = shared_counter(model_dir, tokenizer)

    def lengths_of(rows: list[dict[str, Any]], split: SplitFile) -> list[int]:
        if counter is not None:
            return counter.row_lengths(
                rows, splits.row_format, split=split, max_length=hp.max_seq_length
            )
        return token_lengths(  # no tokenizer.json: transformers' tokenizer counts
            rows,
            splits.row_format,
            tokenizer,
            split=split,
            processor=processor,
            max_length=hp.max_seq_length,
        )

    lengths = lengths_of(splits.train, SplitFile("train", splits.train_source, ""))
    if splits.eval is not None:  # counted for its checks (a row the template rejects)
        lengths_of(splits.eval, SplitFile("eval", splits.eval_source or "", ""))
    return dataset_stats(lengths, eval_rows, limit, packing=hp.packing)


def _validated_stats(
    validated: Validation, splits: DatasetSplits, eval_rows: int
) -> DatasetStats | None:
    """The validation's counts, when it counted the rows the trainer has now."""
    same_eval = (validated.eval.rows if validated.eval else 0) == eval_rows
    if validated.train.rows != len(splits.train) or not same_eval:
        return None
    return validated_dataset_stats(validated)


def shared_counter(model_dir: Path, tokenizer: Any) -> ChatTokenizer | None:
    """The torch-free counter on the model's tokenizer files (None without tokenizer.json), with
    the chat template the trainer trains with (for a model without one, the Gemma template
    trainer/modeling.py gives its tokenizer)."""
    present = [model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    files = {path.name: path.read_bytes() for path in present}
    if TOKENIZER_FILE not in files:
        return None
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        files[CHAT_TEMPLATE_FILE] = template.encode()
    return ChatTokenizer.from_files(files)


def _packing(config: TrainingConfig, reporter: EventReporter) -> bool:
    """Packing concatenates text SFT rows; the other trainers build their own sequences."""
    packs = config.trainer_type is TrainerType.SFT and config.modality is Modality.TEXT
    if config.hyperparameters.packing and not packs:
        kind = f"{config.trainer_type.value}/{config.modality.value}"
        _warn(reporter, f"hyperparameters.packing applies to text SFT only; ignored for {kind}")
    return config.hyperparameters.packing and packs


def _export_formats(config: TrainingConfig) -> list[str]:
    """A merged export uploads its adapter too (small, and what the merge was made from)."""
    export = config.export_config
    formats = [ExportFormat.ADAPTER.value]
    if export.format is ExportFormat.MERGED:
        formats.append(ExportFormat.MERGED.value)
    formats += [f"gguf-{quantization.value}" for quantization in export.quantizations]
    return formats


def _parent_weights(
    job: Job, services: Services, work_dir: Path, reporter: EventReporter
) -> Path | None:
    """The earlier job's adapter or weights this job continues from (None: it starts from
    the base model)."""
    lineage = job.lineage
    if lineage is None:
        return None
    from trainer.continuation import fetch_parent_weights

    where = f"step {lineage.parent_step}" if lineage.parent_step is not None else "its final model"
    reporter.preparing(f"fetching job {lineage.parent_job_id}'s weights ({where})")
    return fetch_parent_weights(services.storage, lineage, work_dir / "parent")


def _resume_point(
    checkpoints: CheckpointStore,
    output_dir: Path,
    reporter: EventReporter,
    settings: TrainerSettings,
) -> tuple[Path | None, int]:
    """The latest complete checkpoint, downloaded, when an earlier attempt left one, and
    its step (0: from the start)."""
    latest = checkpoints.latest()
    if latest is None:
        if settings.job_attempt > 0:
            reporter.restarted(resumed_from_step=0)
        return None, 0
    path = checkpoints.download(latest, output_dir)
    checkpoints.download_best(path, output_dir)  # load_best_model_at_end reads it at the end
    reporter.restarted(resumed_from_step=latest.step, checkpoint=latest.prefix)
    logger.info("resuming from step %d (%s)", latest.step, latest.prefix)
    return path, latest.step


def _start_tracking(
    job: Job, work_dir: Path, reporter: EventReporter
) -> tuple[WandbTracker | None, str | None]:
    wandb_config = job.request.training_config.wandb_config
    if wandb_config is None:
        return None, None
    tracker = WandbTracker(
        wandb_config, api_key=job.wandb_api_key, job_id=job.job_id, directory=work_dir / "wandb"
    )
    try:
        url = tracker.start(tracked_training_config(job.request))
    except Exception as error:  # W&B is an observer: training goes on without it, and says so
        logger.warning("W&B did not start: %s", error)
        reporter.message(f"W&B tracking is off: {type(error).__name__}", "warning")
        return None, None
    return tracker, url


def _route_library_logs() -> None:
    """transformers and datasets log through handlers of their own: send their records through
    the root handler instead, which writes JSON for Cloud Logging and redacts secrets."""
    import datasets
    import transformers.utils.logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    transformers_logging.set_verbosity_warning()
    transformers_logging.disable_progress_bar()  # weight loading/saving bars
    datasets_logger = logging.getLogger("datasets")
    datasets_logger.handlers.clear()
    datasets_logger.propagate = True
    datasets_logger.setLevel(logging.WARNING)
    datasets.disable_progress_bars()


def _note(reporter: EventReporter, text: str) -> None:
    logger.info(text)
    reporter.message(text)


def _warn(reporter: EventReporter, text: str) -> None:
    level: Literal["warning"] = "warning"
    logger.warning(text)
    reporter.message(text, level)
