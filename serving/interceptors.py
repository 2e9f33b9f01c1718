"""The one place where domain errors become gRPC status codes, where every RPC is counted and timed, where
requests are received, and where bearer tokens are checked.

Handlers raise `serving.errors` exceptions and never set codes; `ErrorAndMetricsInterceptor` aborts the call
with the mapped code and the exception's message (capped in length), and records `synthserve_requests_total` and
`synthserve_request_latency_seconds`. It registers every unary-request method as request-streaming (the same
bytes on the wire) so that it can bound the wait for the request message (`serving.calls`) and refuse bytes that
do not parse (`serving.parsing`). `BearerTokenInterceptor` answers UNAUTHENTICATED before the request is read.
Health and reflection get the same receiving and parsing, and no token unless probes are guarded.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, cast

import grpc

from serving import errors, metrics
from serving.calls import CallTracker
from serving.parsing import Unparsable, safe_deserializer

__all__ = [
    "MAX_STATUS_MESSAGE_BYTES",
    "SERVICE_PREFIX",
    "STATUS_BY_ERROR",
    "BearerTokenInterceptor",
    "ErrorAndMetricsInterceptor",
    "status_for",
]

_log = logging.getLogger(__name__)

SERVICE_PREFIX = "/synthserve.v1.Synthesizer/"
MAX_STATUS_MESSAGE_BYTES = 2000  # percent-encoded at most 6,000 bytes: inside grpc's default 8 KiB metadata limit

STATUS_BY_ERROR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (errors.ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotSupported, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
)


def status_for(exc: BaseException) -> grpc.StatusCode:
    for error_type, code in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return code
    return grpc.StatusCode.INTERNAL


class _Outcome:
    """Status code name of a finished call, for the requests counter."""

    def __init__(self) -> None:
        self.code = "OK"

    def failed(self, exc: BaseException, context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode, str] | None:
        """Returns (code, message) to abort with, or None when the exception is grpc's own (abort, cancel)."""
        if isinstance(exc, asyncio.CancelledError):
            self.code = "CANCELLED"
            return None
        if isinstance(exc, grpc.aio.AbortError) or not isinstance(exc, Exception):
            code = context.code()
            self.code = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
            return None
        code = status_for(exc)
        if code is grpc.StatusCode.INTERNAL:
            _log.exception("internal error", exc_info=exc)
            message = f"internal error: {type(exc).__name__}: {exc}"
        else:
            message = str(exc)
        self.code = code.name
        return code, _capped(message)


def _capped(message: str) -> str:
    """The status message within MAX_STATUS_MESSAGE_BYTES of UTF-8: it travels percent-encoded in a trailer, and a
    trailer over the client's metadata limit (8 KiB by default) turns the real status into RESOURCE_EXHAUSTED."""
    encoded = message.encode()
    if len(encoded) <= MAX_STATUS_MESSAGE_BYTES:
        return message
    head = encoded[: MAX_STATUS_MESSAGE_BYTES - 48].decode(errors="ignore")
    return f"{head}... ({len(message)} characters in all)"


def _refuses_unread(behavior: Any) -> bool:
    """A handler that answers without looking at the request (a refused token): its body is never read."""
    return bool(getattr(behavior, "refuses_unread", False))


async def _request(requests: AsyncIterator[Any], calls: CallTracker, method: str) -> Any:
    request = await calls.receive(requests, method)
    if isinstance(request, Unparsable):
        raise request.refusal(method)
    return request


