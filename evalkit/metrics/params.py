"""Card params as an implementation declares them: name, type, default, meaning.

A card's `params:` configure its implementation, and they are part of the card's fingerprint as
written (defaults are not filled into the card, so a card that spells out a default and one that
leaves it out stay different cards, as they always were). Declaring them lets evalkit refuse a
typo instead of silently scoring with the default, and gives each implementation its values
with the declared defaults from one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.errors import EvalkitError, did_you_mean
from evalkit.metrics.cards import MetricCard


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{value!r} is not true or false")
    return value


def _any(value: Any) -> Any:
    return value


# kind -> (how a YAML value becomes one, how an error names it). str/int/float convert like str()/int()
# /float() always did in the implementations; bool is strict, since `"false"` would be truthy.
KINDS: Mapping[type, tuple[Callable[[Any], Any], str]] = {
    str: (str, "a string"), int: (int, "an integer"), float: (float, "a number"),
    bool: (_strict_bool, "true or false"), object: (_any, "any value"),
}


@dataclass(frozen=True)
class Param:
    """One card param an implementation accepts."""

    name: str
    kind: type  # one of KINDS: str, int, float, bool, or object (any YAML value, e.g. a config mapping)
    default: Any = None  # when the card leaves it out; None: the implementation derives it (see meaning)
    meaning: str = ""
    required: bool = False  # the card must pin it: no default is safe for published numbers
    hint: str = ""  # how to fix a missing or mistyped value

    def value(self, card: MetricCard) -> Any:
        if self.name not in card.params:
            if self.required:
                raise EvalkitError(f"metric card {card.name!r} must pin params.{self.name} ({KINDS[self.kind][1]})",
                                   self.hint or self.meaning)
            return self.default
        convert, text = KINDS[self.kind]
        raw = card.params[self.name]
        try:
            return convert(raw)
        except (TypeError, ValueError) as e:
            raise EvalkitError(f"metric card {card.name!r}: params.{self.name} must be {text}, not {raw!r}",
                               self.hint or f"fix it in {card.path or 'the card'}") from e


def param_values(card: MetricCard, params: Sequence[Param]) -> dict[str, Any]:
    """Every declared param's value for `card` (declared defaults where it leaves one out).

    A param the card sets but the implementation does not declare is an error naming the card
    file, the param, the closest declared name and every declared one.
    """
    names = [p.name for p in params]
    for name in card.params:
        if name not in names:
            where = card.path or repr(card.name)
            suggestion = did_you_mean(str(name), names)
            accepted = (f"accepts: {', '.join(names)}" if names else "accepts no params (remove `params:`)")
            raise EvalkitError(f"metric card {where} has unknown param {name!r}"
                               + (f"; {suggestion}" if suggestion else ""),
                               f"implementation {card.implementation!r} {accepted}")
    return {p.name: p.value(card) for p in params}
