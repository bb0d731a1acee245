"""The package side of bench/package_baselines.py: timed passes of a reference package's scoring call,
served one round at a time so that the bench can interleave them with evalkit's passes.

Shared by ref_imagereward.py and ref_hpsv2.py, which run inside the reference venv as scripts
(`.venv-ref/bin/python parity/ref_*.py ...`), so Python puts parity/ first on sys.path and
`import timing` finds this file whatever the working folder (tests/support.py's run_reference and
the bench both run them from a temporary one). Nothing here imports evalkit or the packages.

Protocol (`ref_*.py --serve SPEC.json`): the script loads the model (untimed), then this module
writes one JSON line to stdout, {"ready": true, "call", "calls", "images", "torch_threads",
"versions"}; then for every line read from stdin (its content is ignored) it runs one pass of the
package's call over every case, timed in this process, and writes {"round": n, "seconds": s,
"scores": [[per image] per case]}. End of stdin ends it (exit 0). Every round is the same: the
caller decides which one is its warm-up. The package's own prints go to stderr, so stdout carries
only the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

Scores = list[list[float]]  # per case, one per image


def timed_pass(one_pass: Callable[[], Scores]) -> tuple[float, Scores]:
    """Seconds of one pass (wall clock: the package side runs on the CPU) and its scores."""
    t0 = time.perf_counter()
    scores = one_pass()
    return time.perf_counter() - t0, scores


def protocol_stream() -> TextIO:
    """A private copy of stdout for the protocol; fd 1 and sys.stdout then point at stderr, so that
    whatever the packages print cannot be read as a reply."""
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return stream


def reply(stream: TextIO, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def serve_rounds(stream: TextIO, one_pass: Callable[[], Scores], cases: list[dict[str, Any]], call: str,
                 versions: dict[str, Any], requests: TextIO | None = None) -> int:
    """Announce readiness on `stream`, then one timed pass per request line (stdin by default) until end
    of input; returns the rounds served. The model is already loaded: loading is not scoring."""
    import torch

    requests = sys.stdin if requests is None else requests
    reply(stream, {"ready": True, "call": call, "calls": len(cases), "images": sum(len(c["images"]) for c in cases),
                   "torch_threads": torch.get_num_threads(), "versions": versions})
    rounds = 0
    while requests.readline():
        rounds += 1
        seconds, scores = timed_pass(one_pass)
        reply(stream, {"round": rounds, "seconds": seconds, "scores": scores})
    return rounds


def serve_main(doc: str | None, parity_main: Callable[[str, str], None],
               serve: Callable[[str, TextIO], None]) -> None:
    """A reference script's command line: `SPEC.json OUT.json` (the parity tests) or `--serve SPEC.json`
    (the bench; stdout is taken for the protocol before anything is imported or loaded, since loading
    may print); anything else prints the script's docstring and exits 1."""
    argv = sys.argv[1:]
    if len(argv) != 2:
        sys.exit(doc)
    if argv[0] == "--serve":
        serve(argv[1], protocol_stream())
    else:
        parity_main(argv[0], argv[1])
