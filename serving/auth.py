"""Bearer tokens: where they come from (a file and/or an environment value, read once in `main()`) and the
check on every call (UNAUTHENTICATED before the request is read).

Tokens never travel on argv (which `ps` shows to every user). `BearerTokenInterceptor` compares them in constant
time on every Synthesizer RPC, and on health and reflection too when probes are guarded. A refused call gets a
denial handler of the same shape as the one it replaces, marked `refuses_unread` (`serving.receiving`), so the
metrics interceptor counts it like any other outcome without reading its request.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import grpc

from serving.receiving import SERVICE_PREFIX, HandlerInterceptor, mark_refuses_unread

__all__ = ["MIN_TOKEN_CHARS", "BearerTokenInterceptor", "load_tokens"]

# Shorter secrets are guessable online; 16 characters of a random token are ~96 bits.
MIN_TOKEN_CHARS = 16


def load_tokens(token_file: Path | None, env_value: str | None) -> tuple[str, ...]:
    """Accepted tokens: one per line of `token_file` (blank lines and `#` comments skipped) plus the
    comma-separated `env_value`. Refuses short tokens and a file that names none, so a typo cannot turn
    authentication off or on with a trivial secret."""
    tokens: list[str] = []
    if token_file is not None:
        try:
            lines = token_file.read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"auth token file {token_file}: cannot read ({exc.strerror})") from exc
        from_file = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not from_file:
            raise ValueError(f"auth token file {token_file}: no tokens (one per line)")
        tokens.extend(from_file)
    tokens.extend(t.strip() for t in (env_value or "").split(",") if t.strip())
    for index, token in enumerate(tokens):
        if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise ValueError(
                f"auth token #{index + 1}: must be >= {MIN_TOKEN_CHARS} characters without whitespace "
                f"(got {len(token)} characters)"
            )
    return tuple(dict.fromkeys(tokens))


class BearerTokenInterceptor(HandlerInterceptor):
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

    def replace(
        self, handler: grpc.RpcMethodHandler, method_path: str, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        if not (self._guard_probes or method_path.startswith(SERVICE_PREFIX)):
            return handler
        if self._allowed(details.invocation_metadata):  # type: ignore[attr-defined]
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


mark_refuses_unread(_deny)
mark_refuses_unread(_deny_stream)

# Denials keep the shape of the handler they replace: the metrics interceptor counts Synthesizer refusals like
# any other outcome (without reading the request); probes and reflection, request-streaming, never read it.
_DENIALS: dict[tuple[bool, str], grpc.RpcMethodHandler] = {
    (True, "unary_unary"): grpc.unary_unary_rpc_method_handler(_deny),
    (True, "unary_stream"): grpc.unary_stream_rpc_method_handler(_deny_stream),
    (False, "unary_unary"): grpc.stream_unary_rpc_method_handler(_deny),
    (False, "unary_stream"): grpc.stream_stream_rpc_method_handler(_deny_stream),
    (False, "stream_stream"): grpc.stream_stream_rpc_method_handler(_deny_stream),
}
