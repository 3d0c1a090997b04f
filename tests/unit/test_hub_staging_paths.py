"""Where Hub models are staged in the models bucket, and what a job's storage rule covers."""

from __future__ import annotations

from trainer.hub_staging import staging_prefix, staging_rule


def test_a_repo_is_staged_under_its_owner_and_name():
    assert staging_prefix("models", "google/gemma-3-1b-it") == (
        "gs://models/base_models/hub/google/gemma-3-1b-it/"
    )


def test_a_repo_without_an_owner_cannot_cover_an_owners_repos():
    """Review finding F5: `google` alone must not grant the staged copies of google/*."""
    bare = staging_prefix("models", "google")
    rule = staging_rule("models", "google")

    assert bare == "gs://models/base_models/hub/_/google/"
    assert not staging_prefix("models", "google/gemma-3-1b-it").startswith(bare)
    assert rule.name == "base_models/hub/_/google/"
