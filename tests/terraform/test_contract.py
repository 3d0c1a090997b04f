"""terraform/ agrees with the code it deploys: entry points, handler kinds, environment names."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import yaml
from pydantic import AliasChoices

from tests.terraform.conftest import REPO
from tuning import settings
from tuning.gcp.firestore import JobStore

FUNCTIONS_TF = REPO / "terraform" / "functions.tf"
TRAINER_TF = REPO / "terraform" / "trainer.tf"
# Variables Terraform deliberately leaves unset, with the reason.
NOT_FOR_FUNCTIONS = {
    "ID_TOKEN_AUDIENCES",  # behind Cloud Run's IAM every token is checked; for other fronts
    "LOCAL_TRAINER_COMMAND",  # the local launcher only
    "LOCAL_LAUNCHER_DIR",  # the local launcher only
    "TRAINER_MAX_RETRIES",  # the local launcher's retries; Cloud Run's are the job's own
    "THROUGHPUT_COLLECTION",  # the default, <JOBS_COLLECTION>_throughput, suits every deployment
}
NOT_FOR_THE_TRAINER = {
    "JOB_ID",  # dispatch overrides it for each execution
    # The tiers are the functions' (placement, capacity, launchers): the trainer reads none.
    "GPU_TIERS",
    "GPU_PRICING",  # estimates are made before training, by the functions
    "THROUGHPUT_COLLECTION",  # completed jobs' throughput is recorded by on_job_event
    "TRAINER_JOB_NAME",
    "TRAINER_GPU_TYPE",
    "MAX_CONCURRENT_JOBS",
    "CLOUD_RUN_TASK_ATTEMPT",  # set by Cloud Run
    "CLOUD_RUN_EXECUTION",  # set by Cloud Run
    "TRAINER_WORK_DIR",  # the default (/tmp/tuning) suits Cloud Run
    "TRAINER_PROGRESS_INTERVAL_SECONDS",  # the default suits every deployment
    "TRAINER_JOB_CHECK_SECONDS",  # likewise (60 s)
    "TRAINER_ATTEMPT_BASE",  # dispatch overrides it for each execution of a long job
    "TRAINER_STOP_GRACE_SECONDS",  # Cloud Run's SIGTERM-to-SIGKILL grace, the default (10 s)
    "TRAINER_CHECKPOINT_INTERVAL_SECONDS",  # the default (600 s) suits every GPU tier
    "TRAINER_DEADLINE_RESERVE_SECONDS",  # a floor; the trainer measures what it needs
}


def terraform_functions() -> dict[str, dict[str, str]]:
    """name -> {entry_point, kind} from `local.functions` in functions.tf."""
    text = FUNCTIONS_TF.read_text(encoding="utf-8")
    found = re.findall(
        r'^    (\w+) = \{\n      entry_point\s*=\s*"(\w+)"\n      kind\s*=\s*"(\w+)"',
        text,
        flags=re.MULTILINE,
    )
    return {name: {"entry_point": entry, "kind": kind} for name, entry, kind in found}


def function_environment_names() -> set[str]:
    """Every variable functions.tf can give the functions: their environment and what a
    deployment with a Vertex AI tier adds to it (TRAINER_IMAGE, TRAINER_SERVICE_ACCOUNT)."""
    return environment_names(FUNCTIONS_TF, "function_environment") | environment_names(
        FUNCTIONS_TF, "vertex_function_environment"
    )


def environment_names(path: Path, local: str) -> set[str]:
    """Keys of the map `local.<local>` in a .tf file."""
    text = path.read_text(encoding="utf-8")
    start = text.index(f"  {local} = {{")
    body = text[start : text.index("\n  }\n", start)]
    return set(re.findall(r"^\s+([A-Z][A-Z0-9_]*)\s+=", body, flags=re.MULTILINE))


def settings_variables(*models: type[settings.ServiceSettings]) -> set[str]:
    """The first (canonical) environment name of every field of the settings models."""
    names = set()
    for model in models:
        for field in model.model_fields.values():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names.add(str(alias.choices[0]))
    return names


def test_every_function_folder_is_deployed_and_every_deployed_function_exists() -> None:
    folders = {path.parent.name for path in (REPO / "functions").glob("*/main.py")}

    assert set(terraform_functions()) == folders


def test_each_entry_point_is_a_handler_of_the_kind_terraform_wires() -> None:
    decorator = {"api": "http", "scheduled": "http", "push": "cloud_event"}

    for name, function in terraform_functions().items():
        source = (REPO / "functions" / name / "main.py").read_text(encoding="utf-8")
        kind, entry_point = decorator[function["kind"]], function["entry_point"]
        expected = rf"@functions_framework\.{kind}\s*\ndef {entry_point}\("
        assert re.search(expected, source), (
            f"functions/{name}/main.py has no @functions_framework.{decorator[function['kind']]} "
            f"handler named {function['entry_point']} (terraform/functions.tf local.functions)"
        )


def test_functions_get_every_variable_the_settings_read() -> None:
    wanted = settings_variables(settings.ApiSettings, settings.LauncherSettings) | {"LOG_FORMAT"}
    wanted -= NOT_FOR_FUNCTIONS

    missing = wanted - function_environment_names()

    assert not missing, f"terraform/functions.tf function_environment lacks {sorted(missing)}"


def test_the_trainer_gets_every_variable_its_settings_read() -> None:
    wanted = settings_variables(settings.TrainerSettings) | {"LOG_FORMAT"}
    wanted -= NOT_FOR_THE_TRAINER

    missing = wanted - environment_names(TRAINER_TF, "trainer_environment")

    assert not missing, f"terraform/trainer.tf trainer_environment lacks {sorted(missing)}"


def test_terraform_sets_no_variable_the_code_does_not_read() -> None:
    known = settings_variables(
        settings.ApiSettings, settings.LauncherSettings, settings.TrainerSettings
    ) | {"LOG_FORMAT"}

    extra = (
        function_environment_names() | environment_names(TRAINER_TF, "trainer_environment")
    ) - known

    assert not extra, f"terraform sets variables tuning/settings.py never reads: {sorted(extra)}"


def test_the_trainer_build_declares_every_substitution_it_uses() -> None:
    path = REPO / "terraform" / "cloudbuild.trainer.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))

    used = set(re.findall(r"\$\{(_[A-Z0-9_]+)\}", path.read_text(encoding="utf-8")))
    assert used == set(config["substitutions"]), "Cloud Build rejects undeclared substitutions"
    assert config["options"]["logging"] == "CLOUD_LOGGING_ONLY"  # needed with --service-account


def test_every_filter_combination_of_the_job_list_has_its_composite_index() -> None:
    # JobStore.list_jobs filters by owner and/or status (or neither) and orders by two fields:
    # each combination fails in Firestore without its composite index (the emulator never does).
    text = (REPO / "terraform" / "firestore.tf").read_text(encoding="utf-8")
    block = re.search(r"job_list_indexes = \{\n(.*?)\n  \}", text, flags=re.DOTALL)
    assert block is not None
    combinations = {
        tuple(re.findall(r'"(\w+)"', fields))
        for fields in re.findall(r"=\s*\[(.*?)\]", block.group(1))
    }
    parameters = inspect.signature(JobStore.list_jobs).parameters

    assert {"owner", "status"} <= parameters.keys()
    assert combinations == {(), ("status",), ("owner",), ("owner", "status")}


def declared_map(local: str, value: str = r"([\d.]+)") -> dict[str, str]:
    """The quoted keys of the map `local.<local>` in variables.tf, with their values."""
    text = (REPO / "terraform" / "variables.tf").read_text(encoding="utf-8")
    start = text.index(f"  {local} = {{")
    body = text[start : text.index("\n  }\n", start)]
    return dict(re.findall(rf'^\s+"([\w-]+)"\s*=\s*{value}', body, flags=re.MULTILINE))


def test_terraform_counts_each_cloud_run_gpu_s_memory_as_placement_does() -> None:
    from tuning.tiers import CLOUD_RUN_GPU_MEMORY_GIB

    declared = {name: float(gib) for name, gib in declared_map("cloud_run_gpu_memory_gib").items()}

    assert declared == CLOUD_RUN_GPU_MEMORY_GIB


def test_terraform_counts_each_vertex_gpu_s_memory_as_placement_does() -> None:
    from tuning.tiers import VERTEX_GPU_MEMORY_GIB

    declared = {name: float(gib) for name, gib in declared_map("vertex_gpu_memory_gib").items()}

    assert declared == VERTEX_GPU_MEMORY_GIB


def test_every_vertex_accelerator_has_its_machine_types() -> None:
    machines = declared_map("vertex_gpu_machines", r"\{ pattern = \"([^\"]+)\"")

    assert set(machines) == set(declared_map("vertex_gpu_memory_gib"))
    assert all(pattern.startswith("^") and pattern.endswith("$") for pattern in machines.values())
