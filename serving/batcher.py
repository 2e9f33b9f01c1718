"""Dynamic batching: the queue of one (model, version, graph) and its scheduler; the runtime runs what it closes.

Requests submit chunks of at most `batch_rows` rows (`max_batch_rows`, or fewer for a graph whose runs would take
longer than `max_run_s`, sized from its timed runs: serving.run_cost) with a `make_feeds` callable that builds the
chunk's inputs (noise drawn from the request's own seed and row indices), so a chunk's output never depends on
what it is batched with. The scheduler loop, step by step:
1. wait for a chunk, then for a free worker slot (`inference_threads` batches run at once);
2. ask the close policy (serving.close_policy, a pure function of the queue) whether the batch closes now; if not,
   wait until it says or the next arrival wakes the loop (`submit` wakes it only when the queue was empty or is
   now full), and ask again;
3. take up to `batch_rows` rows of live chunks: cancelled chunks and chunks past their deadline are dropped here
   and never computed;
4. run the batch in a worker thread (feeds built and the session run off the event loop), or on the loop for a
   lone caller's batch expected within `inline_max_s` (saving the hop to a worker and back);
5. split the outputs by chunk; if a merged batch fails, rerun its chunks one by one so an error reaches only the
   requests it belongs to.
Bounds: `max_queued_rows` and `max_queue_time_s` refuse a chunk (or a request `admit`ted whole) at once with
RESOURCE_EXHAUSTED. A hot reload that retires the version `drain`s the batcher: queued chunks run to completion
(the runtime stays referenced until then), new ones are refused with NOT_FOUND, except those of a request that
`hold`s the batcher (a stream that began before the reload): it is served to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from serving import metrics
from serving.batch_runner import BatchRunner, FeedBuilder, Outputs, RunGraph
from serving.close_policy import QueueView, close_decision, runs_inline
from serving.config import BatcherConfig
from serving.errors import DeadlineExceeded, ModelNotFound, QueueFull, Unavailable
from serving.run_cost import PROBE_ROWS, RunCost

__all__ = ["PROBE_ROWS", "Batcher", "FeedBuilder", "RunCost", "RunGraph"]

_WEIGHT = 0.125  # of the newest gap between arrivals in its running mean


@dataclass(eq=False)
class _Chunk:
    n_rows: int
    make_feeds: FeedBuilder
    future: asyncio.Future[list[np.ndarray]]
    deadline: float | None  # event-loop time
    enqueued_at: float = field(default_factory=time.monotonic)
    admitted: bool = False  # counted by an `admit`, not on its own


class Batcher:
    """The queue and scheduler of one graph of one model version."""

    def __init__(
        self, model: str, graph: str, run_graph: RunGraph, config: BatcherConfig, executor: Executor, slots: int
    ) -> None:
        self._model, self._graph = model, graph
        self._config = config
        self._executor = executor
        self._queue: deque[_Chunk] = deque()
        self._queued_rows = 0
        self._admitted_rows = 0  # rows of requests admitted whole (`admit`), until the request ends
        self._free_rows = 0  # queued rows of chunks submitted on their own (not under an `admit`)
        self._slots = asyncio.Semaphore(max(1, slots))
        self._n_slots = max(1, slots)
        self._wakeup = asyncio.Event()
        self._closed = False
        self._retired = False
        self._holders = 0  # requests that keep the batcher serving them after it is retired (`hold`)
        self._drained = asyncio.Event()  # set once retired with nothing queued or running, or when closed
        self._running: set[asyncio.Task[None]] = set()
        self._last_batch_chunks = 1
        self._inline_until = 0.0  # a lone chunk that arrives sooner may have queued behind the last inline run
        self._gap_s = 0.0  # mean gap between chunks that arrived while others waited (EWMA): the close policy's pace
        self.run_cost = RunCost()
        self._runner = BatchRunner(model, graph, run_graph, self.run_cost)
        self._queued_gauge = metrics.QUEUED_ROWS.labels(model, graph)
        self._wait_hist = metrics.QUEUE_WAIT_SECONDS.labels(model, graph)
        self._loop_task = asyncio.get_running_loop().create_task(self._schedule())

    @property
    def batch_rows(self) -> int:
        """Rows per run: max_batch_rows, or fewer for a graph whose run would take longer than max_run_s."""
        return self.run_cost.rows_within(self._config.max_run_s, self._config.max_batch_rows)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """While held, a retired batcher still takes the holder's chunks (`submit(..., held=True)`) and does not
        close: a stream that began on this version ends on it, whatever reload happens meanwhile."""
        self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            self._note_if_drained()

    def _refuse_if_retired(self, held: bool) -> None:
        if self._retired and not held:
            raise ModelNotFound(f"this version of model {self._model!r} was retired by a reload")

    def _check_room(self, n_rows: int) -> None:
        waiting = self._free_rows + self._admitted_rows
        if waiting + n_rows > self._config.max_queued_rows:
            raise QueueFull(
                f"queue of {self._model}/{self._graph} is full: {waiting} rows queued or admitted, "
                f"{n_rows} more would exceed max_queued_rows={self._config.max_queued_rows}"
            )
        row_s = self.run_cost.sized_row_s
        if row_s is not None and self._queued_rows:
            wait_s = self._queued_rows * row_s / self._n_slots
            if wait_s > self._config.max_queue_time_s:
                raise QueueFull(
                    f"queue of {self._model}/{self._graph} is full: {self._queued_rows} rows queued would wait "
                    f"~{wait_s:.2f} s, beyond max_queue_time_s={self._config.max_queue_time_s}"
                )

    @contextlib.contextmanager
    def admit(self, n_rows: int) -> Iterator[None]:
        """Admits a request's `n_rows` at once against the queue bounds (QueueFull if they do not fit), so that its
        runs, submitted a few at a time with `admitted=True, held=True`, are never refused half-way: it also holds
        the batcher, so a reload retiring the version lets the request finish on it."""
        self._refuse_if_retired(held=False)
        self._check_room(n_rows)
        self._admitted_rows += n_rows
        try:
            with self.hold():
                yield
        finally:
            self._admitted_rows -= n_rows

    async def submit(
        self,
        n_rows: int,
        make_feeds: FeedBuilder,
        deadline: float | None = None,
        held: bool = False,
        admitted: bool = False,
    ) -> list[np.ndarray]:
        """Queues one chunk (1 <= n_rows <= max_batch_rows) and returns its outputs, row-aligned. `admitted`: its
        rows are part of an `admit` already counted against the queue bound."""
        if self._closed:
            raise Unavailable("server is shutting down")
        self._refuse_if_retired(held)
        if not 1 <= n_rows <= self._config.max_batch_rows:
            raise ValueError(f"chunk of {n_rows} rows outside [1, {self._config.max_batch_rows}]")
        if not admitted:
            self._check_room(n_rows)
            self._free_rows += n_rows
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        if self._queue:
            self._gap_s += _WEIGHT * (now - self._queue[-1].enqueued_at - self._gap_s)
        self._queue.append(_Chunk(n_rows, make_feeds, future, deadline, now, admitted))
        self._queued_rows += n_rows
        self._queued_gauge.set(self._queued_rows)
        if len(self._queue) == 1 or self._queued_rows >= self.batch_rows:
            self._wakeup.set()
        return await future

    async def drain(self) -> None:
        """Retires the queue: new chunks get NOT_FOUND, queued ones run to completion, then the batcher closes."""
        self._retired = True
        self._wakeup.set()  # dispatch what is queued now: no batch mates will arrive to wait for
        self._note_if_drained()
        await self._drained.wait()
        await self.close()

    def _note_if_drained(self) -> None:
        if self._retired and not self._queue and not self._running and not self._holders:
            self._drained.set()

    async def close(self) -> None:
        """Stops scheduling; queued chunks fail with UNAVAILABLE, running batches finish."""
        self._closed = True
        self._drained.set()
        self._loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop_task
        while self._queue:
            chunk = self._queue.popleft()
            if not chunk.future.done():
                chunk.future.set_exception(Unavailable("server is shutting down"))
        self._queued_rows = 0
        self._free_rows = 0
        self._queued_gauge.set(0)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        config = self._config
        while True:
            if not self._queue:  # 1. a chunk, then a slot
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()
            while (decision := close_decision(self._view(), config)).wait_s > 0:  # 2. close now, or wait and ask again
                self._wakeup.clear()
                timer = loop.call_later(decision.wait_s, self._wakeup.set)
                try:
                    await self._wakeup.wait()
                finally:
                    timer.cancel()
            batch = self._take(loop.time())  # 3. live chunks only
            if not batch:
                self._release()
                continue
            expected_s = self.run_cost.predict(sum(chunk.n_rows for chunk in batch))
            if (
                decision.alone
                and config.early_dispatch
                and runs_inline(batch[0].enqueued_at, self._inline_until, expected_s, config)
            ):  # 4. a lone caller's small batch: the loop has nothing else to do (ONNX Runtime releases the GIL)
                self._settle(batch, self._run(batch))
                self._inline_until = time.monotonic() + config.inline_max_s
                self._release()
                continue
            task = loop.create_task(self._execute(batch))  # 4. in a worker thread
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _view(self) -> QueueView:
        queue = self._queue
        return QueueView(
            now=time.monotonic(),
            queued_rows=self._queued_rows,
            queued_chunks=len(queue),
            oldest_at=queue[0].enqueued_at if queue else 0.0,
            newest_at=queue[-1].enqueued_at if queue else 0.0,
            batch_rows=self.batch_rows,
            last_batch_chunks=self._last_batch_chunks,
            running=len(self._running),
            retired=self._retired,
            mean_gap_s=self._gap_s,
            fixed_s=self.run_cost.fixed_s,
        )

    def _take(self, now: float) -> list[_Chunk]:
        """Pops up to max_batch_rows rows of live chunks; the dead ones are failed or dropped here."""
        batch: list[_Chunk] = []
        rows = 0
        max_rows = self.batch_rows
        limit = max_rows if self._config.enabled else 1
        while self._queue:
            chunk = self._queue[0]
            live = not chunk.future.done() and (chunk.deadline is None or chunk.deadline > now)
            if live and batch and (rows + chunk.n_rows > max_rows or len(batch) >= limit):
                break
            self._queue.popleft()
            self._queued_rows -= chunk.n_rows
            if not chunk.admitted:
                self._free_rows -= chunk.n_rows
            if not live:
                if not chunk.future.done():
                    chunk.future.set_exception(DeadlineExceeded("deadline passed while queued; never computed"))
                continue
            batch.append(chunk)
            rows += chunk.n_rows
        if batch:
            self._last_batch_chunks = len(batch)
        self._queued_gauge.set(self._queued_rows)
        dispatched_at = time.monotonic()
        for chunk in batch:
            self._wait_hist.observe(dispatched_at - chunk.enqueued_at)
        return batch

    async def _execute(self, batch: list[_Chunk]) -> None:
        try:
            loop = asyncio.get_running_loop()
            self._settle(batch, await loop.run_in_executor(self._executor, self._run, batch))
        finally:
            # Leave the running set now (not in the done callback) so the scheduler sees the slot as idle.
            self._running.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._release()

    def _run(self, batch: list[_Chunk]) -> list[Outputs | BaseException]:
        return self._runner.run([(chunk.n_rows, chunk.make_feeds) for chunk in batch])

    @staticmethod
    def _settle(batch: list[_Chunk], results: list[Outputs | BaseException]) -> None:
        for chunk, result in zip(batch, results):
            if chunk.future.done():
                continue
            if isinstance(result, BaseException):
                chunk.future.set_exception(result)
            else:
                chunk.future.set_result(result)

    def _release(self) -> None:
        """A batch finished (or held no live chunk): its slot is free again."""
        self._slots.release()
        if self._queue:
            self._wakeup.set()
        self._note_if_drained()
