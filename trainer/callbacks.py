"""Trainer callbacks: lifecycle events for the job, checkpoint uploads to GCS, a
periodic check that the job still wants this attempt, and the checkpoint clock and task
deadline of `trainer.handoff`.

Imported lazily (it needs transformers). The callbacks publish through the
job's EventReporter, so every event carries the attempt and its sequence.

DPO, ORPO and GRPO log method metrics beside the loss (reward margins, log-odds, rewards per
function): each progress event carries the latest of them, and each evaluation event the
evaluation's figures with them. Only an evaluation publishes an `evaluation` event, so a job
with evaluation off publishes none.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainer.checkpoints import CheckpointStore, CheckpointSummary
from trainer.files import link_or_copy
from trainer.handoff import Handoff, PauseRequest, StopSignal, TaskClock
from trainer.metrics import SFT_METRICS, MetricsPlan, evaluation_metrics, method_metrics
from tuning.jobs import AttemptEnding, DatasetStats, Metrics, Progress
from tuning.reporting import EventReporter

logger = logging.getLogger(__name__)


class LifecycleEventsCallback(TrainerCallback):
    """Publishes `training`, throttled `progress` and every `evaluation`."""

    def __init__(
        self,
        reporter: EventReporter,
        *,
        min_interval_seconds: float,
        wandb_url: str | None,
        dataset_stats: DatasetStats | None,
        report_accuracy: bool = True,
        metrics_plan: MetricsPlan = SFT_METRICS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reporter = reporter
        self.min_interval_seconds = min_interval_seconds
        self.wandb_url = wandb_url
        self.dataset_stats = dataset_stats
        self.report_accuracy = report_accuracy
        self.clock = clock
        self.started_at = 0.0
        self.first_step = 0
        self.last_published_at: float | None = None
        self.last_log: tuple[float, float] | None = None  # (time, tokens seen)
        self.tokens_per_second: float | None = None
        self.last_evaluation_step: int | None = None
        self.metrics_plan = metrics_plan
        self.training_metrics: dict[str, float] = {}  # the latest method metrics of training
        self.last_evaluation: Metrics | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started_at = self.clock()
        self.first_step = state.global_step  # not 0 when resumed from a checkpoint
        self.reporter.training(
            total_steps=state.max_steps, wandb_url=self.wandb_url, dataset_stats=self.dataset_stats
        )

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "loss" not in logs:
            return  # evaluation and end-of-training summaries are reported elsewhere
        now = self.clock()
        tokens = logs.get("num_tokens")
        if tokens is not None and self.last_log is not None and now > self.last_log[0]:
            self.tokens_per_second = max(
                0.0, (tokens - self.last_log[1]) / (now - self.last_log[0])
            )
        if tokens is not None:
            self.last_log = (now, tokens)
        method = method_metrics(logs, self.metrics_plan.method_keys)
        if method:
            self.training_metrics = method
        done = state.global_step >= state.max_steps
        recent = self.last_published_at is not None and (
            now - self.last_published_at < self.min_interval_seconds
        )
        if recent and not done:
            return
        self.last_published_at = now
        self.reporter.progress_update(self.progress(state, logs, now))

    def snapshot(self, step: int, evaluation: Metrics | None = None) -> Metrics:
        """The latest evaluation's figures with the latest method metrics, at `step`."""
        evaluation = evaluation or self.last_evaluation
        figures = evaluation.model_dump(exclude_none=True) if evaluation else {}
        return Metrics(**{**figures, **self.training_metrics, "step": step})

    def progress(self, state: Any, logs: dict[str, float], now: float) -> Progress:
        steps_done = state.global_step - self.first_step
        remaining = max(0, state.max_steps - state.global_step)
        eta = (now - self.started_at) / steps_done * remaining if steps_done > 0 else None
        return Progress(
            step=state.global_step,
            total_steps=state.max_steps,
            epoch=state.epoch,
            loss=logs.get("loss"),
            learning_rate=logs.get("learning_rate"),
            tokens_per_second=self.tokens_per_second,
            eta_seconds=eta,
            metrics=self.training_metrics or None,
        )

    def on_evaluate(
        self,
        args: Any,
        state: Any,
        control: Any,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not metrics:
            return
        self.last_evaluation_step = state.global_step
        plan = self.metrics_plan
        evaluation = evaluation_metrics(
            metrics,
            step=state.global_step,
            with_accuracy=self.report_accuracy,
            language_model=plan.language_model,
        )
        if plan.method_keys:
            extras = method_metrics(metrics, plan.method_keys, prefix="eval_")
            evaluation = Metrics(**{**evaluation.model_dump(exclude_none=True), **extras})
            self.last_evaluation = evaluation
            evaluation = self.snapshot(state.global_step, evaluation)
        self.reporter.evaluation(evaluation)


class LossLedgerCallback(TrainerCallback):
    """Keeps the sum of every step's training loss in each checkpoint (`loss-ledger.json`),
    so that a job resumed from it, in a retried attempt or a new execution, reports the
    mean loss of the whole run: the Trainer's own `training_loss` covers only the steps of
    its own `train()` call. Goes before the upload callback, so the file is uploaded too.

    Reads the Trainer's running sums (`_total_loss_scalar`, `_tr_loss`, transformers 5):
    `attach` is called with the Trainer before training.
    """

    FILE = "loss-ledger.json"

    def __init__(self, resume_from: Path | None) -> None:
        self.trainer: Any = None
        self.prior_sum: float | None = 0.0  # None: resumed from a checkpoint without a ledger
        if resume_from is not None:
            ledger = resume_from / self.FILE
            self.prior_sum = (
                float(json.loads(ledger.read_text())["loss_sum"]) if ledger.is_file() else None
            )

    def attach(self, trainer: Any) -> None:
        self.trainer = trainer

    def run_sum(self) -> float | None:
        """The losses summed over this `train()` call's steps so far (None: this Trainer
        keeps no such sums, and the ledger stays off rather than guess)."""
        total = getattr(self.trainer, "_total_loss_scalar", None)
        pending = getattr(self.trainer, "_tr_loss", None)
        if total is None or pending is None:
            return None
        return float(total) + float(pending.item() if hasattr(pending, "item") else pending)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is None or self.prior_sum is None:
            return
        run_sum = self.run_sum()
        if run_sum is None:
            self.prior_sum = None
            return
        directory = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if directory.is_dir():
            total = self.prior_sum + run_sum
            data = {"step": state.global_step, "loss_sum": total}
            (directory / self.FILE).write_text(json.dumps(data))

    def whole_run_loss(self, run_loss: float, *, steps_this_run: int, global_step: int) -> float:
        """The mean loss over every step of the job, from this call's mean over its steps."""
        if self.prior_sum is None or global_step <= 0:
            return run_loss  # an older checkpoint kept no sum: this call's mean is all we have
        return (self.prior_sum + run_loss * steps_this_run) / global_step


class CheckpointUploadCallback(TrainerCallback):
    """Uploads each checkpoint the Trainer saves, in the background, so the GPU keeps
    training while GCS receives it (minutes for full weights); the store checks first that
    the job is still wanted.

    The saved folder is snapshotted with hard links (instant, no copy) because the Trainer
    deletes it when it saves the next one (`save_total_limit`). One upload runs at a time:
    a save waits for the previous upload, and the end of training waits for the last;
    an upload's error (the job gone, GCS failing) is raised there, in the training thread.
    """

    def __init__(self, store: CheckpointStore, staging_dir: Path) -> None:
        self.store = store
        self.staging_dir = staging_dir
        self._upload: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_upload_seconds = 0.0  # how long the latest finished upload took

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.wait()
        directory = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not directory.is_dir():
            logger.warning("checkpoint %s was not written; nothing uploaded", directory)
            return
        snapshot = self.staging_dir / directory.name
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.copytree(directory, snapshot, copy_function=link_or_copy)
        summary = CheckpointSummary.from_state(state)
        self._upload = threading.Thread(
            target=self._run, args=(snapshot, summary), name="checkpoint-upload"
        )
        self._upload.start()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.wait()

    def wait(self) -> None:
        """Block until the running upload ends; raise what it raised."""
        if self._upload is not None:
            self._upload.join()
            self._upload = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self, snapshot: Path, summary: CheckpointSummary) -> None:
        started = time.monotonic()
        try:
            self.store.upload(snapshot, summary.step, summary)
            self.last_upload_seconds = time.monotonic() - started
        except BaseException as error:  # re-raised in the training thread by wait()
            self._error = error
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)


