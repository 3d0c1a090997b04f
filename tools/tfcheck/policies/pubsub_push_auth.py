"""Push subscriptions authenticate (OIDC) and outlast their handler before redelivery."""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck
from tfcheck_conf import blocks, first


class PubsubPushAuthenticated(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Push subscriptions push to HTTPS with an OIDC token, with an explicit retry "
            "policy and an ack deadline of at least 60s",
            id="CKV_TUNING_5",
            categories=[CheckCategories.IAM],
            supported_resources=["google_pubsub_subscription"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        pushes = blocks(conf, "push_config")
        if not pushes:
            return CheckResult.PASSED  # a pull subscription
        push = pushes[0]
        endpoint = first(push.get("push_endpoint"))
        # In a plan an endpoint known only after apply reads as the name of what it refers to.
        if isinstance(endpoint, str) and "://" in endpoint and not endpoint.startswith("https://"):
            return CheckResult.FAILED
        tokens = blocks(push, "oidc_token")
        if not tokens or not first(tokens[0].get("service_account_email")):
            return CheckResult.FAILED
        if not blocks(conf, "retry_policy"):
            return CheckResult.FAILED
        deadline = first(conf.get("ack_deadline_seconds"))
        if not isinstance(deadline, int | float) or deadline < 60:
            return CheckResult.FAILED
        return CheckResult.PASSED


check = PubsubPushAuthenticated()
