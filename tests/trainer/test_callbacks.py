"""Progress events: throttled by a minimum interval, last step always sent, ETA and tokens/s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from trainer.callbacks import JobWatchCallback, LifecycleEventsCallback
from trainer.errors import JobGone


class RecordingReporter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def training(self, **kwargs: Any) -> None:
        self.calls.append(("training", kwargs))

    def progress_update(self, progress: Any) -> None:
        self.calls.append(("progress", progress))

    def evaluation(self, metrics: Any) -> None:
        self.calls.append(("evaluation", metrics))


@dataclass
class State:
    global_step: int = 0
    max_steps: int = 10
    epoch: float = 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_throttled_but_the_last_step_is_always_sent() -> None:
    reporter, clock, state = RecordingReporter(), Clock(), State(global_step=4)
    callback = LifecycleEventsCallback(
        reporter,
        min_interval_seconds=30,
        wandb_url=None,
        dataset_stats=None,
        clock=clock,  # type: ignore[arg-type]
    )
    callback.on_train_begin(None, state, None)  # resumed at step 4
    sent = []
    for step, tokens in [(5, 100), (6, 200), (7, 300), (10, 600)]:
        clock.now += 10
        state.global_step = step
        callback.on_log(
            None, state, None, logs={"loss": 1.0, "learning_rate": 0.1, "num_tokens": tokens}
        )
        sent = [call[1] for call in reporter.calls if call[0] == "progress"]

    assert reporter.calls[0] == (
        "training",
        {"total_steps": 10, "wandb_url": None, "dataset_stats": None},
    )
    assert [p.step for p in sent] == [5, 10]  # 6 and 7 fell inside the 30 s interval
    assert sent[0].eta_seconds == 50.0  # 10 s for 1 step since the resume, 5 steps to go
    assert sent[-1].eta_seconds == 0.0
    assert sent[-1].tokens_per_second == 30.0  # (600 - 300) tokens in 10 s


def test_evaluation_reports_perplexity_as_exp_of_eval_loss() -> None:
    import math

    reporter = RecordingReporter()
    callback = LifecycleEventsCallback(
        reporter,
        min_interval_seconds=0,
        wandb_url=None,
        dataset_stats=None,  # type: ignore[arg-type]
    )

    callback.on_evaluate(
        None,
        State(global_step=3),
        None,
        metrics={"eval_loss": 2.0, "eval_token_accuracy": 0.5, "eval_runtime": 1.5},
    )

    ((_, metrics),) = reporter.calls
    assert (metrics.eval_loss, metrics.accuracy, metrics.eval_runtime, metrics.step) == (
        2.0,
        0.5,
        1.5,
        3,
    )
    assert metrics.perplexity == math.exp(2.0)


def test_method_metrics_go_out_with_progress_and_evaluations_carry_both() -> None:
    from trainer.metrics import DPO_METRICS

    reporter, clock, state = RecordingReporter(), Clock(), State()
    callback = LifecycleEventsCallback(
        reporter,
        min_interval_seconds=30,
        wandb_url=None,
        dataset_stats=None,
        metrics_plan=DPO_METRICS,
        clock=clock,  # type: ignore[arg-type]
    )
    callback.on_train_begin(None, state, None)

    for step, margin in [(1, 0.1), (2, 0.2)]:  # step 2 falls inside the interval: not sent
        clock.now += 10
        state.global_step = step
        callback.on_log(None, state, None, logs={"loss": 0.6, "rewards/margins": margin})
    callback.on_evaluate(None, state, None, metrics={"eval_loss": 0.5, "eval_rewards/margins": 0.4})
    clock.now += 60
    state.global_step = 3
    callback.on_log(None, state, None, logs={"loss": 0.4, "rewards/margins": 0.3})

    progress = [value for kind, value in reporter.calls if kind == "progress"]
    assert [(p.step, p.metrics) for p in progress] == [
        (1, {"rewards_margins": 0.1}),
        (3, {"rewards_margins": 0.3}),
    ]
    # Only the evaluation is an evaluation event, with the training figures of its step.
    (evaluation,) = [metrics for kind, metrics in reporter.calls if kind == "evaluation"]
    figures = evaluation.model_dump()
    assert (evaluation.step, figures["eval_rewards_margins"]) == (2, 0.4)
    assert figures["rewards_margins"] == 0.2 and figures["eval_loss"] == 0.5
    assert figures["perplexity"] is None  # a DPO loss has no perplexity


def test_training_without_evaluation_publishes_no_evaluation_event() -> None:
    from trainer.metrics import GRPO_METRICS

    reporter, clock, state = RecordingReporter(), Clock(), State()
    callback = LifecycleEventsCallback(
        reporter,
        min_interval_seconds=0,
        wandb_url=None,
        dataset_stats=None,
        metrics_plan=GRPO_METRICS,
        clock=clock,  # type: ignore[arg-type]
    )
    callback.on_train_begin(None, state, None)
    for step in (1, 2):
        clock.now += 1
        state.global_step = step
        callback.on_log(None, state, None, logs={"loss": 0.1, "reward": 0.5, "reward_std": 0.1})

    assert [kind for kind, _ in reporter.calls if kind != "training"] == ["progress", "progress"]


def test_the_job_is_read_once_per_interval_and_a_gone_job_stops_training() -> None:
    clock, reads = Clock(), []

    def ensure_job_active() -> None:
        reads.append(clock.now)
        if len(reads) == 2:
            raise JobGone("job cancelled")

    watch = JobWatchCallback(ensure_job_active, interval_seconds=60, clock=clock)

    for _ in range(5):  # 50 s of steps: no read yet
        clock.now += 10
        watch.on_step_end(None, State(), None)
    clock.now += 10
    watch.on_step_end(None, State(), None)  # 60 s: the first read
    assert reads == [160.0]
    clock.now += 59
    watch.on_step_end(None, State(), None)
    with pytest.raises(JobGone):  # the Trainer lets it through, main() stops quietly
        clock.now += 1
        watch.on_step_end(None, State(), None)
    assert reads == [160.0, 220.0]
