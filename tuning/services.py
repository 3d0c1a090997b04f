"""The adapters one deployable talks to, built lazily from its settings.

Creating Google clients costs time at cold start, so each adapter is made on
first use and then reused for the life of the process. Tests pass their own
adapters (or the real ones pointed at the emulators) as keyword arguments.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from tuning.settings import SecretBackend, ServiceSettings

if TYPE_CHECKING:
    from tuning.gcp.firestore import JobStore
    from tuning.gcp.pubsub import Publisher
    from tuning.gcp.secrets import SecretStore
    from tuning.gcp.storage import GcsStore
    from tuning.gcp.throughput import ThroughputStore
    from tuning.jobs import JobRecord
    from tuning.launchers import Launcher


class Services:
    def __init__(self, settings: ServiceSettings, **overrides: Any) -> None:
        self.settings = settings
        known = {"jobs", "publisher", "storage", "secrets", "launcher", "throughput"}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown service override(s): {sorted(unknown)}")
        # cached_property reads the instance dict first, so overrides win.
        self.__dict__.update(overrides)
        self._overrides = frozenset(overrides)
        self._tier_launchers: dict[str, Launcher] = {}

    @cached_property
    def jobs(self) -> JobStore:
        from tuning.gcp.firestore import JobStore

        return JobStore(self.settings.project_id, collection=self.settings.jobs_collection)

    @cached_property
    def throughput(self) -> ThroughputStore:
        """The deployment's measured training throughput (tuning/pricing.py's history)."""
        from tuning.gcp.throughput import ThroughputStore

        return ThroughputStore(self.jobs.client, self.settings.throughput_collection_name)

    @cached_property
    def publisher(self) -> Publisher:
        from tuning.gcp.pubsub import Publisher

        return Publisher(self.settings.project_id)

    @cached_property
    def storage(self) -> GcsStore:
        from tuning.gcp.storage import GcsStore

        return GcsStore()

    @cached_property
    def secrets(self) -> SecretStore:
        from tuning.gcp.secrets import LocalSecretStore, SecretManagerStore

        if self.settings.secret_backend is SecretBackend.LOCAL:
            return LocalSecretStore(
                project=self.settings.project_id, prefix=self.settings.secret_prefix
            )
        return SecretManagerStore(self.settings.project_id, prefix=self.settings.secret_prefix)

    @cached_property
    def launcher(self) -> Launcher:
        """The launcher of the deployment's first tier (what a job without a tier uses)."""
        from tuning.launchers.factory import launcher_from_settings

        return launcher_from_settings(self.settings)

    def use(self, **overrides: Any) -> None:
        """Replace adapters after construction (instrumented servers): as if passed in."""
        self.__dict__.update(overrides)
        self._overrides = self._overrides | set(overrides)

    def launcher_for(self, job: JobRecord) -> Launcher:
        """The launcher of the job's tier; a `launcher` override serves every tier."""
        if "launcher" in self._overrides:
            return self.launcher
        tier = self.settings.tier(job.placement.tier if job.placement else None)
        if tier.name not in self._tier_launchers:
            from tuning.launchers.factory import launcher_for_tier

            self._tier_launchers[tier.name] = launcher_for_tier(self.settings, tier)
        return self._tier_launchers[tier.name]
