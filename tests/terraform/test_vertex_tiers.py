"""Vertex AI tiers declared in terraform/ are what the functions can run.

The Vertex tier of terraform.tfvars.example (commented out there) is planted in a copy of
terraform/ and checked by tools/tfcheck (validate, plan, checkov); the GPU_TIERS and the
environment its plan gives the functions are read back with tuning/tiers.py's parser and
turned into a launcher by tuning/launchers/factory.py, as dispatch would. Tiers the variable
refuses are planned in the same scratch copy: each must fail with one message that names the
field. terraform/tests/vertex.tftest.hcl asserts the resources themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.terraform.conftest import REPO
from tests.terraform.test_tfcheck import TFCHECK, step_status
from tuning.launchers.factory import launcher_for_tier
from tuning.launchers.vertex import VertexLauncher
from tuning.settings import LauncherSettings
from tuning.tiers import VERTEX_GPU_MEMORY_GIB, Engine, parse_tiers

EXAMPLE = "terraform.tfvars.example"
EXAMPLE_TIER = re.compile(r"^# gpu_tiers = \[\n(?:#.*\n)*?# \]\n", re.MULTILINE)
TRAINER_EMAIL = "gemma-tuning-trainer@my-tuning-project.iam.gserviceaccount.com"


def uncomment_example_tier(text: str) -> str:
    """The example with its commented-out gpu_tiers block made live."""
    match = EXAMPLE_TIER.search(text)
    assert match, f"{EXAMPLE} no longer holds a commented-out gpu_tiers block: update this test"
    live = re.sub(r"^# ?", "", match.group(0), flags=re.MULTILINE)
    return text[: match.start()] + live + text[match.end() :]


class Scratch:
    """tfcheck's kept scratch directory: an initialised copy to run terraform in."""

    def __init__(self, workdir: Path, output: str, code: int) -> None:
        self.workdir = workdir
        self.configuration = workdir / "terraform"
        self.output = output
        self.code = code

    def terraform(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.update(
            TF_CLI_CONFIG_FILE=str(self.workdir / "terraformrc"),
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",
            TFCHECK_PROVIDER_SCHEMA=str(
                REPO / "tools" / "tfcheck" / "google-provider-schema.json.gz"
            ),
        )
        env.pop("TF_DATA_DIR", None)
        return subprocess.run(
            ["terraform", *arguments],
            cwd=self.configuration,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    def plan_json(self) -> dict:
        return json.loads((self.workdir / "plan.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def scratch(tfcheck_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scratch]:
    copy = tmp_path_factory.mktemp("vertex") / "terraform"
    shutil.copytree(
        REPO / "terraform",
        copy,
        ignore=shutil.ignore_patterns(
            ".terraform", ".terraform.lock.hcl", "*.tfstate*", "terraform.tfvars", "*.tfplan"
        ),
    )
    example = copy / EXAMPLE
    example.write_text(uncomment_example_tier(example.read_text(encoding="utf-8")), "utf-8")
    # The design tests run in make tf-check and test_tfcheck.py; here: validate, plan, checkov.
    result = subprocess.run(
        [str(tfcheck_python), str(TFCHECK), "--dir", str(copy), "--keep", "--skip", "test"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=REPO,
    )
    output = result.stdout + result.stderr
    kept = re.search(r"^scratch directory kept: (\S+)$", output, re.MULTILINE)
    assert kept, output[-4000:]
    workdir = Path(kept.group(1))
    try:
        yield Scratch(workdir, output, result.returncode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def planned_function_environment(plan: dict, function: str) -> tuple[dict[str, str], set[str]]:
    """A function's planned environment, and the names whose values are known only after apply."""
    address = f'google_cloudfunctions2_function.functions["{function}"]'
    change = next(rc["change"] for rc in plan["resource_changes"] if rc["address"] == address)
    known = change["after"]["service_config"][0]["environment_variables"]
    unknown = change["after_unknown"]["service_config"][0].get("environment_variables") or {}
    return known, {name for name, is_unknown in unknown.items() if is_unknown is True}


def test_the_example_vertex_tier_passes_every_check(scratch: Scratch) -> None:
    assert scratch.code == 0, scratch.output[-6000:]
    for step in ["fmt", "init", "validate", "plan", "checkov"]:
        assert step_status(scratch.output, step) == "ok", scratch.output[-6000:]
    plan = scratch.plan_json()
    planned = {rc["address"] for rc in plan["resource_changes"]}
    assert 'google_project_service.enabled["aiplatform.googleapis.com"]' in planned
    assert 'google_project_iam_custom_role.roles["customJobCreator"]' in planned


def test_the_functions_read_a_vertex_tier_from_gpu_tiers(scratch: Scratch) -> None:
    environment, later = planned_function_environment(scratch.plan_json(), "dispatch")

    tiers = parse_tiers(environment["GPU_TIERS"])

    assert [tier.name for tier in tiers] == ["default", "h100x8"]
    vertex = tiers[1]
    assert vertex.engine is Engine.VERTEX
    assert (vertex.gpu_type, vertex.gpu_count, vertex.machine_type) == (
        "NVIDIA_H100_80GB",
        8,
        "a3-highgpu-8g",
    )
    assert vertex.gpu_memory_gib == VERTEX_GPU_MEMORY_GIB["NVIDIA_H100_80GB"]
    assert vertex.cloud_run_job is None
    assert vertex.task_timeout_seconds == 86400
    assert vertex.allowed_callers == ("you@example.com",)  # kept for its callers (F3)
    assert tiers[0].allowed_callers == ("*",)  # the default tier: every caller
    # The trainer account's email is known once the account exists.
    assert later == {"TRAINER_SERVICE_ACCOUNT"}


def test_dispatch_makes_a_vertex_launcher_from_its_environment(scratch: Scratch) -> None:
    environment, _ = planned_function_environment(scratch.plan_json(), "dispatch")
    settings = LauncherSettings.from_env({**environment, "TRAINER_SERVICE_ACCOUNT": TRAINER_EMAIL})

    launcher = launcher_for_tier(settings, settings.tier("h100x8"))

    assert isinstance(launcher, VertexLauncher)
    assert launcher.parent == "projects/my-tuning-project/locations/us-central1"
    assert (launcher.machine_type, launcher.accelerator_type, launcher.accelerator_count) == (
        "a3-highgpu-8g",
        "NVIDIA_H100_80GB",
        8,
    )
    assert launcher.image_uri == (
        "us-central1-docker.pkg.dev/my-tuning-project/gemma-tuning-trainer/trainer:latest"
    )
    assert launcher.service_account == TRAINER_EMAIL
    assert launcher.task_timeout_seconds == 86400


H100 = 'engine = "vertex", gpu_type = "NVIDIA_H100_80GB"'


@pytest.mark.parametrize(
    ("tier", "message"),
    [
        (f"{H100}, gpu_count = 8", "a vertex tier must name its machine_type"),
        (
            'engine = "vertex", gpu_type = "NVIDIA_H100", gpu_count = 8, '
            'machine_type = "a3-highgpu-8g"',
            "a vertex tier's gpu_type must be a Vertex AI accelerator type",
        ),
        (
            f'{H100}, gpu_count = 8, machine_type = "a2-ultragpu-8g"',
            "a vertex tier's machine_type must be one that carries its gpu_type",
        ),
        (
            f'{H100}, gpu_count = 4, machine_type = "a3-highgpu-8g"',
            "a vertex tier's gpu_count must be a whole number from 1 to 16 and the number of "
            "GPUs its machine_type has",
        ),
        (
            f'{H100}, gpu_count = 8, machine_type = "a3-highgpu-8g", cpu = "208"',
            "cpu and memory are a cloudrun tier's",
        ),
        (
            f'{H100}, gpu_count = 8, machine_type = "a3-highgpu-8g", '
            "task_timeout_seconds = 1209600",
            "a vertex tier's task_timeout_seconds must be a whole number of seconds from 600 "
            "to 604800",
        ),
        (
            'gpu_type = "nvidia-l4", machine_type = "g2-standard-8"',
            "a cloudrun tier has gpu_count 1",
        ),
        ('engine = "gke", gpu_type = "nvidia-l4"', 'engine must be "cloudrun"'),
    ],
    ids=[
        "no-machine-type",
        "unknown-accelerator",
        "machine-without-the-gpu",
        "gpu-count-not-the-machine-s",
        "cloud-run-sizing",
        "timeout-over-seven-days",
        "machine-type-on-cloud-run",
        "unknown-engine",
    ],
)
def test_a_refused_tier_fails_with_one_message_naming_the_field(
    scratch: Scratch, tier: str, message: str
) -> None:
    result = scratch.terraform(
        "plan",
        "-json",
        "-input=false",
        "-lock=false",
        "-refresh=false",
        "-var-file",
        EXAMPLE,
        "-var",
        f'gpu_tiers=[{{ name = "big", {tier} }}]',
    )

    assert result.returncode != 0
    errors = [
        entry["diagnostic"]
        for entry in map(json.loads, result.stdout.splitlines())
        if entry.get("type") == "diagnostic" and entry["diagnostic"]["severity"] == "error"
    ]
    assert [error["summary"] for error in errors] == ["Invalid value for variable"], errors
    assert message in errors[0]["detail"], errors[0]["detail"]
    assert errors[0]["detail"].startswith("gpu_tiers: ")
