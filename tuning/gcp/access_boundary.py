"""What one trainer job may touch in Cloud Storage, as a Credential Access Boundary.

The trainer runs every tenant's jobs under one service account, which may read every dataset
and write every job's outputs. At start it narrows its own credentials to the job it runs:
`job_storage_boundary` describes that job's paths as a few rules, built from the job record
alone; `to_credential_access_boundary` turns them into the boundary that Google's Security
Token Service enforces on a downscoped token; and `GcsStore` enforces the same rules itself,
so the local stack (fake-gcs-server checks no credentials) refuses what production would.

Facts from Google's "Restrict a credential's Cloud Storage permissions with Credential Access
Boundaries" (https://cloud.google.com/iam/docs/downscoping-short-lived-credentials): a boundary
holds at most 10 rules; each names a bucket as
`//storage.googleapis.com/projects/_/buckets/BUCKET`, caps its permissions by roles written
`inRole:roles/...`, and may carry a CEL condition. Objects are matched on `resource.name`
(`projects/_/buckets/BUCKET/objects/NAME`); a list request's resource is the bucket, so listing
below a prefix is matched on `api.getAttribute('storage.googleapis.com/objectListPrefix', '')`.
Those two, with `startsWith`, are the expressions that page's examples use, and the ones the
rules below are written in (an exact object adds CEL's `==` on the same `resource.name`).

A rule caps its objects' permissions by a role: objectViewer (read and list), objectUser
(also create, overwrite, delete) or objectCreator, which "allows users to create objects" and
"does not give permission to view, delete, or replace objects"
(https://cloud.google.com/storage/docs/access-control/iam-roles): what a job gets on a marker
it may create but never change once written (trainer/hub_staging.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tuning.errors import TuningError
from tuning.layout import GCS_SCHEME, StorageLayout, parse_gcs_uri

if TYPE_CHECKING:
    from google.auth import downscoped

    from tuning.jobs import JobRecord
    from tuning.tenancy import BaseModelLocations

# https://cloud.google.com/iam/docs/downscoping-short-lived-credentials: "A Credential Access
# Boundary can contain up to 10 access boundary rules."
MAX_RULES = 10
# The predefined roles that cap each kind of rule: objectViewer reads and lists; objectUser
# also creates, overwrites and deletes objects (no IAM or ACL changes).
READ_ROLE = "inRole:roles/storage.objectViewer"
READ_WRITE_ROLE = "inRole:roles/storage.objectUser"
CREATE_ROLE = "inRole:roles/storage.objectCreator"
LIST_PREFIX_ATTRIBUTE = "storage.googleapis.com/objectListPrefix"


class AccessBoundaryError(TuningError):
    """The job's storage was asked for something outside its boundary; never retried."""

    code = "outside_access_boundary"
    http_status = 403


class Access(StrEnum):
    READ = "read"
    READ_WRITE = "read-write"
    CREATE = "create"  # create where nothing is; no read, list, overwrite or delete


class Operation(StrEnum):
    READ = "read"
    LIST = "list"
    WRITE = "write"  # create or overwrite
    CREATE = "create"  # create only if no object is there (ifGenerationMatch=0)
    DELETE = "delete"


# Which rules allow an operation: a create-only rule allows creating and nothing else.
_ALLOWED_BY = {
    Operation.READ: (Access.READ, Access.READ_WRITE),
    Operation.LIST: (Access.READ, Access.READ_WRITE),
    Operation.WRITE: (Access.READ_WRITE,),
    Operation.CREATE: (Access.READ_WRITE, Access.CREATE),
    Operation.DELETE: (Access.READ_WRITE,),
}
_ROLES = {Access.READ: READ_ROLE, Access.READ_WRITE: READ_WRITE_ROLE, Access.CREATE: CREATE_ROLE}


@dataclass(frozen=True)
class StorageRule:
    """Objects of one bucket the job may use: one exact object, or every name below a prefix.

    A prefix rule also allows listing below its prefix unless `listable` is false; an empty
    prefix is the whole bucket.
    """

    bucket: str
    name: str
    exact: bool = False
    access: Access = Access.READ
    listable: bool = True

    def covers(self, bucket: str, name: str) -> bool:
        if bucket != self.bucket:
            return False
        return name == self.name if self.exact else name.startswith(self.name)

    def covers_listing(self, bucket: str, prefix: str) -> bool:
        return (
            bucket == self.bucket
            and not self.exact
            and self.listable
            and prefix.startswith(self.name)
        )

    def expression(self) -> str:
        """This rule's CEL condition (see the module docstring for the attribute names)."""
        resource = f"projects/_/buckets/{self.bucket}/objects/{self.name}"
        if self.exact:
            return f"resource.name == {_cel_string(resource)}"
        clause = f"resource.name.startsWith({_cel_string(resource)})"
        if self.listable:
            listed = f"api.getAttribute({_cel_string(LIST_PREFIX_ATTRIBUTE)}, '')"
            clause += f" || {listed}.startsWith({_cel_string(self.name)})"
        return clause


