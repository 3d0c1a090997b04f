"""Every consumed Pub/Sub subscription must dead-letter what it cannot deliver."""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck
from tfcheck_conf import blocks, first


class PubsubSubscriptionDeadLetter(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Pub/Sub subscriptions have a dead-letter policy "
            "(only a subscription labelled dead-letter-store=true, which keeps a dead-letter "
            "topic's messages, is exempt)",
            id="CKV_TUNING_1",
            categories=[CheckCategories.GENERAL_SECURITY],
            supported_resources=["google_pubsub_subscription"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        labels = first(conf.get("labels")) or {}
        store = first(labels.get("dead-letter-store")) if isinstance(labels, dict) else None
        if str(store).lower() == "true":
            return CheckResult.PASSED
        policies = blocks(conf, "dead_letter_policy")
        if not policies:
            return CheckResult.FAILED
        attempts = first(policies[0].get("max_delivery_attempts"))
        if isinstance(attempts, int | float) and not 5 <= attempts <= 100:
            return CheckResult.FAILED
        return CheckResult.PASSED


check = PubsubSubscriptionDeadLetter()
