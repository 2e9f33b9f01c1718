"""The two ways a request can fail in the handler: the caller's input, or the archive itself."""

from synthserve.contract import RequestError

__all__ = ["ArtifactError", "InvalidRequest"]


class InvalidRequest(RequestError):
    """Bad request body; the message names the field and the limit. The handler answers HTTP 400, as it does for
    every `synthserve.contract.RequestError` (the contract's request rules: unknown classes, missing graphs)."""


class ArtifactError(RuntimeError):
    """The exported model cannot be served: a missing graph, a checksum mismatch, an unusable manifest."""
