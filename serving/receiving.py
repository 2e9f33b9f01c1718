"""How a call gets its request message on this server: the handler reads it, within a bound, or never reads it.

grpc's asyncio server runs a unary-request handler only once the request message has arrived, so the
interceptors register every unary-request method as request-streaming (the same bytes on the wire) and the
handler reads its one message itself (`serving.calls` bounds the wait; `serving.parsing` turns bytes that do not
parse into `Unparsable`, refused here). A handler that answers without looking at the request (a refused bearer
token) is marked `refuses_unread`, and its request is never read, let alone parsed. Both interceptors replace a
method's handler this way, through `HandlerInterceptor`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from serving.calls import CallTracker
from serving.parsing import Unparsable

__all__ = ["SERVICE_PREFIX", "HandlerInterceptor", "mark_refuses_unread", "receive_request", "refuses_unread"]

# The Synthesizer's method paths; every other method is a probe (health, reflection).
SERVICE_PREFIX = "/synthserve.v1.Synthesizer/"

_REFUSES_UNREAD = "refuses_unread"


def mark_refuses_unread(behavior: Callable[..., Any]) -> None:
    """Marks a handler that answers without looking at the request: its body is never read."""
    setattr(behavior, _REFUSES_UNREAD, True)


def refuses_unread(behavior: Any) -> bool:
    return bool(getattr(behavior, _REFUSES_UNREAD, False))


async def receive_request(requests: AsyncIterator[Any], calls: CallTracker, method: str) -> Any:
    """The call's one request message, or the domain error that refuses it (none in time, none at all, or bytes
    that do not parse as a `method` request)."""
    request = await calls.receive(requests, method)
    if isinstance(request, Unparsable):
        raise request.refusal(method)
    return request


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor that may replace the handler grpc resolved for a call (`replace`); unknown methods (no
    handler) pass through untouched."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method_path: str = handler_call_details.method  # type: ignore[attr-defined]
        return self.replace(handler, method_path, handler_call_details)

    def replace(
        self, handler: grpc.RpcMethodHandler, method_path: str, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        raise NotImplementedError
