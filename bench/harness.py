"""What every benchmark script shares: its work folder, the report table and JSON, library versions,
and the step-folder copies and image lists of the scoring benches.

A benchmark reports ratios against a baseline measured in the same run; it never turns a
verdict into an exit status (only unusable input, such as --device cuda without CUDA, exits
non-zero), so CI can run it without flaking on a busy machine.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from argparse import Namespace
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    from evalkit.metrics.api import ImageItem, Metric

Report = dict[str, Any]


def versions(packages: Sequence[str]) -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def run_and_report(args: Namespace, run: Callable[[Namespace, Path], Report], table: Callable[[Report], str]) -> int:
    """Run in --workdir (kept) or a temporary folder, print the table, write --json when given."""
    started = time.perf_counter()
    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            report = run(args, args.workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
                report = run(args, Path(tmp))
    except EvalkitError as e:  # e.g. --device cuda without CUDA: nothing was measured
        print(e.one_line(), file=sys.stderr)
        return e.exit_code
    report["wall_seconds"] = time.perf_counter() - started
    print()
    print(table(report))
    print(f"(whole benchmark: {report['wall_seconds']:.1f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def fresh_copy(step_dir: Path, dest: Path) -> Path:
    """The step folder's images and records without any scores, so evalkit scores everything."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(step_dir, dest, ignore=shutil.ignore_patterns("scores"))
    return dest


def items_of(step_dir: Path, metric: Metric) -> list[ImageItem]:
    """The images the metric scores, as score_step lists them (same order, same prompts)."""
    from evalkit.scoring.engine import image_items
    from evalkit.stepdir import StepDir

    folder = StepDir(step_dir)
    return image_items(step_dir, folder.read_generation(), folder.read_manifest(), metric.info.prompt_set,
                       metric.info.name)
