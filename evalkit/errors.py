"""One error type for everything a user can fix.

The CLI turns an EvalkitError into one line on stderr (the problem, then how to fix it)
and a non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

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
