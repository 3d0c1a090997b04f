"""What the main training process sends its followers pickles, whatever reports its messages."""

from __future__ import annotations

import dataclasses
import functools
import pickle
import threading
from pathlib import Path

from tests.unit.test_defaults import config_of, run_of
from trainer.pipeline import for_followers


def test_the_followers_run_leaves_the_job_reporters_behind(tmp_path: Path) -> None:
    unpicklable = threading.Lock()  # as the event reporter's Pub/Sub client is
    run = dataclasses.replace(
        run_of(config_of("sft", "QLoRA"), tmp_path),
        warn=functools.partial(print, unpicklable),
        note=functools.partial(print, unpicklable),
    )

    sent = pickle.loads(pickle.dumps(for_followers(run)))  # noqa: S301 - our own bytes

    assert sent.config == run.config
    sent.note("nothing happens")
    sent.warn("nothing happens")
