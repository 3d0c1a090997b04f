"""One job's error never stops a reconcile pass for the others (issue 14, defect 3).

Cloud Run refuses `cancel_execution` with PermissionDenied when the caller lacks
run.executions.cancel; the stand-in launcher raises that same google.api_core error for
one execution. Firestore and Pub/Sub are the emulators; the warning a pass publishes is
applied by the real event sink, so the test sees what the job's owner sees.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import flask
import pytest
from google.api_core import exceptions as api_exceptions

from tests.emulator.event_core_fixtures import Core, StandInLauncher, make_job, start_core
from tuning.errors import TransientError
from tuning.event_sink import record_event
from tuning.events import JobEvent, MessageEvent, parse_event
from tuning.gcp.pubsub import Publisher
from tuning.jobs import JobStatus, utcnow
from tuning.launchers import ExecutionState, ExecutionStatus
from tuning.local.scratch import unique_names
from tuning.reconciliation import Action, ReconcileReport, reconcile_jobs
from tuning.services import Services

DENIED = "local-0000000000d1"
ALLOWED = "local-0000000000d2"
ENDED = "local-0000000000d3"
# The text Cloud Run sends with the refusal (the permission it names is the useful part).
REFUSAL = f"Permission 'run.executions.cancel' denied on resource '{DENIED}'"


@dataclass
class RefusingLauncher(StandInLauncher):
    """Cloud Run as it answers an account without run.executions.cancel, for some executions."""

    refused: frozenset[str] = frozenset()
    unavailable: frozenset[str] = frozenset()  # status calls that fail as a Cloud Run outage

    def cancel(self, execution: str) -> None:
        if execution in self.refused:
            raise api_exceptions.PermissionDenied(REFUSAL)
        super().cancel(execution)

    def status(self, execution: str) -> ExecutionStatus:
        if execution in self.unavailable:
            raise TransientError(f"Cloud Run call for {execution} failed: ServiceUnavailable")
        return super().status(execution)


class PublisherFailingFor:
    """The real publisher, except that it refuses every event of one job."""

    def __init__(self, publisher: Publisher, job_id: str) -> None:
        self.publisher = publisher
        self.job_id = job_id

    def publish(self, topic: str, message: Any, **attributes: str) -> str:
        if attributes.get("job_id") == self.job_id:
            raise RuntimeError("publishing refused")
        return self.publisher.publish(topic, message, **attributes)


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> Core:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    core = start_core(unique, RECONCILE_STALE_SECONDS="60", RECONCILE_STALLED_SECONDS="3600")
    launcher = RefusingLauncher(refused=frozenset({DENIED}))
    launcher.statuses.update(
        {
            DENIED: ExecutionStatus(state=ExecutionState.RUNNING),
            ALLOWED: ExecutionStatus(state=ExecutionState.RUNNING),
            ENDED: ExecutionStatus(
                state=ExecutionState.FAILED,
                message="killed",
                finished_at=utcnow() - timedelta(hours=1),
            ),
        }
    )
    core.launcher = launcher
    core.services = Services(core.settings, launcher=launcher)
    return core


def stuck_jobs(core: Core) -> None:
    """Two hung jobs (one whose cancel Cloud Run refuses) and one whose execution died."""
    silent_since = utcnow() - timedelta(hours=2)
    for job_id, execution in (("refused", DENIED), ("hung", ALLOWED), ("killed", ENDED)):
        core.services.jobs.create(
            make_job(
                job_id,
                status=JobStatus.TRAINING,
                execution=execution,
                attempt=1,
                dispatched_at=silent_since,
                last_event_at=silent_since,
            )
        )


def published(core: Core, count: int) -> list[JobEvent]:
    return [parse_event(data) for data in core.pulled(core.events_subscription, count, 5)]


def test_a_refused_cancel_is_recorded_on_its_job_and_the_pass_goes_on(core, caplog):
    stuck_jobs(core)

    report = reconcile_jobs(services=core.services)

    # The others were settled in the same pass.
    assert report.jobs(Action.STALLED) == ["hung"]
    assert report.jobs(Action.FAILED) == ["killed"]
    assert core.launcher.cancelled == [ALLOWED]
    # The refusal is in the report and the log, with the permission Cloud Run named.
    assert list(report.errors) == ["refused"]
    assert "PermissionDenied" in report.errors["refused"]
    assert "run.executions.cancel" in report.errors["refused"]
    assert not report.retry_can_help  # the same refusal would come back on a retry
    assert "job refused not reconciled" in caplog.text
    assert "run.executions.cancel" in caplog.text
    # And on the job itself: a warning in its history, seen through the real event sink.
    events = {event.job_id: event for event in published(core, 3)}
    warning = events["refused"]
    assert isinstance(warning, MessageEvent)
    assert (warning.source, warning.payload.level) == ("reconcile", "warning")
    assert warning.execution == DENIED  # the state machine would ignore another execution's
    assert "PermissionDenied" in warning.payload.text
    assert "tries again on its next pass" in warning.payload.text
    before = core.services.jobs.get("refused")
    record_event(warning, message_id="m1", services=core.services)
    history = core.services.jobs.list_events("refused", limit=10).events
    assert [event["event_id"] for event in history] == [warning.event_id]
    after = core.services.jobs.get("refused")
    # Still training and still silent: the warning does not reset the clock that finds hangs.
    assert after.status is JobStatus.TRAINING
    assert after.last_event_at == before.last_event_at


def test_a_problem_that_persists_stays_one_entry_of_the_job_history(core):
    stuck_jobs(core)

    first = reconcile_jobs(services=core.services)
    second = reconcile_jobs(services=core.services, now=utcnow() + timedelta(minutes=5))

    assert list(first.errors) == list(second.errors) == ["refused"]
    warnings = [event for event in published(core, 5) if event.job_id == "refused"]
    assert len(warnings) == 2
    for event in warnings:
        record_event(event, message_id=event.event_id, services=core.services)
    assert len(core.services.jobs.list_events("refused", limit=10).events) == 1


def test_a_warning_that_cannot_be_published_does_not_stop_the_pass(core, caplog):
    stuck_jobs(core)
    services = Services(
        core.settings,
        launcher=core.launcher,
        publisher=PublisherFailingFor(Publisher(core.settings.project_id), "refused"),
    )

    report = reconcile_jobs(services=services)

    assert report.jobs(Action.STALLED) == ["hung"]
    assert report.jobs(Action.FAILED) == ["killed"]
    assert "not recorded on the job: RuntimeError" in report.errors["refused"]
    assert "job refused: its reconcile problem could not be recorded" in caplog.text


def test_the_reconcile_function_answers_200_with_job_errors_and_503_only_for_transient_ones(
    core, monkeypatch: pytest.MonkeyPatch, unique: str
):
    for name, value in unique_names(unique).items():  # what the module reads at import
        monkeypatch.setenv(name, value)
    main = importlib.import_module("functions.reconcile.main")
    monkeypatch.setattr(main, "SERVICES", core.services)  # the stand-in launcher's services
    stuck_jobs(core)
    app = flask.Flask(__name__)

    with app.test_request_context("/", method="POST"):
        refused = main.reconcile_jobs(flask.request)

    assert refused.status_code == 200  # a retry by Cloud Scheduler would meet the same refusal
    body = refused.get_json()
    assert list(body["errors"]) == ["refused"]
    assert body["failed"] == ["killed"]

    core.launcher.unavailable = frozenset({ALLOWED})
    with app.test_request_context("/", method="POST"):
        flaky = main.reconcile_jobs(flask.request)

    assert flaky.status_code == 503  # a transient error: the scheduler's one retry can help
    assert set(flaky.get_json()["errors"]) == {"refused", "hung"}


def test_a_report_with_only_permanent_errors_asks_for_no_retry():
    report = ReconcileReport(errors={"a": "PermissionDenied: no"})

    assert not report.retry_can_help
    report.transient.add("b")
    assert report.retry_can_help
