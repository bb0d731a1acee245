"""Names from user files that become folder names under the output folder: refused if they could escape it.

`evalkit.stepdir` places images under images/<prompt set>/ and records under scores/<metric>/;
the prompt-set loader and the card reader check the same rule when they read a name, so a bad
name is refused before anything is generated rather than when the first file is written.
"""

from __future__ import annotations

from evalkit.errors import EvalkitError

MAX_NAME_BYTES = 200


def require_folder_name(kind: str, text: str, fix: str) -> str:
    """`text` if it can be one folder name inside the output folder, else one line naming it.

    Prompt-set and metric names come from files users write (a set folder's manifest, a metric
    card) and name folders under images/ and scores/; a name like `../../x` or `/tmp/x` would
    write outside the step folder, so it is refused before anything is made.
    """
    too_long = len(text.encode("utf-8")) > MAX_NAME_BYTES
    if not text or text in (".", "..") or any(c in text for c in "/\\\0") or too_long:
        raise EvalkitError(f"{kind} name {text!r} cannot be a folder name inside the output folder (it may not "
                           f"be empty, '.', '..', hold '/', '\\' or NUL, or pass {MAX_NAME_BYTES} bytes)", fix)
    return text