def _wrap_unary(
    behavior: Callable[..., Awaitable[Any]], method: str, known: frozenset[str], calls: CallTracker
) -> Callable[..., Awaitable[Any]]:
    unread = _refuses_unread(behavior)

    async def handler(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        outcome = _Outcome()
        request: Any = None
        admitted = False
        try:
            if not unread:
                request = await _request(requests, calls, method)
            calls.admit()
            admitted = True
            return await behavior(request, context)
        except BaseException as exc:
            abort = outcome.failed(exc, context)
            if abort is None:
                raise
            await context.abort(*abort)
        finally:
            if admitted:
                calls.finished()
            _record(_model_label(request, known), method, outcome.code, started)

    return handler


def _wrap_stream(
    behavior: Callable[..., AsyncIterator[Any]], method: str, known: frozenset[str], calls: CallTracker
) -> Callable[..., AsyncIterator[Any]]:
    unread = _refuses_unread(behavior)

    async def handler(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        outcome = _Outcome()
        request: Any = None
        admitted = False
        try:
            if not unread:
                request = await _request(requests, calls, method)
            calls.admit()
            admitted = True
            async for message in behavior(request, context):
                yield message
        except BaseException as exc:
            abort = outcome.failed(exc, context)
            if abort is None:
                raise
            await context.abort(*abort)
        finally:
            if admitted:
                calls.finished()
            _record(_model_label(request, known), method, outcome.code, started)

    return handler


def _model_label(request: Any, known: frozenset[str]) -> str:
    model = getattr(request, "model", "")
    return model if model in known or not model else "unknown"


def _record(model: str, method: str, code: str, started: float) -> None:
    metrics.child(metrics.REQUESTS, model, method, code).inc()
    metrics.child(metrics.REQUEST_LATENCY_SECONDS, model, method).observe(time.perf_counter() - started)


def _probe(handler: grpc.RpcMethodHandler, method_path: str, calls: CallTracker) -> grpc.RpcMethodHandler:
    """Health's handlers, request-streaming like the Synthesizer's: bounded wait, unparsable bytes refused."""

    async def receive(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        try:
            return await _request(requests, calls, method_path.rsplit("/", 1)[-1])
        except errors.ServingError as exc:
            await context.abort(status_for(exc), _capped(str(exc)))

    deserializer = safe_deserializer(handler.request_deserializer)
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def check(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await unary(await receive(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(
            check, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )
    if handler.unary_stream is None:
        return handler  # reflection: request-streaming already
    inner = handler.unary_stream
    if inspect.isasyncgenfunction(inner):
        generator = cast(Callable[..., AsyncIterator[Any]], inner)

        async def watch_generator(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            async for message in generator(await receive(requests, context), context):
                yield message

        watch: Callable[..., Any] = watch_generator
    else:  # a coroutine writing with context.write (grpc's health Watch)

        async def watch_writer(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await inner(await receive(requests, context), context)

        watch = watch_writer
    return grpc.stream_stream_rpc_method_handler(
        watch, request_deserializer=deserializer, response_serializer=handler.response_serializer
    )


class ErrorAndMetricsInterceptor(grpc.aio.ServerInterceptor):
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

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method_path: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None:
            return handler
        cached = self._wrapped.get(method_path)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if method_path.startswith(SERVICE_PREFIX):
            wrapped = self._wrap(handler, method_path[len(SERVICE_PREFIX) :])
        else:
            wrapped = _probe(handler, method_path, self._calls)
        behavior = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        if not _refuses_unread(behavior):  # a refusal stands for one call, not for the method
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


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` with one of `tokens` on every Synthesizer RPC, and on health and
    reflection too when `guard_probes`. A refused call's request is never read, let alone parsed."""

    def __init__(self, tokens: Collection[str], *, guard_probes: bool = False) -> None:
        if not tokens or any(not t for t in tokens):
            raise ValueError("auth tokens must be non-empty strings")
        self._tokens = tuple(t.encode() for t in tokens)
        self._guard_probes = guard_probes

    def _allowed(self, metadata: Any) -> bool:
        header = dict(metadata or ()).get("authorization", "")
        if not isinstance(header, str) or not header.startswith("Bearer "):
            return False
        given = header[len("Bearer ") :].encode()
        # Compare against every token in constant time, so timing reveals neither which nor how much matched.
        return sum(hmac.compare_digest(given, token) for token in self._tokens) > 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method_path: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or not (self._guard_probes or method_path.startswith(SERVICE_PREFIX)):
            return handler
        if self._allowed(handler_call_details.invocation_metadata):  # type: ignore[attr-defined]
            return handler
        return _DENIALS.get((method_path.startswith(SERVICE_PREFIX), _shape(handler))) or handler


_DENIED = "missing or invalid bearer token (metadata 'authorization: Bearer <token>')"


def _shape(handler: grpc.RpcMethodHandler) -> str:
    for shape in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        if getattr(handler, shape) is not None:
            return shape
    return ""


async def _deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)


async def _deny_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)
    yield  # an async generator, like the handler it replaces


setattr(_deny, "refuses_unread", True)  # noqa: B010 (read by ErrorAndMetricsInterceptor)
setattr(_deny_stream, "refuses_unread", True)  # noqa: B010

# Denials keep the shape of the handler they replace: the metrics interceptor counts Synthesizer refusals like
# any other outcome (without reading the request); probes and reflection, request-streaming, never read it.
_DENIALS: dict[tuple[bool, str], grpc.RpcMethodHandler] = {
    (True, "unary_unary"): grpc.unary_unary_rpc_method_handler(_deny),
    (True, "unary_stream"): grpc.unary_stream_rpc_method_handler(_deny_stream),
    (False, "unary_unary"): grpc.stream_unary_rpc_method_handler(_deny),
    (False, "unary_stream"): grpc.stream_stream_rpc_method_handler(_deny_stream),
    (False, "stream_stream"): grpc.stream_stream_rpc_method_handler(_deny_stream),
}
