"""Request bytes that do not parse: refused with INVALID_ARGUMENT by the handler, logged at most once per interval.

grpc's own path for a deserializer that raises is UNKNOWN plus an ERROR traceback in the log per request, so a
client could flood the log; `safe_deserializer` turns the failure into an `Unparsable` value instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from serving.errors import InvalidArgument

__all__ = ["UNPARSABLE_LOG_INTERVAL_S", "RateLimitedWarning", "Unparsable", "safe_deserializer"]

_log = logging.getLogger(__name__)

UNPARSABLE_LOG_INTERVAL_S = 10.0


class Unparsable:
    """What a request whose bytes do not parse becomes."""

    __slots__ = ("error", "size")
    model = ""  # read by the metrics label

    def __init__(self, error: str, size: int) -> None:
        self.error = error
        self.size = size

    def refusal(self, method: str) -> InvalidArgument:
        return InvalidArgument(f"request: {self.size} bytes that do not parse as a {method} request ({self.error})")


class RateLimitedWarning:
    """At most one log line per `interval_s` on `logger`, saying how many were left out: a client cannot flood the
    log."""

    def __init__(self, interval_s: float, logger: logging.Logger) -> None:
        self._interval_s = interval_s
        self._logger = logger
        self._next = 0.0
        self._left_out = 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        if now < self._next:
            self._left_out += 1
            return
        more = f" (and {self._left_out} more since the last report)" if self._left_out else ""
        self._logger.warning("%s%s", message, more)
        self._left_out = 0
        self._next = now + self._interval_s


_UNPARSABLE_LOG = RateLimitedWarning(UNPARSABLE_LOG_INTERVAL_S, _log)


def safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserialize`, returning `Unparsable` instead of raising."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, and whatever else a hostile body makes the parser raise
            _UNPARSABLE_LOG.warn(f"refused an unparsable request ({len(data)} bytes, {type(exc).__name__})")
            return Unparsable(type(exc).__name__, len(data))

    return parse
