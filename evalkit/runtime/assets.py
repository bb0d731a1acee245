"""The one place where weights and data from the hub are resolved.

A hub reference is an id plus a revision. Offline (HF_HUB_OFFLINE=1) only the local cache
is consulted; online a missing snapshot is downloaded. Either way a miss becomes one line
that names what is missing and how to supply it, instead of a retry loop or a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from evalkit.errors import EvalkitError


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_hub_snapshot(repo_id: str, revision: str, *, repo_type: str = "model",
                         allow_patterns: list[str] | None = None) -> Path:
    """Local folder of `repo_id` at `revision`, downloading only when online."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline()
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            repo_type=repo_type,
            allow_patterns=allow_patterns,
            local_files_only=offline,
        )
    except RepositoryNotFoundError as e:
        raise EvalkitError(f"hub {repo_type} {repo_id} does not exist or is private",
                           "check the id, or log in with `hf auth login` for gated repositories") from e
    except RevisionNotFoundError as e:
        raise EvalkitError(f"hub {repo_type} {repo_id} has no revision {revision!r}",
                           "pass an existing branch, tag or commit with --revision") from e
    except LocalEntryNotFoundError as e:
        raise EvalkitError(
            f"{repo_id}@{revision} is not in the local Hugging Face cache"
            + (" and offline mode is on" if offline else " and the hub could not be reached"),
            f"run `hf download {repo_id} --revision {revision}` where there is network "
            "(and copy HF_HOME here), or pass a local folder instead",
        ) from e
    except (HfHubHTTPError, OSError) as e:
        raise EvalkitError(f"could not fetch {repo_id}@{revision} from the hub ({type(e).__name__})",
                           "set HF_HUB_OFFLINE=1 to use the local cache, or pass a local folder") from e
    return Path(folder)
