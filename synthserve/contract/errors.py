"""What the contract's request rules raise: each server maps these to its own answer (gRPC status, HTTP 400)."""

from __future__ import annotations

__all__ = ["RequestError", "UnsupportedRequest"]


class RequestError(ValueError):
    """A request field the rules refuse; the message names the field and its limit (gRPC INVALID_ARGUMENT)."""


class UnsupportedRequest(RequestError):
    """The model lacks what the request needs: a density on a GAN, best_of without a class posterior, Balance on
    an unconditional model (gRPC FAILED_PRECONDITION)."""