@dataclass(frozen=True)
class StorageBoundary:
    """Everything a job's storage may do: any operation no rule allows is refused."""

    rules: tuple[StorageRule, ...]

    def allows(self, operation: Operation, uri: str) -> bool:
        bucket, name = parse_gcs_uri(uri)
        rules = [rule for rule in self.rules if rule.access in _ALLOWED_BY[operation]]
        if operation is Operation.LIST:
            return any(rule.covers_listing(bucket, name) for rule in rules)
        return any(rule.covers(bucket, name) for rule in rules)

    def check(self, operation: Operation, uri: str) -> None:
        """Raise AccessBoundaryError unless a rule allows `operation` on `uri`."""
        if not self.allows(operation, uri):
            raise AccessBoundaryError(
                f"{operation.value} of {uri} is outside this job's storage access boundary "
                "(its config, dataset, base model and own outputs)"
            )

    def to_credential_access_boundary(self) -> downscoped.CredentialAccessBoundary:
        """The boundary for google-auth's downscoped credentials: one rule per bucket and
        access, its condition the rules' expressions joined with ||."""
        from google.auth import downscoped

        groups: dict[tuple[str, Access], list[StorageRule]] = {}
        for rule in self.rules:
            groups.setdefault((rule.bucket, rule.access), []).append(rule)
        if len(groups) > MAX_RULES:
            raise TuningError(f"{len(groups)} access boundary rules; Google allows {MAX_RULES}")
        return downscoped.CredentialAccessBoundary(
            rules=[
                downscoped.AccessBoundaryRule(
                    available_resource=f"//storage.googleapis.com/projects/_/buckets/{bucket}",
                    available_permissions=[_ROLES[access]],
                    availability_condition=downscoped.AvailabilityCondition(
                        expression=" || ".join(f"({rule.expression()})" for rule in rules),
                        title=f"job paths ({access.value})",
                    ),
                )
                for (bucket, access), rules in groups.items()
            ]
        )


def job_storage_boundary(
    record: JobRecord,
    layout: StorageLayout,
    *,
    base_model_locations: BaseModelLocations | None = None,
) -> StorageBoundary:
    """The one place that says what a job may touch, from its record (Firestore).

    - read its config object `configs/{job_id}.json`;
    - list and read its dataset prefix `processed_datasets/{dataset_id}/`;
    - a vision job: read any object of the data bucket, since rows may name images anywhere
      there (trainer/images.py); never list it, never another bucket;
    - a gs:// base model: list and read its prefix, when `base_model_locations` allows it;
    - read the earlier job's adapter or checkpoint folder it continues from (from_job);
    - read, write and delete its own output prefixes (adapter, merged, GGUF, checkpoints).
    """
    from tuning.spec import Modality

    rules = [
        _rule(layout.config_uri(record.job_id), exact=True),
        _rule(layout.dataset_prefix(record.processed_dataset_id)),
    ]
    if record.modality is Modality.VISION:
        rules.append(StorageRule(bucket=layout.data_bucket, name="", listable=False))
    base_model = record.base_model_id
    if base_model.startswith(GCS_SCHEME):
        allowed = True
        if base_model_locations is not None:
            try:
                base_model_locations.check(base_model)
            except TuningError:
                allowed = False  # the trainer refuses it as a user error before reading
        if allowed and parse_gcs_uri(base_model)[1]:
            rules.append(_rule(base_model if base_model.endswith("/") else f"{base_model}/"))
    lineage = record.lineage
    if lineage is not None and _is_parent_folder(lineage.weights, lineage.parent_job_id, layout):
        rules.append(_rule(lineage.weights))  # the earlier job's weights it continues from
    rules += [
        _rule(prefix, access=Access.READ_WRITE) for prefix in layout.job_prefixes(record.job_id)
    ]
    return StorageBoundary(rules=tuple(_unique(rules)))


def _is_parent_folder(weights: str, parent_job_id: str, layout: StorageLayout) -> bool:
    """Whether `weights` is the parent's adapter folder or one of its checkpoints: the only
    folders submit records (tuning/lineage.py), checked again here, where the rule is made."""
    checkpoints = layout.checkpoints_prefix(parent_job_id)
    if weights == layout.adapter_prefix(parent_job_id):
        return True
    step = weights.removeprefix(checkpoints).removeprefix("checkpoint-").removesuffix("/")
    return weights.startswith(checkpoints) and step.isdigit() and weights.endswith("/")


def _rule(uri: str, *, exact: bool = False, access: Access = Access.READ) -> StorageRule:
    bucket, name = parse_gcs_uri(uri)
    return StorageRule(bucket=bucket, name=name, exact=exact, access=access)


def _unique(rules: Iterable[StorageRule]) -> list[StorageRule]:
    return list(dict.fromkeys(rules))


def _cel_string(value: str) -> str:
    """A single-quoted CEL string literal (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
