"""No primitive or admin role is granted by this configuration, to anyone."""

from __future__ import annotations

import re
from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck
from tfcheck_conf import first

PRIMITIVE = {"roles/owner", "roles/editor", "roles/viewer"}
# roles/storage.admin, roles/run.admin, roles/secretmanager.admin, roles/iam.roleAdmin, ...
ADMIN = re.compile(r"^roles/[A-Za-z0-9_.]*(\.admin|Admin)$")


class NoAdminRoles(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="No primitive (owner, editor, viewer) or admin role is granted",
            id="CKV_TUNING_4",
            categories=[CheckCategories.IAM],
            supported_resources=["google_*"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        role = first(conf.get("role"))
        if isinstance(role, str) and (role in PRIMITIVE or ADMIN.match(role)):
            return CheckResult.FAILED
        return CheckResult.PASSED


check = NoAdminRoles()
