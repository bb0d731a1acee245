"""One error type for everything a user can fix.

The CLI turns an EvalkitError into one line on stderr (the problem, then how to fix it)
and a non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Exit codes shared by every command (`check` adds 1 for a regression in a later issue).
EXIT_USAGE = 2
EXIT_FAILED = 3


class EvalkitError(Exception):
    """A problem with the user's input or environment, with the fix in `hint`."""

    def __init__(self, problem: str, hint: str = "", exit_code: int = EXIT_USAGE) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint
        self.exit_code = exit_code

    def one_line(self) -> str:
        return f"error: {self.problem}" + (f" — {self.hint}" if self.hint else "")


def did_you_mean(word: str, candidates: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """"did you mean 'x'?" (or 'x' or 'y' …) for the closest candidates, or "" when none is close.

    One phrasing for every unknown name a user types (metric, card param, prompt set, subset,
    model), so the suggestions read the same everywhere; callers choose where it goes.
    """
    close = difflib.get_close_matches(word, list(candidates), n=n, cutoff=cutoff)
    return ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else ""
