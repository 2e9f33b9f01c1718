"""Training's domain exception for unusable input: raised by the data steps, reported by the CLI as one line."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Input data that cannot be used; the message names the column or source."""
