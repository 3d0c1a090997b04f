"""The scratch stack the benchmarks and the reliability suite run on.

`tuning.local.scratch.ScratchStack` (a private copy of the local stack on the running
emulators) with dispatch and on_job_event run from `bench/servers/`: the real handlers,
instrumented with a delivery log and, optionally, a launcher that only records (see
`bench/servers/instrument.py`). Trainers, when launched for real, are the fake trainer
of the tests.

    stack = Stack.start(tmp / "stack", functions=("submit", "dispatch", "on_job_event"))
    stack.request("POST", "submit", "/train", json=request)
    stack.launches()   # what the recording launcher was asked to start
    stack.stop()
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.servers.instrument import DELIVERY_LOG_DIR, RECORDING_LAUNCHER_FILE
from tuning.local.bootstrap import DeliveryPolicy
from tuning.local.functions import FUNCTIONS
from tuning.local.scratch import ALL_FUNCTIONS, ScratchStack

REPO = Path(__file__).resolve().parents[1]
FAKE_TRAINER = REPO / "tests" / "fixtures" / "fake_trainer.py"
INSTRUMENTED = {
    # start_function resolves folders under functions/; these live beside it.
    name: replace(FUNCTIONS[name], folder=f"../bench/servers/{name}")
    for name in ("dispatch", "on_job_event")
}
DISPATCH_POLICY = DeliveryPolicy(ack_deadline_seconds=60, max_delivery_attempts=100)
EVENTS_POLICY = DeliveryPolicy(ack_deadline_seconds=30, max_delivery_attempts=5)


class Stack(ScratchStack):
    @classmethod
    def start(  # type: ignore[override]
        cls,
        workdir: Path,
        *,
        functions: Any = ALL_FUNCTIONS,
        recording_launcher: bool = True,
        capture_messages: bool = False,
        dispatch_policy: DeliveryPolicy = DISPATCH_POLICY,
        events_policy: DeliveryPolicy = EVENTS_POLICY,
        **variables: str,
    ) -> Stack:
        for folder in ("deliveries", "fake-records"):
            (workdir / folder).mkdir(parents=True, exist_ok=True)
        instrumentation = {DELIVERY_LOG_DIR: str(workdir / "deliveries")}
        if recording_launcher:
            instrumentation[RECORDING_LAUNCHER_FILE] = str(workdir / "launches.jsonl")
        return super().start(
            workdir,
            functions=functions,
            specs=INSTRUMENTED,
            capture_messages=capture_messages,
            dispatch_policy=dispatch_policy,
            events_policy=events_policy,
            **{
                "LOCAL_TRAINER_COMMAND": f"{sys.executable} {FAKE_TRAINER}",
                "FAKE_TRAINER_RECORD_DIR": str(workdir / "fake-records"),
                "MAX_CONCURRENT_JOBS": "1000",
                "TRAINER_PROGRESS_INTERVAL_SECONDS": "0",
                **instrumentation,
                **variables,
            },
        )

    # What the instrumented functions wrote --------------------------------------

    def deliveries(self, function: str) -> list[dict[str, Any]]:
        """Every push the function received, in the order it finished them."""
        return _read_lines(self.workdir / "deliveries" / f"{function}.jsonl")

    def launches(self) -> list[dict[str, Any]]:
        """What the recording launcher was asked to start (and to cancel)."""
        return _read_lines(self.workdir / "launches.jsonl")


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
