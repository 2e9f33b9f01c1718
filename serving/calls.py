"""Calls from the moment grpc hands them to Python to their end: the wait for the request message, the number of
Synthesizer handlers running, and what a graceful stop waits for.

grpc's asyncio server runs a unary-request handler only once the request message has arrived, so a client that
never sends it holds the call (its stream, its memory, a graceful stop) for as long as the connection lives. The
interceptor therefore registers every unary-request method as a request-streaming one (the same bytes on the
wire): the handler starts at accept and `CallTracker.receive` reads the one message within `request_wait_s`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from serving import metrics
from serving.config import CallLimits
from serving.errors import DeadlineExceeded, InvalidArgument, QueueFull

__all__ = ["CallTracker"]


class CallTracker:
    def __init__(self, limits: CallLimits) -> None:
        self._limits = limits
        self.waiting = 0  # calls accepted whose request message has not arrived
        self.running = 0  # Synthesizer handlers past admission
        self._idle = asyncio.Event()
        self._idle.set()

    async def receive(self, requests: AsyncIterator[Any], method: str) -> Any:
        """The call's request message, or DeadlineExceeded when none came within `request_wait_s` and
        InvalidArgument when the client half-closed without one."""
        self.waiting += 1
        try:
            async with asyncio.timeout(self._limits.request_wait_s):
                return await anext(requests)
        except TimeoutError:
            metrics.IDLE_CALLS_CANCELLED.labels(method).inc()
            raise DeadlineExceeded(
                f"request: no request message within request_wait_s = {self._limits.request_wait_s} s"
            ) from None
        except StopAsyncIteration:
            raise InvalidArgument("request: the call ended without a request message") from None
        finally:
            self.waiting -= 1

    def admit(self) -> None:
        """One more Synthesizer handler runs, or QueueFull naming the limit."""
        limit = self._limits.max_inflight_rpcs
        if limit is not None and self.running >= limit:
            raise QueueFull(f"server busy: {self.running} calls in progress, max_inflight_rpcs = {limit}")
        self.running += 1
        self._idle.clear()

    def finished(self) -> None:
        self.running -= 1
        if self.running == 0:
            self._idle.set()

    async def quiet(self, timeout_s: float, idle_grace_s: float) -> None:
        """Returns once no Synthesizer handler runs and calls still waiting for their message have had
        `idle_grace_s` to send it, or after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while deadline - time.monotonic() > 0:
            try:
                await asyncio.wait_for(self._idle.wait(), deadline - time.monotonic())
            except TimeoutError:
                return
            settle_until = min(time.monotonic() + idle_grace_s, deadline)
            while self.waiting and self.running == 0 and time.monotonic() < settle_until:
                await asyncio.sleep(0.01)
            if self.running == 0:
                return
