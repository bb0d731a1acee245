"""click options built from evalkit.options.RunOptions, and its errors spelled as the flags typed.

A command decorated with `run_options(names)` gets one click option per named field (flag, type,
default and help from the field) and receives them as a single `options: RunOptions` argument.
An EvalkitError about an option names the Python parameter (`guidance_scale must be >= 0`);
raised inside the command it is re-spelled as this command's flag (`--cfg must be >= 0`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_type_hints

import click

from evalkit.errors import EvalkitError
from evalkit.options import OPTION_FIELDS, RunOptions, flag_of, names_in, spec_of

GENERATE = names_in("source", "protocol", "output", "prompts")  # `evalkit generate`
RUN = names_in("source", "protocol", "output", "prompts", "scoring", "scale", "compute")  # `evalkit run`
_NONE: Mapping[str, str] = MappingProxyType({})


class _NumberOrWord(click.ParamType):
    """A number as int, anything else as typed; RunOptions says which words it accepts (batch_size: auto)."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            return str(value)


_CLICK_TYPES: Mapping[Any, Any] = MappingProxyType({int: int, float: float, str: str, Path: click.Path(path_type=Path),
                                                    int | str: _NumberOrWord()})  # by the field's type


def run_options(names: tuple[str, ...], flags: Mapping[str, str] = _NONE,
                helps: Mapping[str, str] = _NONE) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a click command with the RunOptions fields `names` (`flags`/`helps`: this command's own
    spelling or wording of some). Apply it first, under the command's other options."""
    hints = get_type_hints(RunOptions)
    spelling = {name: flag_of(name) for name in OPTION_FIELDS} | dict(flags)

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def invoke(**kwargs: Any) -> None:
            values = {name: kwargs.pop(name) for name in names}
            try:
                command(options=RunOptions(**values), **kwargs)
            except EvalkitError as e:
                if e.param not in spelling:
                    raise
                raise e.spelled(spelling[e.param]) from e

        for name in reversed(names):
            spec = spec_of(name)
            default = OPTION_FIELDS[name].default
            text = helps.get(name, spec.help)
            if hints[name] is bool:
                declared = click.option(spelling[name], name, is_flag=True, default=default, help=text)
            else:
                declared = click.option(spelling[name], name, type=_CLICK_TYPES[hints[name]], default=default,
                                        show_default=spec.show_default, help=text)
            invoke = declared(invoke)
        return invoke

    return decorate
