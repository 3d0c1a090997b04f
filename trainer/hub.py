"""The Hugging Face Hub as Hub staging uses it (trainer/hub_staging.py), behind an interface.

Four calls: which commit a revision names now, whether a token may read the repo at that
commit, the repo's files there, and one file's download. `HuggingFaceHub` makes them through
huggingface_hub; tests use an in-memory stand-in (tests/fixtures/fake_hub.py), so that no test
reaches the network. Every call maps the Hub's errors to the trainer's: gated, missing or
refused is the user's to fix (reported once), unreachable is transient (retried).

`token=None` means anonymous here: huggingface_hub would otherwise fall back to a token
stored on the machine (HF_TOKEN, ~/.cache/huggingface), which is nobody's job's.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from trainer.errors import ModelNotFoundError, UserError
from tuning.errors import TransientError

COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
# The file every model repository has, and the one the access check asks the Hub about.
ACCESS_PROBE = "config.json"


class HubModels(Protocol):
    """What staging needs of the Hub; every method raises the trainer's errors."""

    def resolve(self, repo_id: str, revision: str, token: str | None) -> str:
        """The commit sha that `revision` (a branch, a tag or a sha) names now."""
        ...

    def check_access(self, repo_id: str, sha: str, token: str | None) -> None:
        """Raise unless `token` (None: anonymous) may download the repo's files at `sha`."""
        ...

    def files(self, repo_id: str, sha: str, token: str | None) -> dict[str, int | None]:
        """Every file of the repo at `sha`, with its size in bytes where the Hub gives it."""
        ...

    def download(
        self, repo_id: str, sha: str, filename: str, directory: Path, token: str | None
    ) -> Path:
        """One file at `sha`, written below `directory`; its local path."""
        ...


class HuggingFaceHub:
    """The real Hub, through huggingface_hub (HF_ENDPOINT and HF_HUB_OFFLINE apply)."""

    def resolve(self, repo_id: str, revision: str, token: str | None) -> str:
        from huggingface_hub import HfApi

        with hub_errors(repo_id, revision):
            sha = HfApi().model_info(repo_id, revision=revision, token=token or False).sha
        if sha is None or not COMMIT_SHA.fullmatch(sha):
            raise TransientError(f"the Hub named no commit for {repo_id}@{revision}")
        return sha

    def check_access(self, repo_id: str, sha: str, token: str | None) -> None:
        # A HEAD request for one file at that commit: answered 401/403 for a gated repo
        # whose licence the token's account has not accepted, 404 for a private one it cannot
        # see. (The repo's metadata alone, model_info, is public even for gated repos.)
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(repo_id, ACCESS_PROBE, revision=sha)
        with hub_errors(repo_id, sha):
            get_hf_file_metadata(url, token=token or False)

    def files(self, repo_id: str, sha: str, token: str | None) -> dict[str, int | None]:
        from huggingface_hub import HfApi

        with hub_errors(repo_id, sha):
            info = HfApi().model_info(
                repo_id, revision=sha, files_metadata=True, token=token or False
            )
        return {sibling.rfilename: sibling.size for sibling in info.siblings or []}

    def download(
        self, repo_id: str, sha: str, filename: str, directory: Path, token: str | None
    ) -> Path:
        from huggingface_hub import hf_hub_download

        with hub_errors(repo_id, sha):
            path = hf_hub_download(
                repo_id, filename, revision=sha, local_dir=directory, token=token or False
            )
        return Path(str(path))


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str) -> Iterator[None]:
    """The Hub's exceptions as the trainer's: who must act, and whether a retry can help."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except LocalEntryNotFoundError as error:
        # Offline (or the Hub unreachable) and not cached: a subclass of EntryNotFoundError,
        # so it must come first, or it would read as a repository without the file.
        raise TransientError(f"the Hub is unreachable for {repo_id}") from error
    except GatedRepoError:
        raise UserError(
            f"base model {repo_id} is gated: accept its licence on the Hub with the account "
            "whose hf_token the job uses"
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"base model {repo_id} not found on the Hub (or the hf_token cannot see it)"
        ) from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"base model {repo_id} has no revision {revision}") from None
    except EntryNotFoundError:
        raise ModelNotFoundError(
            f"base model {repo_id}@{revision} has no {ACCESS_PROBE}: not a model repository"
        ) from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            raise UserError(f"the hf_token was refused for {repo_id} (HTTP {status})") from None
        raise TransientError(f"the Hub failed for {repo_id} (HTTP {status})") from error
    except (ConnectionError, TimeoutError, OSError) as error:  # offline mode included
        raise TransientError(f"the Hub is unreachable for {repo_id}") from error
