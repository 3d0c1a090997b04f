"""Every permission a custom role in terraform/iam.tf lists is a real permission that custom
roles may hold. IAM refuses to create a custom role naming an unknown permission, or one whose
custom-roles support level is NOT_SUPPORTED (https://cloud.google.com/iam/docs/custom-roles-permissions-support),
so a misspelt name would stop the first `terraform apply`; offline, only this table can tell.

Each entry cites the page that lists the permission. Adding a permission to a custom role means
looking it up there and adding it here with its source.
"""

from __future__ import annotations

import pytest

from tests.terraform.test_iam_contract import custom_roles

CLOUD_RUN = "https://cloud.google.com/run/docs/reference/iam/permissions"
SECRET_MANAGER = "https://cloud.google.com/secret-manager/docs/access-control"
STORAGE = "https://cloud.google.com/storage/docs/access-control/iam-permissions"
IAM_CREDENTIALS = "https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/signBlob"
VERTEX_AI = "https://cloud.google.com/vertex-ai/docs/general/access-control"

# Permission -> where Google lists it (each is SUPPORTED in custom roles).
KNOWN_PERMISSIONS = {
    # "Cancel job executions" (before 2024-09-16, run.jobs.run cancelled them).
    "run.executions.cancel": CLOUD_RUN,
    "run.executions.get": CLOUD_RUN,
    "run.executions.list": CLOUD_RUN,
    "run.jobs.get": CLOUD_RUN,
    "secretmanager.secrets.create": SECRET_MANAGER,
    "secretmanager.secrets.delete": SECRET_MANAGER,
    "secretmanager.secrets.list": SECRET_MANAGER,
    "storage.objects.delete": STORAGE,
    "storage.objects.get": STORAGE,
    "storage.objects.list": STORAGE,
    "iam.serviceAccounts.signBlob": IAM_CREDENTIALS,
    # Create, get and cancel a customJob (by operation: vertex-ai/docs/general/iam-permissions).
    "aiplatform.customJobs.cancel": VERTEX_AI,
    "aiplatform.customJobs.create": VERTEX_AI,
    "aiplatform.customJobs.get": VERTEX_AI,
}


def unknown_permissions(roles: dict[str, frozenset[str]]) -> dict[str, list[str]]:
    return {
        role: sorted(
            permission for permission in permissions if permission not in KNOWN_PERMISSIONS
        )
        for role, permissions in roles.items()
        if any(permission not in KNOWN_PERMISSIONS for permission in permissions)
    }


def test_every_custom_role_lists_only_known_permissions() -> None:
    roles = custom_roles()

    assert roles, "iam.tf's custom_roles was not found"
    assert not unknown_permissions(roles), (
        "look these up in Google's IAM permissions reference and add them to KNOWN_PERMISSIONS "
        f"with their source: {unknown_permissions(roles)}"
    )


@pytest.mark.parametrize("misspelt", ["run.executions.cancle", "storage.object.get"])
def test_a_misspelt_permission_in_a_custom_role_fails(misspelt: str) -> None:
    roles = {**custom_roles(), "planted": frozenset({misspelt, "run.jobs.get"})}

    assert unknown_permissions(roles) == {"planted": [misspelt]}
