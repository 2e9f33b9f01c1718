"""`synthserve train --option KEY=VALUE`: a family's hyperparameters from the command line, typed by its config.

Each key must be a field of the family's frozen config dataclass or one of the training loop's settings
(`TRAINING_KEYS`, fields of `training.train.TrainConfig`); the value is parsed as that field's type (its default's
type: int, float, str or bool) and the config's own checks run, so a typo, a wrong type or a value out of range is
refused before any data is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

__all__ = ["TRAINING_KEYS", "OptionError", "family_spec", "split_options"]

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")
# The training loop's settings an --option may set (`--epochs`, `--seed` and `--device` have their own flags).
TRAINING_KEYS = ("learning_rate", "batch_size", "patience", "weight_decay")


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


def _items(items: Iterable[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise OptionError(f"{item!r}: expected KEY=VALUE")
        pairs.append((key, text))
    return pairs


def _typed(config_class: type[Any], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """(KEY, VALUE) pairs, every key a field of `config_class` -> typed overrides its own checks accept."""
    defaults = config_class()
    options = {key: _parse(key, text, getattr(defaults, key)) for key, text in pairs}
    try:
        config_class(**options)  # the config's own checks (allowed values, ranges)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    return options


def split_options(config_class: type[Any], items: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """KEY=VALUE strings -> (overrides of the family's `config_class`, overrides of `TrainConfig`'s
    `TRAINING_KEYS`): TrainRequest's family_config and train_config."""
    from training.train import TrainConfig

    family_keys = [f.name for f in dataclasses.fields(config_class)]
    pairs = _items(items)
    for key, _ in pairs:
        if key not in family_keys and key not in TRAINING_KEYS:
            known = ", ".join(sorted([*family_keys, *TRAINING_KEYS]))
            raise OptionError(f"{key}: not a {config_class.__name__} field or training setting (one of {known})")
    family = _typed(config_class, [(k, v) for k, v in pairs if k in family_keys])
    return family, _typed(TrainConfig, [(k, v) for k, v in pairs if k in TRAINING_KEYS])


def family_spec(spec: str) -> tuple[str, tuple[str, ...]]:
    """A benchmark's family item, `flow` or `flow:coupling=spline;spline_bins=12` -> (family, KEY=VALUE items)."""
    family, _, options = spec.partition(":")
    return family, tuple(option for option in options.split(";") if option)
