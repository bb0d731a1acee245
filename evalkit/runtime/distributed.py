"""The processes of one launch, joined over torch.distributed and checked before any work starts.

torchrun and `accelerate launch` say how many processes they started in WORLD_SIZE and which one
each is in RANK; evalkit trusts that only after every process has met the others over a gloo
process group: a launcher that started fewer processes than it announced (or one process run by
hand with WORLD_SIZE set) times out at the rendezvous, two processes that both believe they are
rank 0 collide on the rendezvous port, and processes started with different command lines are
told apart by a hash of their arguments. Each case is one line before an image is made, never
the same work done twice. The group only coordinates (barriers between shards and the rank-0
merge); images and records travel through the shared file system, so gloo serves GPUs too.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from evalkit.errors import EXIT_FAILED, EvalkitError

WAIT_FOR_PEERS = timedelta(hours=24)  # a barrier waits this long for a slower shard (a dead rank ends the launch)
LAUNCH_HINT = ("start it under `torchrun --nproc_per_node N` or `accelerate launch`, or unset WORLD_SIZE and RANK "
               "to run one process")


class Workers(Protocol):
    """The processes sharing this command's work."""

    @property
    def rank(self) -> int: ...

    @property
    def count(self) -> int: ...

    def barrier(self) -> None:
        """Return once every process got here."""
        ...


@dataclass(frozen=True)
class Alone:
    """No launcher: this process does all of its (possibly `--shard`-sliced) work by itself."""

    rank: int = 0
    count: int = 1

    def barrier(self) -> None:
        return None


@dataclass(frozen=True)
class Group:
    """A verified torch.distributed group (gloo)."""

    rank: int
    count: int

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.monitored_barrier(timeout=WAIT_FOR_PEERS, wait_all_ranks=True)


def announced(environ: Mapping[str, str]) -> int:
    """The world size the environment claims (1 without a launcher)."""
    try:
        return max(1, int(environ.get("WORLD_SIZE", "1")))
    except ValueError as e:
        raise EvalkitError(f"WORLD_SIZE={environ.get('WORLD_SIZE')!r} is not a number", LAUNCH_HINT) from e


@contextmanager
def joined(environ: Mapping[str, str], timeout_seconds: float, command: str) -> Iterator[Workers]:
    """The launch's processes, verified (Alone when WORLD_SIZE says one); the group is left afterwards."""
    world = announced(environ)
    if world == 1:
        yield Alone()
        return
    import torch.distributed as dist

    if dist.is_initialized():  # a caller's group: not ours to verify or to tear down
        yield Group(dist.get_rank(), dist.get_world_size())
        return
    _rendezvous(environ, world, timeout_seconds)
    try:
        rank = dist.get_rank()
        _verify(environ, world, rank, command)
        yield Group(rank, world)
    finally:
        dist.destroy_process_group()


def _rendezvous(environ: Mapping[str, str], world: int, timeout_seconds: float) -> None:
    import torch.distributed as dist

    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not environ.get(name)]
    if missing:
        raise EvalkitError(f"WORLD_SIZE={world} is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                           "not: no launcher started this process", LAUNCH_HINT)
    where = f"{environ['MASTER_ADDR']}:{environ['MASTER_PORT']}"
    try:
        dist.init_process_group("gloo", init_method="env://", timeout=timedelta(seconds=timeout_seconds))
    except dist.DistNetworkError as e:
        if "EADDRINUSE" not in str(e) and "address already in use" not in str(e):
            raise EvalkitError(f"cannot reach the rendezvous at {where}: {_first_line(e)}", LAUNCH_HINT,
                               EXIT_FAILED) from e
        raise EvalkitError(f"another process already holds the rendezvous at {where} as rank 0 (RANK="
                           f"{environ['RANK']} here): two processes believe they are the same rank",
                           LAUNCH_HINT) from e
    except dist.DistStoreError as e:
        joined_text = re.search(r"(\d+)/(\d+) clients joined", str(e))
        count = f"only {joined_text[1]} of {world}" if joined_text else f"not all {world}"
        raise EvalkitError(f"WORLD_SIZE={world} announces {world} processes but {count} joined the rendezvous at "
                           f"{where} within {timeout_seconds:g}s", LAUNCH_HINT + " (or raise --rendezvous-timeout)"
                           ) from e


def _verify(environ: Mapping[str, str], world: int, rank: int, command: str) -> None:
    """Every process is who it says it is and runs the same command."""
    import torch.distributed as dist

    if dist.get_world_size() != world:
        raise EvalkitError(f"WORLD_SIZE={world} but the process group has {dist.get_world_size()} processes",
                           LAUNCH_HINT)
    mine = (rank, int(environ["RANK"]), socket.gethostname(), command)
    everyone: list[tuple[int, int, str, str] | None] = [None] * world
    dist.all_gather_object(everyone, mine)
    claimed = [entry[1] for entry in everyone if entry is not None]
    if sorted(claimed) != list(range(world)):
        raise EvalkitError(f"the {world} processes claim ranks {sorted(claimed)}, not 0..{world - 1}", LAUNCH_HINT)
    for entry in everyone:
        if entry is not None and entry[3] != command:
            raise EvalkitError(f"rank {entry[0]} (on {entry[2]}) was started with another command line than rank "
                               f"{rank}", "start every process with the same arguments (one torchrun command)")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
