"""What a request names must be the caller's, or shared by the operator: base models, secrets.

One deployment serves many callers, and every job runs under one trainer account that can
read every job's outputs and secrets. So a request may name:

- a `gs://` base model only inside a location the operator allows: the models bucket's
  `base_models/` prefix (where `tuning models upload` puts models) and the locations in
  `ALLOWED_BASE_MODEL_LOCATIONS`. Prefixes that hold jobs' outputs, checkpoints and configs
  stay refused even inside an allowed location. Hub ids are not storage paths: unaffected.
- a secret only if it is not one of this deployment's per-job secrets, and the operator
  marked it usable by the job's owner (or by every caller) with an annotation, read from
  the secret's metadata, never its value.

Submit and dispatch call `check_request` before anything is created; the trainer calls
`check_base_model` again before it reads a byte of the base model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuning.errors import InvalidRequestError, NotFoundError
from tuning.layout import CONFIGS, GCS_SCHEME, JOB_OUTPUTS

if TYPE_CHECKING:
    from tuning.gcp.secrets import SecretStore
    from tuning.settings import ServiceSettings
    from tuning.spec import TrainRequest

BASE_MODEL_FIELD = "training_config.base_model_id"
HF_TOKEN_SECRET_FIELD = "hf_token_secret"
WANDB_KEY_SECRET_FIELD = "training_config.wandb_config.api_key_secret"
# Where `tuning models upload --to gs://<models bucket>/base_models/NAME/` puts a model.
BASE_MODELS = "base_models"
# Below base_models/: the trainer's copies of Hub models (trainer/hub_staging.py), each made
# with the token of the job that staged it. Never a base_model_id: a gated model staged by one
# caller would reach callers the Hub refuses; the trainer reads a staged copy only after the
# job's own token passed the Hub's access check.
HUB_STAGING = "hub"

# The annotation an operator sets on a secret to let callers name it: the identities
# (emails or OIDC subjects, exactly as jobs record their owner) separated by spaces, or
# EVERY_CALLER. An annotation, not a label: label values allow only lowercase letters,
# digits, '_' and '-' (no '@' or '.', so no email), while annotation values are free text
# (keys: 1-63 characters, alphanumeric at both ends, '-', '_', '.' inside; keys and values
# under 16 KiB in all).
# https://cloud.google.com/secret-manager/docs/creating-and-managing-annotations
# https://cloud.google.com/python/docs/reference/secretmanager/latest/google.cloud.secretmanager_v1.types.Secret
USABLE_BY_ANNOTATION = "gemma-tuning-usable-by"
EVERY_CALLER = "*"
# Spaces, because gcloud's --update-annotations=KEY=VALUE,... splits pairs at commas; commas
# are accepted too, for an operator who used gcloud's alternate-delimiter syntax.
_OWNER_SEPARATORS = re.compile(r"[\s,]+")

_BUCKET = r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"
_SEGMENT = r"[A-Za-z0-9_.=+-]+"
# What an operator may list: a bucket or a prefix, always ending with '/'.
LOCATION_PATTERN = rf"^gs://{_BUCKET}/({_SEGMENT}/)*$"


@dataclass(frozen=True)
class GcsLocation:
    """A bucket and the path segments of a prefix in it, compared segment by segment."""

    bucket: str
    segments: tuple[str, ...]

    def contains(self, other: GcsLocation) -> bool:
        """Whether `other` is this location or lies under it (gs://b/a/ never holds gs://b/ab/)."""
        depth = len(self.segments)
        return other.bucket == self.bucket and other.segments[:depth] == self.segments

    def __str__(self) -> str:
        return f"{GCS_SCHEME}{self.bucket}/" + "".join(f"{part}/" for part in self.segments)


def parse_location(value: str) -> GcsLocation:
    """An operator's `gs://bucket/` or `gs://bucket/prefix/`; ValueError naming the rule."""
    if not isinstance(value, str) or re.fullmatch(LOCATION_PATTERN, value) is None:
        raise ValueError(f"{value!r} is not gs://bucket/ or gs://bucket/prefix/ (ending with '/')")
    location = _split(value)
    if location is None or ".." in location.bucket:
        raise ValueError(f"{value!r} has an empty, '.' or '..' segment")
    return location


def _split(uri: str) -> GcsLocation | None:
    """Bucket and segments of a gs:// URI (a trailing '/' optional); None if a segment is
    empty, '.' or '..' (GCS names are plain strings, but fake-gcs-server and local paths
    resolve those, and no model we allow lives under such a name)."""
    bucket, _, path = uri.removeprefix(GCS_SCHEME).partition("/")
    segments = path.removesuffix("/").split("/") if path.removesuffix("/") else []
    if any(part in ("", ".", "..") for part in segments):
        return None
    return GcsLocation(bucket=bucket, segments=tuple(segments))


@dataclass(frozen=True)
class BaseModelLocations:
    """Where a gs:// base model may be read from, and the job prefixes that never qualify."""

    allowed: tuple[GcsLocation, ...]
    refused: tuple[GcsLocation, ...]

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> BaseModelLocations:
        models, configs = settings.models_bucket, settings.config_bucket
        allowed = [GcsLocation(models, (BASE_MODELS,))]
        allowed += [parse_location(value) for value in settings.allowed_base_model_locations]
        refused = [GcsLocation(models, (prefix,)) for prefix in JOB_OUTPUTS]
        refused.append(GcsLocation(configs, (CONFIGS,)))
        refused.append(GcsLocation(models, (BASE_MODELS, HUB_STAGING)))
        return cls(allowed=tuple(dict.fromkeys(allowed)), refused=tuple(refused))

    def allows(self, candidate: GcsLocation) -> bool:
        """Inside an allowed location, and neither inside nor above a job-output prefix
        (the trainer downloads everything under the base model's prefix)."""
        if not any(where.contains(candidate) for where in self.allowed):
            return False
        return not any(
            where.contains(candidate) or candidate.contains(where) for where in self.refused
        )

    def check(self, base_model_id: str) -> None:
        """Raise InvalidRequestError (field training_config.base_model_id) unless allowed."""
        if not base_model_id.startswith(GCS_SCHEME):
            return  # a Hub id
        candidate = _split(base_model_id)
        if candidate is not None and not candidate.segments:
            raise InvalidRequestError(
                f"{BASE_MODEL_FIELD}: {base_model_id} names a bucket without an object path; "
                "give the folder that holds the model's config.json, e.g. "
                f"gs://bucket/{BASE_MODELS}/NAME/",
                field=BASE_MODEL_FIELD,
            )
        if candidate is not None and self.allows(candidate):
            return
        places = ", ".join(str(where) for where in self.allowed)
        models = self.allowed[0]
        raise InvalidRequestError(
            f"{BASE_MODEL_FIELD}: {base_model_id} is not in a location this deployment reads "
            f"base models from ({places}); jobs' outputs, checkpoints and configs are never "
            f"base models, nor the trainer's Hub copies under {models}{HUB_STAGING}/ (name "
            "the Hub id instead). Upload the model first: "
            f"tuning models upload DIR --to {models}NAME/ "
            "(an operator can allow more locations with ALLOWED_BASE_MODEL_LOCATIONS, "
            "Terraform allowed_base_model_locations)",
            field=BASE_MODEL_FIELD,
        )


def check_base_model(base_model_id: str, settings: ServiceSettings) -> None:
    """Refuse a gs:// base model outside the operator's allowed locations (422)."""
    BaseModelLocations.from_settings(settings).check(base_model_id)


def usable_by(annotations: Mapping[str, str]) -> frozenset[str]:
    """The identities (or EVERY_CALLER) a secret's annotations share it with."""
    value = annotations.get(USABLE_BY_ANNOTATION, "")
    return frozenset(part for part in _OWNER_SEPARATORS.split(value) if part)


def may_use(annotations: Mapping[str, str], owner: str | None) -> bool:
    """Whether a caller (None: nobody named) may name a secret with these annotations."""
    owners = usable_by(annotations)
    return EVERY_CALLER in owners or (owner is not None and owner in owners)


def check_secret_reference(
    reference: str, *, field: str, owner: str | None, prefix: str, secrets: SecretStore
) -> None:
    """Refuse (422, naming `field`) a secret the caller may not have the trainer use."""
    from tuning.gcp.secrets import job_of_secret, parse_reference

    try:
        _, secret_id, _ = parse_reference(reference)
    except InvalidRequestError:
        raise InvalidRequestError(
            f"{field}: a secret reference looks like projects/P/secrets/S/versions/N", field=field
        ) from None
    if job_of_secret(prefix, secret_id) is not None:
        # Known from the name alone: saying so reveals nothing about any job's secrets.
        raise InvalidRequestError(
            f"{field}: {reference} is named like a secret this deployment keeps for a job; "
            "those are never shared. Send the token itself, or name a secret of your own that "
            "an operator shared with you",
            field=field,
        )
    try:
        annotations = secrets.annotations(reference)
    except NotFoundError:
        annotations = {}
    if not may_use(annotations, owner):
        # One message for missing, unmarked and shared-with-others: it must not tell a
        # caller whether a secret exists or whom it is shared with.
        raise InvalidRequestError(
            f"{field}: {reference} cannot be used by this caller. An operator shares a "
            "secret by annotating it: gcloud secrets update SECRET "
            f'--update-annotations={USABLE_BY_ANNOTATION}="IDENTITY ..." (identities '
            f"separated by spaces, or '{EVERY_CALLER}' for every caller of the deployment); "
            "see docs/deploy.md",
            field=field,
        )


def secret_references(request: TrainRequest) -> Iterable[tuple[str, str]]:
    """(field, reference) for every existing secret the request names."""
    if request.hf_token_secret is not None:
        yield HF_TOKEN_SECRET_FIELD, request.hf_token_secret
    wandb = request.training_config.wandb_config
    if wandb is not None and wandb.api_key_secret is not None:
        yield WANDB_KEY_SECRET_FIELD, wandb.api_key_secret


def check_request(
    request: TrainRequest,
    *,
    owner: str | None,
    settings: ServiceSettings,
    secrets: SecretStore,
) -> None:
    """Everything the request names is the caller's to use; else InvalidRequestError (422)."""
    check_base_model(request.training_config.base_model_id, settings)
    for field, reference in secret_references(request):
        check_secret_reference(
            reference, field=field, owner=owner, prefix=settings.secret_prefix, secrets=secrets
        )
