"""Each deployable is granted, in terraform/iam.tf, every IAM permission its code can need.

What a call needs is declared once, on the adapter operation that makes it
(`@requires`, tuning/gcp/permissions.py); which operations a deployable reaches is
derived from its source (tests/terraform/iam_reach.py); what an account holds is read
from iam.tf's grant lists, predefined roles expanded by `PREDEFINED_ROLES` below and
custom roles by iam.tf's own `custom_roles`. Limits: see both modules' docstrings (the
check is per account, not per bucket, topic or condition).
"""

from __future__ import annotations

import copy
import re
import shutil

import pytest

from tests.terraform import iam_reach
from tests.terraform.conftest import REPO
from tests.terraform.iam_reach import PRODUCTION_ADAPTERS, Use, every_adapter_call_site, uses_of
from tuning.gcp.permissions import operations_of
from tuning.services import Services

IAM_TF = REPO / "terraform" / "iam.tf"
FUNCTIONS_TF = REPO / "terraform" / "functions.tf"
TRAINER_TF = REPO / "terraform" / "trainer.tf"

# The permissions of the predefined roles iam.tf grants, as far as the operations here can
# need them: a subset of each role (a permission left out can only fail the test, never
# pass it wrongly). From the per-service pages of
# https://cloud.google.com/iam/docs/roles-permissions: firestore, storage, pubsub,
# secretmanager, run, iam, logging.
PREDEFINED_ROLES: dict[str, frozenset[str]] = {
    "roles/datastore.user": frozenset(
        {
            "datastore.databases.get",
            "datastore.entities.create",
            "datastore.entities.delete",
            "datastore.entities.get",
            "datastore.entities.list",
            "datastore.entities.update",
        }
    ),
    "roles/datastore.viewer": frozenset({"datastore.entities.get", "datastore.entities.list"}),
    "roles/storage.objectViewer": frozenset({"storage.objects.get", "storage.objects.list"}),
    "roles/storage.objectUser": frozenset(
        {
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.get",
            "storage.objects.list",
            "storage.objects.update",
        }
    ),
    "roles/pubsub.publisher": frozenset({"pubsub.topics.publish"}),
    "roles/pubsub.subscriber": frozenset({"pubsub.subscriptions.consume"}),
    "roles/secretmanager.secretAccessor": frozenset({"secretmanager.versions.access"}),
    "roles/secretmanager.secretVersionAdder": frozenset({"secretmanager.versions.add"}),
    "roles/run.viewer": frozenset({"run.executions.get", "run.executions.list", "run.jobs.get"}),
    "roles/run.jobsExecutorWithOverrides": frozenset({"run.jobs.run", "run.jobs.runWithOverrides"}),
    "roles/iam.serviceAccountUser": frozenset({"iam.serviceAccounts.actAs"}),
    "roles/iam.serviceAccountTokenCreator": frozenset(
        {"iam.serviceAccounts.getOpenIdToken", "iam.serviceAccounts.signBlob"}
    ),
    "roles/logging.logWriter": frozenset({"logging.logEntries.create"}),
}
# Gaps this contract found that a terraform change must close (the test fails when one is
# closed and its entry is left here, so the list cannot go stale):
AWAITED_GRANTS: set[tuple[str, str]] = set()


def grants_by_account() -> dict[str, list[str]]:
    """account key -> the roles iam.tf grants it (predefined names, or "custom:<key>")."""
    text = IAM_TF.read_text(encoding="utf-8")
    grants: dict[str, list[str]] = {}
    for account, role in re.findall(r'\{ account = "([\w-]+)",[^\n]*?\brole = "([^"]+)"', text):
        grants.setdefault(account, []).append(role)
    return grants


def custom_roles() -> dict[str, frozenset[str]]:
    text = IAM_TF.read_text(encoding="utf-8")
    block = text[
        text.index("  custom_roles = {") : text.index("\n  }\n", text.index("  custom_roles = {"))
    ]
    roles = {}
    for key, body in re.findall(r"^    (\w+) = \{\n(.*?)^    \}", block, flags=re.M | re.S):
        listed = re.search(r"permissions\s*=\s*\[(.*?)\]", body, flags=re.S)
        assert listed is not None, f"custom role {key} lists no permissions"
        roles[key] = frozenset(re.findall(r'"([\w.]+)"', listed.group(1)))
    return roles


