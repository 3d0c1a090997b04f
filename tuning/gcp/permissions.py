"""The IAM permissions each adapter operation needs, declared on the operation itself.

Every method of an adapter that calls a Google API (`JobStore`, `GcsStore`, `Publisher`,
`SecretManagerStore`, `CloudRunLauncher`) carries `@requires(...)` with the permissions
that call is checked against. tests/terraform/test_iam_contract.py reads these marks,
finds which operations each deployable can reach, and asserts that terraform/iam.tf
grants that deployable's account every permission they name: a new call without its
grant fails that test. The mark changes nothing at run time.

Permission names come from each API method's reference ("Authorization requires the
following IAM permission") and the per-service pages of
https://cloud.google.com/iam/docs/roles-permissions (Firestore, Cloud Storage, Pub/Sub,
Secret Manager, Cloud Run, IAM). An upload that may replace an object also needs
storage.objects.delete (https://cloud.google.com/storage/docs/access-control/iam-permissions),
and a transaction datastore.databases.get (https://cloud.google.com/datastore/docs/access/iam).

Limits, stated so nobody reads more into the check than it does:
- it checks that the account holds the permission somewhere in iam.tf, not on which
  bucket, topic or secret, nor under which IAM condition;
- a permission the operator grants outside Terraform on resources a user names (a
  shared secret's metadata, docs/deploy.md) is declared with `outside_terraform`, and the
  test only checks that the reason is given;
- a Google client used outside these adapters (tuning/capacity.py's Firestore
  transactions) is not marked: it uses the job store's client and the same permissions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

Operation = TypeVar("Operation", bound=Callable[..., Any])
ATTRIBUTE = "__iam_permissions__"


@dataclass(frozen=True)
class Needed:
    permissions: frozenset[str]
    outside_terraform: str | None = None  # why the grant is the operator's, when it is


def requires(
    *permissions: str, outside_terraform: str | None = None
) -> Callable[[Operation], Operation]:
    """Mark an adapter operation with the IAM permissions its Google API calls need."""
    if not permissions:
        raise ValueError("an operation that needs no permission needs no mark")

    def mark(operation: Operation) -> Operation:
        setattr(operation, ATTRIBUTE, Needed(frozenset(permissions), outside_terraform))
        return operation

    return mark


def needed_by(operation: object) -> Needed | None:
    """What a marked operation needs; None for anything unmarked."""
    needed = getattr(operation, ATTRIBUTE, None)
    return needed if isinstance(needed, Needed) else None


def operations_of(adapter: type) -> dict[str, Needed]:
    """Method name -> what it needs, for every marked method of an adapter class."""
    found = {}
    for name in dir(adapter):
        needed = needed_by(getattr(adapter, name, None))
        if needed is not None:
            found[name] = needed
    return found
