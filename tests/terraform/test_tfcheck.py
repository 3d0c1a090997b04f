"""`make tf-check` passes on terraform/ and fails, naming the problem, on each planted fault.

Each test copies terraform/, plants one fault, runs tools/tfcheck/tfcheck.py on the copy
and reads its output. Steps that cannot see the fault are left out (--skip) to save time.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.terraform.conftest import REPO

TFCHECK = REPO / "tools" / "tfcheck" / "tfcheck.py"


def run_tfcheck(python: Path, directory: Path, *skip: str) -> tuple[int, str]:
    command = [str(python), str(TFCHECK), "--dir", str(directory)]
    for step in skip:
        command += ["--skip", step]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=600, cwd=REPO
    )
    return result.returncode, result.stdout + result.stderr


def plant(directory: Path, file: str, old: str, new: str) -> None:
    """Replace `old` (which must be there: a fault that plants nothing proves nothing)."""
    path = directory / file
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{file} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def said(output: str, message: str) -> bool:
    """Whether the output holds the message, however terraform wrapped its lines."""
    return " ".join(message.split()) in " ".join(output.split())


def step_status(output: str, step: str) -> str:
    match = re.search(rf"^  {step}\s+(\S+)", output, re.MULTILINE)
    assert match, f"no summary line for {step}:\n{output[-3000:]}"
    return match.group(1)


def test_the_configuration_passes_every_check(tfcheck_python: Path, terraform_copy: Path) -> None:
    code, output = run_tfcheck(tfcheck_python, terraform_copy)

    assert code == 0, output[-6000:]
    for step in ["fmt", "init", "validate", "test", "plan", "checkov"]:
        assert step_status(output, step) == "ok", output[-6000:]
    assert said(output, "Failed checks: 0")


def test_a_misspelled_attribute_fails_validate(tfcheck_python: Path, terraform_copy: Path) -> None:
    # At the start of a line: the argument of a subscription, not a local named like it.
    plant(terraform_copy, "pubsub.tf", "\n  ack_deadline_seconds =", "\n  ack_deadline_second =")

    code, output = run_tfcheck(tfcheck_python, terraform_copy, "test", "plan")

    assert code != 0
    assert step_status(output, "validate") == "FAILED"
    assert said(output, "Unsupported argument")
    assert said(output, 'An argument named "ack_deadline_second" is not expected here')


def test_a_block_written_as_an_argument_fails_validate(
    tfcheck_python: Path, terraform_copy: Path
) -> None:
    plant(terraform_copy, "pubsub.tf", "  retry_policy {", "  retry_policy = {")

    code, output = run_tfcheck(tfcheck_python, terraform_copy, "test", "plan")

    assert code != 0
    assert step_status(output, "validate") == "FAILED"
    assert said(output, 'An argument named "retry_policy" is not expected here')
    assert said(output, 'Did you mean to define a block of type "retry_policy"?')


def test_a_subscription_without_dead_letter_policy_fails(
    tfcheck_python: Path, terraform_copy: Path
) -> None:
    plant(
        terraform_copy,
        "pubsub.tf",
        """  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = each.value.max_delivery_attempts
  }
""",
        "",
    )

    code, output = run_tfcheck(tfcheck_python, terraform_copy)

    assert code != 0
    # terraform test's design assertion...
    assert step_status(output, "test") == "FAILED"
    assert said(output, "Every push subscription must dead-letter to its own dead-letter topic.")
    # ...and the custom checkov policy, on the resolved plan.
    assert step_status(output, "checkov") == "FAILED"
    assert re.search(
        r"CKV_TUNING_1.*\n.*FAILED for resource: google_pubsub_subscription\.push", output
    )


def test_an_all_users_invoker_fails(tfcheck_python: Path, terraform_copy: Path) -> None:
    # A public invoker added as a grant of the list, and one as a resource of its own.
    plant(
        terraform_copy,
        "iam.tf",
        "  function_invoker_grants = concat(\n    [\n",
        "  function_invoker_grants = concat(\n    [\n"
        '      { account = "allUsers", function = "status", why = "a public status page" },\n',
    )
    with (terraform_copy / "iam.tf").open("a", encoding="utf-8") as handle:
        handle.write(
            """
resource "google_cloud_run_v2_service_iam_member" "public" {
  name     = google_cloudfunctions2_function.functions["submit"].name
  location = var.region
  member   = "allUsers"
  role     = "roles/run.invoker"
}
"""
        )

    code, output = run_tfcheck(tfcheck_python, terraform_copy)

    assert code != 0
    assert step_status(output, "test") == "FAILED"
    assert said(output, "Nothing may be granted to allUsers or allAuthenticatedUsers.")
    assert step_status(output, "checkov") == "FAILED"
    assert re.search(
        r"CKV_TUNING_2.*\n.*FAILED for resource: google_cloud_run_v2_service_iam_member\.public",
        output,
    )


def test_a_trainer_without_gpu_and_an_admin_role_fail_checkov(
    tfcheck_python: Path, terraform_copy: Path
) -> None:
    plant(
        terraform_copy,
        "trainer.tf",
        """      node_selector {
        accelerator = each.value.gpu.type
      }
