"""What torchrun's environment means for one evalkit command.

`torchrun --nproc_per_node N -m evalkit.cli generate ...` starts N copies of the same command;
each one takes its own shard of the samples (RANK of WORLD_SIZE) and its own GPU (LOCAL_RANK),
unless the user named a shard or a device. Only the CLI reads this: `evaluate()` runs inside
the caller's process, which has already chosen its device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from evalkit.options import AUTO, RunOptions


def placed(options: RunOptions, environ: Mapping[str, str]) -> RunOptions:
    """`options` as this process of a torchrun launch runs them (unchanged outside torchrun)."""
    shard = options.shard
    if not shard:
        world = int(environ.get("WORLD_SIZE", "1"))
        shard = f"{int(environ.get('RANK', '0'))}/{world}" if world > 1 else ""
    device = options.device
    local_rank = environ.get("LOCAL_RANK")
    if device == AUTO and local_rank is not None:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{local_rank}"
    return replace(options, shard=shard, device=device)