def permissions_of(roles: list[str], custom: dict[str, frozenset[str]]) -> set[str]:
    held: set[str] = set()
    for role in roles:
        if role.startswith("custom:"):
            held |= custom[role.removeprefix("custom:")]
        else:
            assert role in PREDEFINED_ROLES, (
                f"iam.tf grants {role}: add its permissions to PREDEFINED_ROLES, with its page"
            )
            held |= PREDEFINED_ROLES[role]
    return held


def deployables() -> dict[str, tuple[str, str]]:
    """name -> (entry module, service account key), as functions.tf and trainer.tf wire them."""
    functions = re.findall(
        r"^    (\w+) = \{\n      entry_point", FUNCTIONS_TF.read_text(encoding="utf-8"), re.M
    )
    # functions.tf: service_account_email = accounts[replace(each.key, "_", "-")]
    assert 'accounts[replace(each.key, "_", "-")]' in FUNCTIONS_TF.read_text(encoding="utf-8")
    assert 'accounts["trainer"].email' in TRAINER_TF.read_text(encoding="utf-8")
    found = {name: (f"functions.{name}.main", name.replace("_", "-")) for name in functions}
    found["trainer"] = ("trainer.main", "trainer")
    return found


def missing_grants(
    grants: dict[str, list[str]], custom: dict[str, frozenset[str]]
) -> dict[tuple[str, str], list[Use]]:
    """(account, permission) -> the uses that need it, for every permission not granted."""
    missing: dict[tuple[str, str], list[Use]] = {}
    for _, (entry, account) in sorted(deployables().items()):
        held = permissions_of(grants.get(account, []), custom)
        for use in uses_of(entry):
            if use.needed.outside_terraform is not None:
                continue
            for permission in sorted(use.needed.permissions - held):
                missing.setdefault((account, permission), []).append(use)
    return missing


def describe(missing: dict[tuple[str, str], list[Use]]) -> str:
    return "\n".join(
        f"{account} lacks {permission}, needed by "
        + ", ".join(sorted({f"{u.adapter}.{u.method} (from {u.caller})" for u in uses}))
        for (account, permission), uses in sorted(missing.items())
    )


@pytest.fixture(scope="module")
def parsed() -> tuple[dict[str, list[str]], dict[str, frozenset[str]]]:
    return grants_by_account(), custom_roles()


def test_every_deployable_is_granted_every_permission_its_calls_need(parsed):
    grants, custom = parsed

    missing = missing_grants(grants, custom)

    unexpected = {key: uses for key, uses in missing.items() if key not in AWAITED_GRANTS}
    assert not unexpected, describe(unexpected)
    landed = AWAITED_GRANTS - set(missing)
    assert not landed, f"granted now, remove from AWAITED_GRANTS: {sorted(landed)}"


def test_removing_a_grant_the_code_needs_fails_the_contract(parsed):
    grants, custom = parsed
    planted = copy.deepcopy(grants)
    planted["status"].remove("custom:urlSigner")  # status signs download URLs

    missing = missing_grants(planted, custom)

    assert ("status", "iam.serviceAccounts.signBlob") in missing
    assert "storage.signed_url" in describe(missing)


