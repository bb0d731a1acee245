"""evaluate() runs inside a user's training loop: it must leave the process as it found it.

Library progress bars and log levels, torch's global RNG, grad mode, default dtype and thread
count, and Python's warning filters are process-wide settings a training script owns. A call
may change them while it runs, never after it returns (evalkit.runtime.quiet puts library
settings back exactly as found). Both settings of each switch are tried, so a helper that
"restores" by forcing a default fails here.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import evalkit


@pytest.fixture(scope="module")
def clip_metric(models):
    from evalkit.metrics.registry import create
    from evalkit.tiny.clip import build_tiny_clip, write_card

    folder = models / "tiny-clip"
    if not (folder / "config.json").is_file():
        build_tiny_clip(folder)
    card = write_card(models / "clip-tiny-state.yaml", "clip-tiny", "clip_score", "tifa-v1.0-sample", {"clip": folder})
    return create(str(card))


def _global_state() -> dict[str, Any]:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    return {
        "diffusers_bars": diffusers_logging.is_progress_bar_enabled(),
        "transformers_bars": transformers_logging.is_progress_bar_enabled(),
        "diffusers_verbosity": diffusers_logging.get_verbosity(),
        "transformers_verbosity": transformers_logging.get_verbosity(),
        "torch_rng": torch.random.get_rng_state().clone(),
        "grad": torch.is_grad_enabled(),
        "dtype": torch.get_default_dtype(),
        "threads": torch.get_num_threads(),
        "warning_filters": list(warnings.filters),
    }


def _set_bars(on: bool) -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        (lib.enable_progress_bar if on else lib.disable_progress_bar)()


@pytest.mark.parametrize("bars_on", [True, False])
def test_evaluate_leaves_process_settings_as_found(bars_on, sd_dir, clip_metric, tmp_path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(sd_dir), torch_dtype=torch.float32)
    _set_bars(bars_on)
    torch.manual_seed(1234)
    try:
        before = _global_state()
        for target in (pipe, str(sd_dir)):  # in memory and from a path
            evalkit.evaluate(target, metrics=[clip_metric], step=3, out=tmp_path / str(id(target)), name="state",
                             steps=2, batch_size=2, curves=False)
            after = _global_state()
            assert torch.equal(after.pop("torch_rng"), before["torch_rng"])
            assert after == {k: v for k, v in before.items() if k != "torch_rng"}
    finally:
        _set_bars(True)