""",
        "",
    )
    plant(
        terraform_copy,
        "iam.tf",
        '{ account = "trainer", bucket = "models", role = "roles/storage.objectUser",',
        '{ account = "trainer", bucket = "models", role = "roles/storage.admin",',
    )

    code, output = run_tfcheck(tfcheck_python, terraform_copy, "test")

    assert code != 0
    assert step_status(output, "checkov") == "FAILED"
    assert re.search(
        r"CKV_TUNING_3.*\n.*FAILED for resource: google_cloud_run_v2_job\.trainer", output
    )
    assert re.search(
        r"CKV_TUNING_4.*\n.*FAILED for resource: google_storage_bucket_iam_member\.grants", output
    )


def test_an_unformatted_file_fails_fmt(tfcheck_python: Path, terraform_copy: Path) -> None:
    plant(
        terraform_copy, "scheduler.tf", '  time_zone        = "Etc/UTC"', '  time_zone = "Etc/UTC"'
    )

    code, output = run_tfcheck(tfcheck_python, terraform_copy, "test", "plan")

    assert code != 0
    assert step_status(output, "fmt") == "FAILED"
    assert said(output, "scheduler.tf")


def test_a_builder_that_cannot_read_function_sources_fails(
    tfcheck_python: Path, terraform_copy: Path
) -> None:
    # The first deployment's builds would fail fetching gcf-v2-sources-<number>-<region>/...
    grant = '{ account = "builder", role = "roles/storage.objectViewer", function_sources_only'
    plant(terraform_copy, "iam.tf", f"    {grant}", f"    # {grant}")

    code, output = run_tfcheck(tfcheck_python, terraform_copy, "plan")

    assert code != 0
    assert step_status(output, "test") == "FAILED"
    assert said(output, "The function builder must be able to read the function sources")


def test_a_reconcile_account_that_cannot_cancel_fails(
    tfcheck_python: Path, terraform_copy: Path
) -> None:
    # Back to read-only: stop_stalled's cancel would be refused on every pass.
    plant(
        terraform_copy,
        "iam.tf",
        '{ account = "reconcile", role = "custom:executionCanceller",',
        '{ account = "reconcile", role = "roles/run.viewer",',
    )

    code, output = run_tfcheck(tfcheck_python, terraform_copy, "plan")

    assert code != 0
    assert step_status(output, "test") == "FAILED"
    assert said(output, "each needs run.executions.cancel on the trainer job.")


@pytest.mark.parametrize(
    ("planted", "replacement"),
    [
        # A job that does not take its sizing from the (validated) variable.
        (
            "            cpu              = each.value.gpu.cpu",
            '            cpu              = "2"',
        ),
        (
            "            memory           = each.value.gpu.memory",
            '            memory           = "8Gi"',
        ),
    ],
    ids=["too-few-cpus", "too-little-memory"],
)
def test_a_gpu_job_below_its_gpus_minimum_fails_checkov(
    tfcheck_python: Path, terraform_copy: Path, planted: str, replacement: str
) -> None:
    plant(terraform_copy, "trainer.tf", planted, replacement)

    code, output = run_tfcheck(tfcheck_python, terraform_copy, "test")

    assert code != 0
    assert step_status(output, "checkov") == "FAILED"
    assert re.search(
        r"CKV_TUNING_3.*\n.*FAILED for resource: google_cloud_run_v2_job\.trainer", output
    )


def test_a_preview_gpu_outside_the_beta_launch_stage_fails_checkov(
    tfcheck_python: Path, terraform_copy: Path
) -> None:
    # The RTX PRO 6000 is in preview: a job asking for it at GA is refused by Cloud Run.
    plant(
        terraform_copy,
        "trainer.tf",
        "accelerator = each.value.gpu.type",
        'accelerator = "nvidia-rtx-pro-6000"',
    )
    plant(
        terraform_copy,
        "trainer.tf",
        "cpu              = each.value.gpu.cpu",
        'cpu              = "20"',
    )
    plant(
        terraform_copy,
        "trainer.tf",
        "memory           = each.value.gpu.memory",
        'memory           = "80Gi"',
    )

    code, output = run_tfcheck(tfcheck_python, terraform_copy, "test")

    assert code != 0
    assert step_status(output, "checkov") == "FAILED"
    assert re.search(
        r"CKV_TUNING_3.*\n.*FAILED for resource: google_cloud_run_v2_job\.trainer", output
    )