class JobWatchCallback(TrainerCallback):
    """Reads the job record every `interval_seconds` of training and stops the attempt
    (`JobGone`, raised through the Trainer) once the job was cancelled, deleted, paused or
    handed to another execution: a cancel Cloud Run could not deliver, or an execution
    started by a dispatcher that died before recording it, stops within the interval. A job
    its owner asked to pause (`pause_requested_at`) is told to `pause`, which the handoff
    callback after it acts on at the same step."""

    def __init__(
        self,
        ensure_job_active: Callable[[], object],
        *,
        interval_seconds: float,
        pause: PauseRequest | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ensure_job_active = ensure_job_active
        self.interval_seconds = interval_seconds
        self.pause = pause
        self.clock = clock
        self.checked_at = clock()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = self.clock()
        if now - self.checked_at >= self.interval_seconds:
            self.checked_at = now
            job = self.ensure_job_active()
            if self.pause is not None and getattr(job, "pause_requested_at", None) is not None:
                self.pause.request()


class HandoffCallback(TrainerCallback):
    """Decides, after every optimizer step, whether to checkpoint and whether to stop.

    Goes after the checkpoint-upload callback, so its `on_save` runs once the upload of the
    checkpoint has started; it raises `Handoff` from there (or from `on_step_end` when a
    SIGTERM leaves no time to save), through the Trainer, like `JobGone`.
    """

    def __init__(
        self,
        task: TaskClock,
        stop: StopSignal,
        *,
        interval_seconds: float,
        reserve_seconds: float,
        grace_seconds: float,
        upload_seconds: Callable[[], float] = lambda: 0.0,
        pause: PauseRequest | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task = task
        self.stop = stop
        self.pause = pause
        self.interval_seconds = interval_seconds
        self.reserve_seconds = reserve_seconds
        self.grace_seconds = grace_seconds
        self.upload_seconds = upload_seconds
        self.clock = clock
        self.last_saved_at = clock()
        self.last_step_at: float | None = None
        self.step_seconds = 0.0
        self.save_seconds = 0.0
        self.save_started: float | None = None
        self.pending: AttemptEnding | None = None

    def checkpoint_seconds(self) -> float:
        """What the last checkpoint took: saving it here, and uploading it."""
        return self.save_seconds + self.upload_seconds()

    def needed_before_deadline(self) -> float:
        """Time to keep before the deadline: a step to finish, then a checkpoint, twice over
        (the next checkpoint may be slower), and never less than the configured reserve."""
        return max(self.reserve_seconds, 2 * (self.step_seconds + self.checkpoint_seconds()))

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.stop.training = True
        self.last_saved_at = self.last_step_at = self.clock()
        if self.stop.requested:  # arrived between the model load and the first step
            raise Handoff(AttemptEnding.INTERRUPTED, step=state.global_step, checkpointed=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.stop.training = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = self.clock()
        if self.last_step_at is not None:
            self.step_seconds = now - self.last_step_at
        self.last_step_at = now
        if state.global_step >= state.max_steps:
            return  # the last step: training ends and the job goes on to export here
        if self.stop.requested:
            waited = now - (self.stop.requested_at or now)
            if self.save_seconds and self.checkpoint_seconds() < self.grace_seconds - waited:
                self._stop_after_saving(control, AttemptEnding.INTERRUPTED)
            else:
                self.stop.training = False
                raise Handoff(AttemptEnding.INTERRUPTED, step=state.global_step, checkpointed=False)
        elif self.pause is not None and self.pause.requested:
            self._stop_after_saving(control, AttemptEnding.PAUSED)
        else:
            remaining = self.task.remaining()
            if remaining is not None and remaining < self.needed_before_deadline():
                logger.info(
                    "%.0f s left before the task deadline: checkpointing to hand off", remaining
                )
                self._stop_after_saving(control, AttemptEnding.DEADLINE)
            elif self.interval_seconds and now - self.last_saved_at >= self.interval_seconds:
                control.should_save = True
        if control.should_save:
            self.save_started = now

    def _stop_after_saving(self, control: Any, reason: AttemptEnding) -> None:
        self.pending = reason
        control.should_save = True
        control.should_training_stop = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = self.clock()
        if self.save_started is not None:
            self.save_seconds = now - self.save_started
        self.save_started = None
        self.last_saved_at = now
        if self.pending is not None:
            self.stop.training = False
            raise Handoff(self.pending, step=state.global_step, checkpointed=True)
