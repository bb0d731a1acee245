"""Where the declarative assets (prompts/, metrics/, leaderboard/) live.

In a wheel they are packed under `evalkit/_shipped/`; in a source checkout or an editable
install they are the top-level folders of the repository. Code asks here, never guesses.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.errors import EvalkitError

KINDS = ("prompts", "metrics", "leaderboard")


def shipped_dir(kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown asset kind {kind!r}")
    package = Path(__file__).resolve().parent.parent  # the evalkit package
    for candidate in (package / "_shipped" / kind, package.parent / kind):
        if candidate.is_dir():
            return candidate
    raise EvalkitError(
        f"evalkit's {kind}/ folder is missing from this installation",
        "reinstall evalkit (pip install --force-reinstall evalkit)",
    )
