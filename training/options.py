"""`synthserve train --option KEY=VALUE`: a family's hyperparameters from the command line, typed by its config.

Each key must be a field of the family's frozen config dataclass; the value is parsed as that field's type (its
default's type: int, float, str or bool) and the config's own checks run, so a typo, a wrong type or a value out of
range is refused before any data is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

__all__ = ["OptionError", "family_options", "family_spec"]

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


class OptionError(ValueError):
    """A KEY=VALUE the family's config does not take; the message names the key and what it accepts."""


def _parse(key: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise OptionError(f"{key}={text}: expected true or false")
    for kind in (int, float):
        if isinstance(default, kind):
            try:
                return kind(text)
            except ValueError:
                raise OptionError(f"{key}={text}: expected {'an integer' if kind is int else 'a number'}") from None
    return text


def family_options(config_class: type[Any], items: Iterable[str]) -> dict[str, Any]:
    """KEY=VALUE strings -> the overrides of `config_class`'s defaults (a dict for TrainRequest.family_config)."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    defaults = config_class()
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise OptionError(f"{item!r}: expected KEY=VALUE")
        if key not in fields:
            raise OptionError(f"{key}: not a {config_class.__name__} field (one of {', '.join(sorted(fields))})")
        options[key] = _parse(key, text, getattr(defaults, key))
    try:
        config_class(**options)  # the config's own checks (allowed values, ranges)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    return options


def family_spec(spec: str) -> tuple[str, tuple[str, ...]]:
    """A benchmark's family item, `flow` or `flow:coupling=spline;spline_bins=12` -> (family, KEY=VALUE items)."""
    family, _, options = spec.partition(":")
    return family, tuple(option for option in options.split(";") if option)
