"""Entry point of the trainer, the Cloud Run GPU job: runs the job named by JOB_ID.

    JOB_ID=training_abc123_gemma-3-1b-it_0a1b2c3d4e5f CLOUD_RUN_TASK_ATTEMPT=0 \\
    PROJECT_ID=my-project GCS_CONFIG_BUCKET_NAME=my-configs \\
    GCS_DATA_BUCKET_NAME=my-data GCS_MODELS_BUCKET_NAME=my-models \\
    HF_HUB_OFFLINE=1 python -m trainer

On a multi-GPU tier, torchrun starts one such process per GPU (trainer.distributed): rank 0
runs the job as described here, the others follow it (trainer.follower) and exit 0 unless
they fail themselves.

Exit codes follow the Cloud Run job contract: 0 when retrying cannot help (the
job completed, failed for a reason that a retry would repeat, or was deleted
or cancelled meanwhile), non-zero when a retry can (a dependency was
unavailable, or an unexpected error). On the last allowed attempt the trainer
publishes `failed` itself, because no retry will come to do it.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from trainer.distributed import Cohort, Ranks, start_process_group
from trainer.errors import HandedOff, JobGone, PermanentError
from trainer.handoff import Interrupted, StopSignal, TaskClock
from tuning.gcp.access_boundary import AccessBoundaryError
from tuning.jobs import ErrorType
from tuning.logs import job_context, redact, setup_logging
from tuning.reporting import EventReporter
from tuning.services import Services
from tuning.settings import SettingsError, TrainerSettings

if TYPE_CHECKING:
    from trainer.export import HubUploader

logger = logging.getLogger("trainer")

EXIT_DONE = 0  # nothing a retry could change
EXIT_RETRY = 1  # Cloud Run retries the task while attempts remain


def main(
    *,
    settings: TrainerSettings | None = None,
    services: Services | None = None,
    hub_uploader: HubUploader | None = None,
) -> int:
    """Run the job from the environment and return the process exit code."""
    ranks = Ranks.from_env()
    with StopSignal().installed() as stop:  # a SIGTERM from here on is handled, not a death
        try:
            start_process_group(ranks)
            if not ranks.is_main:
                return _follow(ranks)
            return _run(
                stop,
                settings=settings,
                services=services,
                hub_uploader=hub_uploader,
                cohort=Cohort(ranks),
            )
        except Interrupted:
            logger.warning("stopped by SIGTERM before the job started")
            return EXIT_RETRY


def _follow(ranks: Ranks) -> int:
    from trainer.follower import follow_training_job

    setup_logging("trainer")
    _quiet_libraries()
    try:
        follow_training_job(ranks)
    except Exception:
        logger.exception("training process %d failed", ranks.rank)
        return EXIT_RETRY
    return EXIT_DONE


def _run(
    stop: StopSignal,
    *,
    settings: TrainerSettings | None,
    services: Services | None,
    hub_uploader: HubUploader | None,
    cohort: Cohort,
) -> int:
    setup_logging("trainer")
    _quiet_libraries()
    try:
        settings = settings or TrainerSettings.from_env()
    except SettingsError as error:
        logger.critical("%s", error.message)
        cohort.release()
        return EXIT_RETRY  # a broken deployment: let the execution show as failed
    services = services or Services(settings)
    reporter = EventReporter(
        services.publisher,
        settings.events_topic,
        job_id=settings.job_id,
        attempt=settings.job_attempt,
        execution=settings.execution,
    )
    # The deadline counts from here, a little after Cloud Run started the task: the
    # deadline reserve (TRAINER_DEADLINE_RESERVE_SECONDS) covers the difference.
    task = TaskClock(settings.task_timeout_seconds)
    with job_context(settings.job_id):
        try:
            return run_and_report(
                settings,
                services,
                reporter,
                hub_uploader=hub_uploader,
                task=task,
                stop=stop,
                cohort=cohort,
            )
        finally:
            cohort.release()  # the other processes, where still waiting, stop too


def run_and_report(
    settings: TrainerSettings,
    services: Services,
    reporter: EventReporter,
    *,
    hub_uploader: HubUploader | None = None,
    task: TaskClock | None = None,
    stop: StopSignal | None = None,
    cohort: Cohort | None = None,
) -> int:
    """Run the pipeline and turn its outcome into events and an exit code."""
    from trainer.export import HuggingFaceHubUploader
    from trainer.pipeline import run_training_job

    logger.info("attempt %d of job %s starting", settings.job_attempt, settings.job_id)
    try:
        run_training_job(
            settings,
            services,
            reporter,
            hub_uploader=hub_uploader or HuggingFaceHubUploader(),
            task=task,
            stop=stop,
            cohort=cohort,
        )
    except HandedOff as handoff:
        logger.info("attempt %d handed the job off (%s)", settings.job_attempt, handoff.message)
        return EXIT_DONE
    except Interrupted:
        # Stopped outside training (a download, the export): the next attempt, or the
        # next execution, starts again from the latest checkpoint.
        logger.warning("attempt %d was interrupted by SIGTERM", settings.job_attempt)
        return EXIT_RETRY
    except JobGone as error:
        logger.warning("stopping without writing: %s", error.message)
        return EXIT_DONE
    except PermanentError as error:
        message = redact(error.message)
        logger.error("job failed (%s, %s): %s", error.error_type.value, error.code, message)
        return _report_failure(reporter, message, error.error_type, error.code, EXIT_DONE)
    except AccessBoundaryError as error:
        # The record names the same paths on every attempt: a retry would be refused again.
        message = redact(error.message)
        logger.error("job failed (%s): %s", error.code, message)
        return _report_failure(reporter, message, ErrorType.SYSTEM, error.code, EXIT_DONE)
    except Exception as error:
        logger.exception("attempt %d failed", settings.attempt)
        if not settings.is_last_attempt:
            return EXIT_RETRY
        message = redact(f"{type(error).__name__}: {error}")
        code = getattr(error, "code", "internal")
        return _report_failure(reporter, message, ErrorType.SYSTEM, code, EXIT_RETRY)
    logger.info("job completed")
    return EXIT_DONE


def _report_failure(
    reporter: EventReporter, message: str, error_type: ErrorType, code: str, exit_code: int
) -> int:
    try:
        reporter.failed(message, error_type=error_type, code=code)
    except Exception:
        # Unreported, the failure would leave the job hanging: let Cloud Run retry the task,
        # which fails the same way and reports it then (or reconcile catches the execution).
        logger.exception("could not publish the failure")
        return EXIT_RETRY
    return exit_code


def _quiet_libraries() -> None:
    """Progress bars and per-step prints would flood Cloud Logging; events carry progress."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    for name in ("transformers", "datasets", "accelerate", "peft", "trl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from trainer.library_warnings import filter_known_warnings

    filter_known_warnings()
