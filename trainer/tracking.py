"""Weights & Biases: one run per job, resumed by a retried attempt, always finished.

The API key goes to wandb through its settings object, never through the
environment (which child processes and crash reports inherit). W&B is an
observer: if it cannot start, the job trains without it and says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tuning.spec import WandbConfig

logger = logging.getLogger(__name__)


class WandbTracker:
    def __init__(
        self, config: WandbConfig, *, api_key: str | None, job_id: str, directory: Path
    ) -> None:
        self.config = config
        self.api_key = api_key
        self.job_id = job_id
        self.directory = directory
        self.run: Any = None

    def start(self, run_config: dict[str, Any]) -> str | None:
        """Start (or resume) the job's run; returns its URL, None when offline."""
        import wandb

        self.directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.config.project,
            entity=self.config.entity,
            name=self.job_id,
            id=self.job_id,
            resume="allow",  # a retried task attempt continues the same run
            dir=str(self.directory),
            config=run_config,
            settings=wandb.Settings(api_key=self.api_key, console="off", silent=True),
        )
        return self.run.url if self.run is not None else None

    def finish(self, *, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
