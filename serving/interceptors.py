"""The one place where domain errors become gRPC status codes, and where every RPC is counted and timed.

Handlers raise `serving.errors` exceptions and never set codes; `ErrorAndMetricsInterceptor` aborts the call
with the mapped code and the exception's message (capped in length), and records `synthserve_requests_total` and
`synthserve_request_latency_seconds`. It registers every unary-request method as request-streaming (the same
bytes on the wire) so that the handler receives its request itself (`serving.receiving`): a bounded wait, and
bytes that do not parse refused. Health and reflection get the same receiving, and no token unless probes are
guarded (`serving.auth`, re-exported here because the server wires both interceptors from this module).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from types import TracebackType
from typing import Any, cast

import grpc

from serving import errors, metrics
from serving.auth import BearerTokenInterceptor
from serving.calls import CallTracker
from serving.parsing import safe_deserializer
from serving.receiving import SERVICE_PREFIX, HandlerInterceptor, receive_request, refuses_unread
from synthserve.contract import RequestError, UnsupportedRequest


class _NoSuchError(Exception):
    """Stands in for ExecuteBatchError where grpc does not define it: never raised."""


# What grpc raises when a status cannot be sent because the call is gone (grpc's own handler ignores it only when
# it escapes a servicer, not when it interrupts the handling of another exception).
_EXECUTE_BATCH_ERROR: type[BaseException] = getattr(
    getattr(getattr(grpc, "_cython", None), "cygrpc", None), "ExecuteBatchError", _NoSuchError
)

__all__ = [
    "MAX_STATUS_MESSAGE_BYTES",
    "STATUS_BY_ERROR",
    "BearerTokenInterceptor",
    "ErrorAndMetricsInterceptor",
    "status_for",
]

_log = logging.getLogger(__name__)

MAX_STATUS_MESSAGE_BYTES = 2000  # percent-encoded at most 6,000 bytes: inside grpc's default 8 KiB metadata limit

STATUS_BY_ERROR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (errors.ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    # The contract's request rules (synthserve.contract.labels, sampling, graphs); the subclass first.
    (UnsupportedRequest, grpc.StatusCode.FAILED_PRECONDITION),
    (RequestError, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_for(exc: BaseException) -> grpc.StatusCode:
    for error_type, code in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return code
    return grpc.StatusCode.INTERNAL


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """Ends the call with `code`; when the peer is already gone (grpc cannot send a status: ExecuteBatchError),
    as a cancelled call, which grpc ends quietly, instead of an error grpc logs with a traceback."""
    try:
        await context.abort(code, details)
    except _EXECUTE_BATCH_ERROR:
        raise asyncio.CancelledError from None


def _failure(exc: BaseException, context: grpc.aio.ServicerContext) -> tuple[str, tuple[grpc.StatusCode, str] | None]:
    """The status code name a call that raised `exc` ends with (for the requests counter), and the (code,
    message) to abort it with; None when the exception is grpc's own (abort, cancel) and stands as it is."""
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED", None
    if isinstance(exc, grpc.aio.AbortError) or not isinstance(exc, Exception):
        code = context.code()
        return (code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"), None
    status = status_for(exc)
    if status is grpc.StatusCode.INTERNAL:
        _log.exception("internal error", exc_info=exc)
        message = f"internal error: {type(exc).__name__}: {exc}"
    else:
        message = str(exc)
    return status.name, (status, _capped(message))


def _capped(message: str) -> str:
    """The status message within MAX_STATUS_MESSAGE_BYTES of UTF-8: it travels percent-encoded in a trailer, and a
    trailer over the client's metadata limit (8 KiB by default) turns the real status into RESOURCE_EXHAUSTED."""
    encoded = message.encode()
    if len(encoded) <= MAX_STATUS_MESSAGE_BYTES:
        return message
    head = encoded[: MAX_STATUS_MESSAGE_BYTES - 48].decode(errors="ignore")
    return f"{head}... ({len(message)} characters in all)"


class _Call:
    """One Synthesizer call from accept to end, whatever its handler's shape: `admit` receives the request and
    takes a slot; leaving the `async with` maps what the handler raised to a status, frees the slot and records
    the outcome under a bounded `model` label."""

    def __init__(
        self, context: grpc.aio.ServicerContext, method: str, known: frozenset[str], calls: CallTracker
    ) -> None:
        self._context = context
        self._method = method
        self._known = known
        self._calls = calls
        self._started = time.perf_counter()
        self._request: Any = None
        self._admitted = False

    async def admit(self, requests: AsyncIterator[Any], unread: bool) -> Any:
        """The request (None for a handler that refuses it unread), once the call holds a slot."""
        if not unread:
            self._request = await receive_request(requests, self._calls, self._method)
        self._calls.admit()
        self._admitted = True
        return self._request

    async def __aenter__(self) -> _Call:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        code = "OK"
        try:
            if exc is not None:
                code, abort = _failure(exc, self._context)
                if abort is not None:
                    await _abort(self._context, *abort)
        finally:
            if self._admitted:
                self._calls.finished()
            model = getattr(self._request, "model", "")
            label = model if model in self._known or not model else "unknown"
            metrics.child(metrics.REQUESTS, label, self._method, code).inc()
            elapsed_s = time.perf_counter() - self._started
            metrics.child(metrics.REQUEST_LATENCY_SECONDS, label, self._method).observe(elapsed_s)


def _wrap_unary(
    behavior: Callable[..., Awaitable[Any]], method: str, known: frozenset[str], calls: CallTracker
) -> Callable[..., Awaitable[Any]]:
    unread = refuses_unread(behavior)

    async def handler(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        async with _Call(context, method, known, calls) as call:
            return await behavior(await call.admit(requests, unread), context)

    return handler


def _wrap_stream(
    behavior: Callable[..., AsyncIterator[Any]], method: str, known: frozenset[str], calls: CallTracker
) -> Callable[..., AsyncIterator[Any]]:
    unread = refuses_unread(behavior)

    async def handler(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with _Call(context, method, known, calls) as call:
            async for message in behavior(await call.admit(requests, unread), context):
                yield message

    return handler


def _probe(handler: grpc.RpcMethodHandler, method_path: str, calls: CallTracker) -> grpc.RpcMethodHandler:
    """Health's handlers, request-streaming like the Synthesizer's: bounded wait, unparsable bytes refused; not
    counted. Both are coroutines of one request (grpc_health's asyncio servicer): Check returns its answer and
    Watch writes its stream with `context.write`, so one wrapper serves either shape."""
    behavior = handler.unary_unary or handler.unary_stream
    if behavior is None:
        return handler  # reflection (and a refused probe): request-streaming already
    method = method_path.rsplit("/", 1)[-1]

    async def receive(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        try:
            return await receive_request(requests, calls, method)
        except errors.ServingError as exc:
            await _abort(context, status_for(exc), _capped(str(exc)))

    async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        return await behavior(await receive(requests, context), context)

    if handler.unary_unary is not None:
        register = grpc.stream_unary_rpc_method_handler
    else:
        register = grpc.stream_stream_rpc_method_handler
    return register(
        handle,
        request_deserializer=safe_deserializer(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class ErrorAndMetricsInterceptor(HandlerInterceptor):
    """Wraps the Synthesizer's handlers (receiving, status codes, metrics, admission); health's handlers get the
    same receiving.

    `known_models` bounds the `model` label: names the server does not serve are counted as "unknown", so
    callers cannot create unbounded metric series.
    """

    def __init__(self, known_models: Collection[str], calls: CallTracker) -> None:
        self._known_models = frozenset(known_models)
        self._calls = calls
        # grpc hands back the same handler object per method, so each is wrapped once, not per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def set_known_models(self, known_models: Collection[str]) -> None:
        """After a hot reload: the names that count as themselves in the `model` label."""
        self._known_models = frozenset(known_models)
        self._wrapped.clear()

    def replace(
        self, handler: grpc.RpcMethodHandler, method_path: str, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        cached = self._wrapped.get(method_path)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if method_path.startswith(SERVICE_PREFIX):
            wrapped = self._wrap(handler, method_path[len(SERVICE_PREFIX) :])
        else:
            wrapped = _probe(handler, method_path, self._calls)
        behavior = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        if not refuses_unread(behavior):  # a refusal stands for one call, not for the method
            self._wrapped[method_path] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        known = self._known_models
        deserializer = safe_deserializer(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, known, self._calls),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(cast(Callable[..., AsyncIterator[Any]], handler.unary_stream), method, known, self._calls),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
