"""Silence library progress bars and deprecation chatter while evalkit shows its own."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Loading bars and the torch_dtype rename warning are noise next to evalkit's own progress."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            yield
        finally:
            diffusers_logging.enable_progress_bar()
            transformers_logging.enable_progress_bar()
