"""The memory a request holds while it runs, and the budget that admits requests by it.

A request's peak is estimated from its row count and its model's schema: graph rows (float32, the runs' outputs and
their concatenation), the finished float64 copy, the wire-typed columns, the response message, its serialized copy
and grpc core's copy of that (for scoring and encoding: the request's table and the outputs instead).
`MemoryBudget` admits a request only while the estimates of the requests in progress, its own included, stay within
`max_inflight_bytes`; the rest are refused at once with RESOURCE_EXHAUSTED, so a burst of large legal requests slows
down instead of exhausting the pod's memory.
A unary call's share is given back when the call ends, not when its handler returns: grpc serializes and sends the
response after that, and until the client has read it the message and its serialized copy are still held.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from serving import metrics
from serving.errors import InvalidArgument, QueueFull
from synthserve.contract import Schema, row_bytes

__all__ = ["MemoryBudget", "sample_bytes", "score_bytes"]


def sample_bytes(schema: Schema, n_rows: int, best_of: int = 1) -> int:
    """Peak bytes of generating and sending `n_rows` rows (best-of-k computes k candidates a row)."""
    width = schema.width
    return n_rows * (8 * width * best_of + 8 * width + 4 * row_bytes(schema))


def score_bytes(schema: Schema, n_rows: int, outputs_per_row: int) -> int:
    """Peak bytes of scoring or encoding `n_rows` rows: the request's table (up to 8 bytes a value, parsed and
    as float32) and `outputs_per_row` float32 outputs, twice (arrays and the response)."""
    return n_rows * (12 * schema.width + 8 * outputs_per_row)


class MemoryBudget:
    def __init__(self, max_inflight_bytes: int | None) -> None:
        self._limit = max_inflight_bytes
        self.held = 0
        metrics.INFLIGHT_BYTES.set_function(lambda: self.held)

    @contextlib.contextmanager
    def hold(self, n_bytes: int, what: str) -> Iterator[None]:
        """Holds `n_bytes` of the budget for the block, or refuses as `reserve` does."""
        release = self.reserve(n_bytes, what)
        try:
            yield
        finally:
            release()

    def reserve(self, n_bytes: int, what: str) -> Callable[[], None]:
        """Holds `n_bytes` of the budget until the returned function is called (again: nothing), or refuses:
        InvalidArgument when the request alone exceeds the budget (it could never run), QueueFull when the requests
        in progress leave too little."""
        limit = self._limit
        if limit is not None:
            if n_bytes > limit:
                raise InvalidArgument(f"{what} would hold ~{n_bytes} bytes, beyond max_inflight_bytes = {limit}")
            if self.held + n_bytes > limit:
                raise QueueFull(
                    f"memory budget: requests in progress hold ~{self.held} bytes; {what} needs ~{n_bytes} more, "
                    f"beyond max_inflight_bytes = {limit}"
                )
        self.held += n_bytes
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.held -= n_bytes

        return release
