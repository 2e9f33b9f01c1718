"""The one place where domain errors become gRPC status codes, where every RPC is counted and timed, and
where bearer tokens are checked.

Handlers raise `serving.errors` exceptions and never set codes; `ErrorAndMetricsInterceptor` aborts the call
with the mapped code and the exception's message, and records `synthserve_requests_total` and
`synthserve_request_latency_seconds`. `BearerTokenInterceptor` answers UNAUTHENTICATED before a handler runs.
Health and reflection pass through both untouched, so probes need no token.
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

__all__ = ["SERVICE_PREFIX", "STATUS_BY_ERROR", "BearerTokenInterceptor", "ErrorAndMetricsInterceptor", "status_for"]

_log = logging.getLogger(__name__)

SERVICE_PREFIX = "/synthserve.v1.Synthesizer/"
UNPARSABLE_LOG_INTERVAL_S = 10.0
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


class _Unparsable:
    """What a request whose bytes do not parse becomes: the handler refuses it (INVALID_ARGUMENT) instead of grpc
    answering UNKNOWN with a logged traceback per request."""

    __slots__ = ("error", "size")
    model = ""  # read by the metrics label

    def __init__(self, error: str, size: int) -> None:
        self.error = error
        self.size = size

    def refusal(self, method: str) -> errors.InvalidArgument:
        return errors.InvalidArgument(
            f"request: {self.size} bytes that do not parse as a {method} request ({self.error})"
        )


class _RateLimitedWarning:
    """At most one log line per `interval_s`, saying how many were left out: a client cannot flood the log."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next = 0.0
        self._left_out = 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        if now < self._next:
            self._left_out += 1
            return
        more = f" (and {self._left_out} more since the last report)" if self._left_out else ""
        _log.warning("%s%s", message, more)
        self._left_out = 0
        self._next = now + self._interval_s


_UNPARSABLE_LOG = _RateLimitedWarning(UNPARSABLE_LOG_INTERVAL_S)


def _safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, and whatever else a hostile body makes the parser raise
            _UNPARSABLE_LOG.warn(f"refused an unparsable request ({len(data)} bytes, {type(exc).__name__})")
            return _Unparsable(type(exc).__name__, len(data))

    return parse


def _wrap_unary(
    behavior: Callable[..., Awaitable[Any]], method: str, known: frozenset[str]
) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        outcome = _Outcome()
        try:
            if isinstance(request, _Unparsable):
                raise request.refusal(method)
            return await behavior(request, context)
        except BaseException as exc:
            abort = outcome.failed(exc, context)
            if abort is None:
                raise
            await context.abort(*abort)
        finally:
            _record(_model_label(request, known), method, outcome.code, started)

    return handler


def _wrap_stream(
    behavior: Callable[..., AsyncIterator[Any]], method: str, known: frozenset[str]
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        outcome = _Outcome()
        try:
            if isinstance(request, _Unparsable):
                raise request.refusal(method)
            async for message in behavior(request, context):
                yield message
        except BaseException as exc:
            abort = outcome.failed(exc, context)
            if abort is None:
                raise
            await context.abort(*abort)
        finally:
            _record(_model_label(request, known), method, outcome.code, started)

    return handler


def _model_label(request: Any, known: frozenset[str]) -> str:
    model = getattr(request, "model", "")
    return model if model in known or not model else "unknown"


def _record(model: str, method: str, code: str, started: float) -> None:
    metrics.child(metrics.REQUESTS, model, method, code).inc()
    metrics.child(metrics.REQUEST_LATENCY_SECONDS, model, method).observe(time.perf_counter() - started)


class ErrorAndMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the Synthesizer's handlers (status codes, metrics, unparsable requests); other services' unary-request
    handlers only refuse unparsable requests.

    `known_models` bounds the `model` label: names the server does not serve are counted as "unknown", so
    callers cannot create unbounded metric series.
    """

    def __init__(self, known_models: Collection[str]) -> None:
        self._known_models = frozenset(known_models)
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
        else:  # health (and reflection, whose streamed requests grpc parses itself): unparsable bodies refused
            wrapped = _parse_guarded(handler, method_path)
        self._wrapped[method_path] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, self._known_models),
                request_deserializer=_safe_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(cast(Callable[..., AsyncIterator[Any]], handler.unary_stream), method, self._known_models),
                request_deserializer=_safe_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


def _parse_guarded(handler: grpc.RpcMethodHandler, method_path: str) -> grpc.RpcMethodHandler:
    """Another service's unary-request handler, refusing unparsable requests with INVALID_ARGUMENT."""
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Unparsable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request.refusal(method_path)))
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded_unary,
            request_deserializer=_safe_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner = handler.unary_stream
        if inspect.isasyncgenfunction(inner):
            stream = cast(Callable[..., AsyncIterator[Any]], inner)

            async def guarded_generator(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Unparsable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request.refusal(method_path)))
                async for message in stream(request, context):
                    yield message

            guarded: Callable[..., Any] = guarded_generator

        else:  # a coroutine writing with context.write (grpc's health Watch)

            async def guarded_writer(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Unparsable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request.refusal(method_path)))
                return await inner(request, context)

            guarded = guarded_writer
        return grpc.unary_stream_rpc_method_handler(
            guarded,
            request_deserializer=_safe_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    return handler


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` with one of `tokens` on every Synthesizer RPC, and on health and
    reflection too when `guard_probes`."""

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
        message = "missing or invalid bearer token (metadata 'authorization: Bearer <token>')"

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # an async generator, like the handler it replaces

        # request_deserializer None: a refused call's body is never parsed (grpc hands the handler raw bytes).
        if handler.stream_stream is not None:  # reflection, when guarded
            return grpc.stream_stream_rpc_method_handler(
                deny_stream, request_deserializer=None, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                deny_stream, request_deserializer=None, response_serializer=handler.response_serializer
            )
        return grpc.unary_unary_rpc_method_handler(
            deny, request_deserializer=None, response_serializer=handler.response_serializer
        )
