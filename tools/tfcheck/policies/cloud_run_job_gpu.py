"""The trainer is a GPU job: a Cloud Run job must ask for an NVIDIA GPU, and CPU and memory."""

from __future__ import annotations

import re
from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck
from tfcheck_conf import first, path


def _gibibytes(memory: Any) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Gi|Mi)", str(memory or ""))
    if not match:
        return 0.0
    return float(match[1]) / (1024 if match[2] == "Mi" else 1)


class CloudRunJobGpu(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Cloud Run jobs run on an NVIDIA GPU (node_selector accelerator, one "
            "nvidia.com/gpu limit, at least 4 CPU and 16Gi)",
            id="CKV_TUNING_3",
            categories=[CheckCategories.GENERAL_SECURITY],
            supported_resources=["google_cloud_run_v2_job"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        task_templates = path(conf, "template", "template")
        if not task_templates:
            return CheckResult.FAILED
        for task in task_templates:
            selectors = path(task, "node_selector")
            accelerator = first(selectors[0].get("accelerator")) if selectors else None
            if not isinstance(accelerator, str) or not accelerator.startswith("nvidia-"):
                return CheckResult.FAILED
            limits = [first(r.get("limits")) or {} for r in path(task, "containers", "resources")]
            if not limits or not all(isinstance(limit, dict) for limit in limits):
                return CheckResult.FAILED
            if not any(str(first(limit.get("nvidia.com/gpu"))) == "1" for limit in limits):
                return CheckResult.FAILED
            for limit in limits:
                cpu = str(first(limit.get("cpu", "0")))
                if not cpu.isdigit() or int(cpu) < 4 or _gibibytes(first(limit.get("memory"))) < 16:
                    return CheckResult.FAILED
        return CheckResult.PASSED


check = CloudRunJobGpu()
