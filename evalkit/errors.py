"""One error type for everything a user can fix.

The CLI turns an EvalkitError into one line on stderr (the problem, then how to fix it)
and a non-zero exit code; anything else is a bug and keeps its traceback.

An error about one option (evalkit.options) names the parameter, as a Python caller knows it
(`limit must be >= 0`), and carries it in `param`; the CLI, whose user typed a flag, re-spells
it as that flag (`--limit must be >= 0`) before printing.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable

# Exit codes shared by every command (`check` adds 1 for a regression in a later issue).
EXIT_USAGE = 2
EXIT_FAILED = 3


class EvalkitError(Exception):
    """A problem with the user's input or environment, with the fix in `hint`."""

    def __init__(self, problem: str, hint: str = "", exit_code: int = EXIT_USAGE, param: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint
        self.exit_code = exit_code
        self.param = param  # the option the problem is about ("" for none); `problem` may open with its name

    def spelled(self, name: str) -> EvalkitError:
        """The same error with its option called `name` where the problem opens with it (a CLI flag)."""
        problem = self.problem
        if self.param and problem.startswith(self.param + " "):
            problem = name + problem[len(self.param):]
        return EvalkitError(problem, self.hint, self.exit_code, self.param)

    def one_line(self) -> str:
        return f"error: {self.problem}" + (f" — {self.hint}" if self.hint else "")


def did_you_mean(word: str, candidates: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """"did you mean 'x'?" (or 'x' or 'y' …) for the closest candidates, or "" when none is close.

    One phrasing for every unknown name a user types (metric, card param, prompt set, subset,
    model), so the suggestions read the same everywhere; callers choose where it goes.
    """
    close = difflib.get_close_matches(word, list(candidates), n=n, cutoff=cutoff)
    return ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else ""


# Failures of the machine rather than of evalkit: the disk, quotas and permissions. Named in one
# line (with the file) like a user error; anything else an OSError says is a bug and keeps its traceback.
_FREE_SPACE = "free space (or pass another --out) and re-run: finished work is kept"
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", _FREE_SPACE),
    errno.EDQUOT: ("disk quota exceeded", _FREE_SPACE),
    errno.EROFS: ("read-only file system", "pass a writable --out"),
    errno.EACCES: ("permission denied", "fix the permissions, or pass a writable --out"),
    errno.EPERM: ("operation not permitted", "fix the permissions, or pass a writable --out"),
}


def environment_error(error: OSError) -> EvalkitError | None:
    """The one-line form of a disk-full, quota or permission failure, or None for any other OSError."""
    known = _ENVIRONMENT_ERRNOS.get(error.errno or 0)
    if known is None:
        return None
    problem, hint = known
    where = f" ({error.filename})" if error.filename else ""
    return EvalkitError(f"{problem}{where}", hint, exit_code=EXIT_FAILED)
