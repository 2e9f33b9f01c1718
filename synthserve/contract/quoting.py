"""A caller's text quoted back in a refusal: cut to a bound, or matched to what they may have meant."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_SHOWN_CHARS", "close_matches", "shown"]

MAX_SHOWN_CHARS = 64


def shown(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """`repr(value)`, cut to `limit` characters with the full length said: errors never echo unbounded input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def close_matches(name: str, choices: Sequence[Any]) -> str:
    """' (did you mean 'a' or 'b'?)' for a misspelt name, or '' when nothing is close."""
    found = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3, cutoff=0.6)
    lowered = [str(c) for c in choices if str(c).lower() == str(name).lower() and str(c) not in found]
    found = lowered + found
    return f" (did you mean {' or '.join(repr(f) for f in found)}?)" if found else ""
