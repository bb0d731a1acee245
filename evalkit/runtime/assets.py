"""The one place where weights and data from the hub are resolved.

A hub reference is an id plus a revision. Offline (HF_HUB_OFFLINE=1) only the local cache
is consulted; online a missing snapshot is downloaded. Either way a miss becomes one line
that names what is missing and how to supply it, instead of a retry loop or a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from evalkit.errors import EvalkitError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def hub_offline() -> bool:
    """Read at call time (the libraries read these variables only at import); either variable counts."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in OFFLINE_VARIABLES)


def resolve_hub_file(repo_id: str, filename: str, revision: str = "main", *, repo_type: str = "model") -> Path:
    """Local path of one file of `repo_id` at `revision`: downloaded when online, else from the cache."""
    from huggingface_hub import hf_hub_download

    return _fetch(repo_id, revision, repo_type, f" file {filename}", lambda offline: hf_hub_download(
        repo_id, filename, revision=revision, repo_type=repo_type, local_files_only=offline))


def resolve_hub_snapshot(repo_id: str, revision: str, *, repo_type: str = "model",
                         allow_patterns: list[str] | None = None) -> Path:
    """Local folder of `repo_id` at `revision`, downloading only when online."""
    from huggingface_hub import snapshot_download

    return _fetch(repo_id, revision, repo_type, "", lambda offline: snapshot_download(
        repo_id, revision=revision, repo_type=repo_type, allow_patterns=allow_patterns, local_files_only=offline))


def is_cached(repo_id: str, revision: str, *, repo_type: str = "model") -> bool:
    """Whether `repo_id` at `revision` is in the local cache (never touches the network).

    Reads the cache layout huggingface_hub writes (`<type>s--<owner>--<name>/refs/<revision>`
    naming a folder under `snapshots/`, or the commit itself) rather than calling
    `snapshot_download(local_files_only=True)`: the same answer without importing the hub client,
    which is most of what `evalkit metrics list` would otherwise spend.
    """
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    ref = folder / "refs" / revision
    try:
        commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else revision
    except (OSError, UnicodeDecodeError):
        return False
    return bool(commit) and "/" not in commit and (folder / "snapshots" / commit).is_dir()


def _fetch(repo_id: str, revision: str, repo_type: str, what: str, download: Callable[[bool], str]) -> Path:
    """Run a huggingface_hub download in offline mode or not, every failure as one line with its fix."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline()
    try:
        return Path(download(offline))
    except RepositoryNotFoundError as e:
        raise EvalkitError(f"hub {repo_type} {repo_id} does not exist or is private",
                           "check the id, or log in with `hf auth login` for gated repositories") from e
    except RevisionNotFoundError as e:
        raise EvalkitError(f"hub {repo_type} {repo_id} has no revision {revision!r}",
                           "pass an existing branch, tag or commit with --revision") from e
    except LocalEntryNotFoundError as e:
        raise EvalkitError(
            f"{repo_id}@{revision}{what} is not in the local Hugging Face cache"
            + (" and offline mode is on" if offline else " and could not be fetched from the hub"),
            f"run `hf download {repo_id} --revision {revision}` where there is network "
            "(and copy HF_HOME here), or pass a local folder instead",
        ) from e
    except (HfHubHTTPError, OSError) as e:
        raise EvalkitError(f"{repo_id}@{revision}{what} could not be fetched from the hub ({type(e).__name__})",
                           "set HF_HUB_OFFLINE=1 to use the local cache, or pass a local folder") from e
