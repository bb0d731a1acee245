"""Exclusive locks on files, so two processes never write one folder's shared files at once.

A lock is an `flock` on a small file that also says who holds it (pid, host, command, since),
so a second process can name the holder in its one-line refusal. The kernel drops an `flock`
when its process dies, however it dies: a lock file left by a killed run is recovered by simply
locking it again, with no pid guessing. Two kinds of caller: a run that must not share its
folder gives up at once (`wait=False`) and names the holder; a short read-merge-write (the
leaderboard store) waits its turn (`wait=True`) and leaves the lock file empty.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from evalkit.errors import EXIT_FAILED, EvalkitError


def holder_record() -> str:
    """What this process writes into a lock it holds (one JSON line)."""
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else ""
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                       "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n"


def describe_holder(text: str) -> str:
    """The holder as a refusal names it ("pid 12 on host-a, `evalkit run …` since …"), or "another process"."""
    try:
        record = json.loads(text.splitlines()[0])
        who = f"pid {int(record['pid'])} on {record['host']}"
        command = f", `{record['command']}`" if record.get("command") else ""
        return f"{who}{command} since {record['since']}"
    except (ValueError, KeyError, IndexError, TypeError):
        return "another process"


@contextmanager
def exclusive(path: Path, *, wait: bool, what: str, hint: str,
              unwritable: str = "pass a writable output folder") -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the body.

    `what` names the thing locked in the refusal ("the step folder X"); `hint` says what to do
    instead; `unwritable` what to do when the lock cannot be created. With `wait=False` a held
    lock is refused at once, naming its holder.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle: IO[str] = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held across the yield
    except OSError as e:
        raise EvalkitError(f"cannot write to {path.parent} ({e.strerror})", unwritable) from e
    _acquire(handle, path, wait, what, hint)  # closes the handle when it refuses
    try:
        if not wait:  # only a refusal names the holder; a waited-for lock (in a folder that may be
            _rewrite(handle, holder_record())  # published, like the leaderboard) says nothing about this machine
        yield
    finally:
        if not wait:  # a process that got to its end leaves an empty lock file; a killed one, its record
            with suppress(OSError):  # (never let tidying the lock hide the error that ended the body)
                _rewrite(handle, "")
        handle.close()  # closing the file releases the flock


def _rewrite(handle: IO[str], text: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()


def _acquire(handle: IO[str], path: Path, wait: bool, what: str, hint: str) -> None:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.seek(0)
        holder = describe_holder(handle.read(4096))
        handle.close()
        raise EvalkitError(f"{what} is in use by {holder}", hint, exit_code=EXIT_FAILED) from None
    except OSError as e:
        handle.close()
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise EvalkitError(f"the file system of {path} does not support file locks ({e.strerror})",
                               "use an output folder on a local or lock-capable file system") from e
        raise
