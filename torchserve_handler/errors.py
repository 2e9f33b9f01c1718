"""The two ways a request can fail in the handler: the caller's input, or the archive itself."""

__all__ = ["ArtifactError", "InvalidRequest"]


class InvalidRequest(ValueError):
    """Bad request body; the message names the field and the limit. The handler answers HTTP 400."""


class ArtifactError(RuntimeError):
    """The exported model cannot be served: a missing graph, a checksum mismatch, an unusable manifest."""