def test_a_call_added_without_its_grant_fails_the_contract(parsed, tmp_path, monkeypatch):
    grants, custom = parsed
    for package in iam_reach.PACKAGES:  # a copy of the source to plant the new call in
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    status = tmp_path / "functions" / "status" / "main.py"
    status.write_text(
        status.read_text(encoding="utf-8")
        + "\n\ndef peek(reference: str) -> str:\n    return API.services.secrets.get(reference)\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(iam_reach, "REPO", tmp_path)
    iam_reach.load.cache_clear()
    try:
        missing = missing_grants(grants, custom)
    finally:
        iam_reach.load.cache_clear()

    assert ("status", "secretmanager.versions.access") in missing
    assert "functions.status.main:peek" in describe(missing)


def test_a_publisher_without_the_topic_grant_fails_the_contract(parsed):
    grants, custom = parsed
    planted = copy.deepcopy(grants)
    planted["trainer"].remove("roles/pubsub.publisher")  # the trainer publishes its events

    missing = missing_grants(planted, custom)

    assert ("trainer", "pubsub.topics.publish") in missing


def test_the_walk_sees_each_deployables_known_calls():
    # Spot checks that the derivation follows calls through the layers, not just imports.
    uses = {
        name: {(u.adapter, u.method) for u in uses_of(entry)}
        for name, (entry, _) in deployables().items()
    }

    assert ("launcher", "launch") in uses["dispatch"]
    assert ("launcher", "cancel") in uses["reconcile"]  # stop_stalled
    assert ("launcher", "launch") not in uses["reconcile"]  # imports dispatching, never launches
    assert ("storage", "signed_url") in uses["status"]
    assert ("secrets", "get") in uses["trainer"]
    assert not any(adapter == "secrets" for adapter, _ in uses["status"])


def test_every_adapter_call_in_the_code_is_reached_by_some_deployable():
    # A call site no deployable reaches means the walk lost a path (or dead code).
    reached = {
        (u.caller.split(":")[0], u.adapter, u.method)
        for _, (e, _) in deployables().items()
        for u in uses_of(e)
    }
    ignored_packages = ("tuning.local", "tuning.cli")  # the local stack and the operator's CLI

    lost = {
        site
        for site in every_adapter_call_site()
        if site not in reached and not site[0].startswith(ignored_packages)
    }

    assert not lost, f"adapter calls no deployable reaches: {sorted(lost)}"


def test_every_services_adapter_has_its_production_class():
    attributes = {name for name, value in vars(Services).items() if hasattr(value, "func")}

    assert attributes == set(PRODUCTION_ADAPTERS)


# Public members of the adapters that make no Google API call of their own.
NO_API_CALL = {
    "GcsStore": {"narrowed"},  # a copy with a narrower credential: no request is made
    "CloudRunLauncher": {"executions_client", "jobs_client"},  # client factories
    # An authorized HTTP session (credentials only) and the CustomJob body it would send.
    "VertexLauncher": {"session", "custom_job"},
}


def test_every_public_adapter_method_declares_what_it_needs():
    # An operation without a mark is invisible to the contract: a new one must carry it.
    for adapters in PRODUCTION_ADAPTERS.values():
        for adapter in adapters:
            marked = operations_of(adapter)
            public = {name for name in vars(adapter) if not name.startswith("_")}

            assert public - set(marked) == NO_API_CALL.get(adapter.__name__, set()), (
                adapter.__name__
            )


def test_each_launcher_operation_needs_what_every_launcher_class_declares():
    # A deployment with Cloud Run and Vertex AI tiers launches, reads and cancels through
    # both classes: dispatch, delete and reconcile need the permissions of each.
    uses = {
        name: {u.needed.permissions for u in uses_of(entry) if u.adapter == "launcher"}
        for name, (entry, _) in deployables().items()
    }

    assert (
        frozenset({"aiplatform.customJobs.create", "iam.serviceAccounts.actAs"}) in uses["dispatch"]
    )
    assert (
        frozenset({"run.jobs.run", "run.jobs.runWithOverrides", "iam.serviceAccounts.actAs"})
        in (uses["dispatch"])
    )
    assert frozenset({"aiplatform.customJobs.cancel"}) in uses["delete"]
    assert frozenset({"aiplatform.customJobs.get"}) in uses["reconcile"]
    assert not uses["trainer"]


def test_a_vertex_permission_left_out_of_its_role_fails_the_contract(parsed):
    grants, custom = parsed
    planted = {**custom, "customJobCanceller": frozenset({"aiplatform.customJobs.get"})}

    missing = missing_grants(grants, planted)

    assert ("reconcile", "aiplatform.customJobs.cancel") in missing
    assert ("delete", "aiplatform.customJobs.cancel") in missing
    assert "launcher.cancel" in describe(missing)
