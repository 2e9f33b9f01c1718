"""Domain exceptions. `serving.interceptors` maps each, and the contract's `RequestError`s, to a gRPC status code;
handlers never set codes."""

from __future__ import annotations

__all__ = [
    "DeadlineExceeded",
    "InvalidArgument",
    "ModelNotFound",
    "QueueFull",
    "ServingError",
    "Unavailable",
]


class ServingError(Exception):
    """Base of every error a request may end with; the message reaches the caller."""


class ModelNotFound(ServingError):
    """Unknown model name or version (NOT_FOUND)."""


class InvalidArgument(ServingError):
    """A request field is malformed or beyond a limit (INVALID_ARGUMENT); the message names the field."""


class QueueFull(ServingError):
    """The batcher's queue bound would be exceeded (RESOURCE_EXHAUSTED)."""


class DeadlineExceeded(ServingError):
    """The request's deadline passed while it was queued; it was never computed (DEADLINE_EXCEEDED)."""


class Unavailable(ServingError):
    """The server is shutting down (UNAVAILABLE)."""
