"""Follow a training folder while it is being written: which checkpoint-N folders are safe to load.

Training scripts write checkpoint-N/ non-atomically (accelerate's save_state writes the model
files in place, one after another), so a folder that exists is not a folder that is finished.
A checkpoint is *ready* when its denoiser folder has a config and every weights file (all
shards an index names), nothing in it looks half-written (*.tmp, *.incomplete, ...), and its
files' sizes and mtimes have settled: unchanged since the previous poll, or, on first sight,
untouched for at least the settle interval (so a watcher started after training does not wait
a poll for old checkpoints).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.generation.checkpoints import DENOISER_DIRS, PICKLE_SUFFIXES, checkpoint_dirs

INCOMPLETE_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".incomplete")
STOP_FILE = "STOP"
Signature = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class WatchOptions:
    poll_seconds: float = 60.0
    max_polls: int = 0  # 0: until the stop file appears (or Ctrl-C)
    stop_file: Path | None = None  # default: <training folder>/STOP
    settle_seconds: float | None = None  # default: poll_seconds


def incomplete_reason(folder: Path, ema: bool = False) -> str:
    """Why checkpoint folder `folder` cannot be loaded yet, or "" when its files are all there."""
    for path in folder.rglob("*"):
        if path.name.endswith(INCOMPLETE_SUFFIXES):
            return f"{path.relative_to(folder)} is still being written"
    suffix = "_ema" if ema else ""
    denoisers = [folder / (name + suffix) for name in DENOISER_DIRS if (folder / (name + suffix)).is_dir()]
    if not denoisers:
        return f"no {' or '.join(d + suffix for d in DENOISER_DIRS)} folder yet"
    denoiser = denoisers[0]
    if not (denoiser / "config.json").is_file():
        return f"{denoiser.name}/config.json is missing"
    for index in denoiser.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (OSError, json.JSONDecodeError, AttributeError):
            return f"{denoiser.name}/{index.name} is unreadable"
        missing = sorted(s for s in shards if not (denoiser / s).is_file())
        if missing:
            return f"{denoiser.name}/{missing[0]} (named by {index.name}) is missing"
    # Pickled-only weights count as present: loading then refuses them with its own one-line fix.
    if not any(p.suffix in (".safetensors", *PICKLE_SUFFIXES) for p in denoiser.iterdir()):
        return f"{denoiser.name} has no weights file yet"
    return ""


def signature(folder: Path) -> Signature:
    """(relative path, size, mtime) of every file: what must stop changing before loading."""
    rows = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            rows.append((path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
    return tuple(rows)


@dataclass
class CheckpointWatcher:
    """Remembers what it saw on the previous poll; hands out each ready checkpoint until marked done."""

    folder: Path
    settle_seconds: float
    ema: bool = False
    clock: Callable[[], float] = time.time
    done: set[int] = field(default_factory=set)
    _seen: dict[int, Signature] = field(default_factory=dict)

    def ready(self) -> Iterator[tuple[int, Path]]:
        for step, path in checkpoint_dirs(self.folder):
            if step in self.done:
                continue
            if incomplete_reason(path, self.ema):
                self._seen.pop(step, None)
                continue
            current = signature(path)
            previous = self._seen.get(step)
            self._seen[step] = current
            newest = max((mtime for _, _, mtime in current), default=0) / 1e9
            if current == previous or (previous is None and self.clock() - newest >= self.settle_seconds):
                yield step, path

    def mark_done(self, step: int) -> None:
        self.done.add(step)
        self._seen.pop(step, None)


def watch(watcher: CheckpointWatcher, evaluate: Callable[[int, Path], None], options: WatchOptions,
          warn: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> int:
    """Poll until max_polls or the stop file; evaluate each ready checkpoint once. Returns the poll count.

    A checkpoint whose evaluation raises is not marked done: it is retried on the next poll, after
    a one-line warning, because a watcher that dies on one bad checkpoint misses all later ones.
    """
    stop_file = options.stop_file or watcher.folder / STOP_FILE
    polls = 0
    while not stop_file.exists():
        polls += 1
        for step, path in watcher.ready():
            if stop_file.exists():
                break
            try:
                evaluate(step, path)
            except Exception as e:  # any failure of one checkpoint: warn, retry next poll
                warn(f"warning: {path.name} could not be evaluated ({_one_line(e)}); retrying on the next poll")
            else:
                watcher.mark_done(step)
        if options.max_polls and polls >= options.max_polls:
            break
        _wait(options.poll_seconds, stop_file, sleep)
    return polls


def _wait(seconds: float, stop_file: Path, sleep: Callable[[float], None]) -> None:
    """Sleep in short slices so a stop file takes effect within a second."""
    left = seconds
    while left > 0 and not stop_file.exists():
        sleep(min(left, 1.0))
        left -= 1.0


def _one_line(error: BaseException) -> str:
    text = getattr(error, "problem", "") or str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__
