"""No IAM grant of any kind to allUsers or allAuthenticatedUsers."""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck
from tfcheck_conf import first

PUBLIC = {"allusers", "allauthenticatedusers"}


class NoPublicMembers(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="No IAM member or binding grants anything to allUsers or allAuthenticatedUsers",
            id="CKV_TUNING_2",
            categories=[CheckCategories.IAM],
            # Every google_*_iam_member / _iam_binding resource (matched in scan below).
            supported_resources=["google_*"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        members: list[Any] = []
        member = first(conf.get("member"))
        if member is not None:
            members.append(member)
        many = first(conf.get("members"))
        if isinstance(many, list):
            members.extend(many)
        elif isinstance(many, str):
            members.append(many)
        if any(str(value).strip().lower() in PUBLIC for value in members):
            return CheckResult.FAILED
        return CheckResult.PASSED


check = NoPublicMembers()
