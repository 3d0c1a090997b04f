"""The trainer is a GPU job: a Cloud Run job must ask for a GPU Cloud Run offers, with at least
the CPU and memory that GPU needs, at the launch stage it needs.

From "Supported GPU types" on https://cloud.google.com/run/docs/configuring/jobs/gpu: an L4
needs "a minimum of 4 CPU and 16 GiB of memory"; the NVIDIA RTX PRO 6000 Blackwell is in
Preview (launch stage BETA) and needs "a minimum of 20 CPU and 80 GiB of memory". The same
table is `local.cloud_run_gpu_types` in terraform/variables.tf, which refuses such values at
plan time; this check catches a resource that does not take them from the variable.
"""

from __future__ import annotations

import re
from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck
from tfcheck_conf import first, path

# accelerator -> (least CPU, least GiB of memory, launch stages that offer it)
GPU_MINIMUMS: dict[str, tuple[int, float, frozenset[str]]] = {
    "nvidia-l4": (4, 16, frozenset({"GA", "BETA", "ALPHA"})),
    "nvidia-rtx-pro-6000": (20, 80, frozenset({"BETA", "ALPHA"})),
}


def _gibibytes(memory: Any) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Gi|Mi)", str(memory or ""))
    if not match:
        return 0.0
    return float(match[1]) / (1024 if match[2] == "Mi" else 1)


class CloudRunJobGpu(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Cloud Run jobs run on a GPU Cloud Run offers (node_selector accelerator, one "
            "nvidia.com/gpu limit, at least that GPU's CPU and memory, its launch stage)",
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
            if accelerator not in GPU_MINIMUMS:
                return CheckResult.FAILED
            least_cpu, least_memory, stages = GPU_MINIMUMS[accelerator]
            if str(first(conf.get("launch_stage")) or "GA") not in stages:
                return CheckResult.FAILED
            limits = [first(r.get("limits")) or {} for r in path(task, "containers", "resources")]
            if not limits or not all(isinstance(limit, dict) for limit in limits):
                return CheckResult.FAILED
            if not any(str(first(limit.get("nvidia.com/gpu"))) == "1" for limit in limits):
                return CheckResult.FAILED
            for limit in limits:
                cpu = str(first(limit.get("cpu", "0")))
                memory = _gibibytes(first(limit.get("memory")))
                if not cpu.isdigit() or int(cpu) < least_cpu or memory < least_memory:
                    return CheckResult.FAILED
        return CheckResult.PASSED


check = CloudRunJobGpu()
