"""Silence library progress bars and deprecation chatter while evalkit shows its own."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Loading bars and the torch_dtype rename warning are noise next to evalkit's own progress.

    Library settings are process-wide, so they are put back exactly as found when the block ends.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    was_on = {lib: lib.is_progress_bar_enabled() for lib in (diffusers_logging, transformers_logging)}
    for lib in was_on:
        lib.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            yield
        finally:  # the caller's choice comes back: a training loop that turned bars off keeps them off
            for lib, on in was_on.items():
                if on:
                    lib.enable_progress_bar()
