"""Dynamic batching: decides what runs together; the runtime runs it.

One `Batcher` per (model, version, graph). Requests submit chunks of at most `batch_rows` rows (`max_batch_rows`,
or fewer for a graph whose runs would take longer than `max_run_s`, sized from its timed runs) with a
`make_feeds` callable that builds the chunk's inputs (noise drawn from the request's own seed and row
indices), so a chunk's output never depends on what it is batched with. A batch closes when it holds
`batch_rows` rows or when its oldest chunk has waited `max_queue_delay_s`; with `early_dispatch`, also when
waiting cannot help: at once when requests arrive one at a time (the last batch held one chunk, none other is
queued, a worker slot is idle), and as soon as arrivals pause (none for `_PAUSE_GAPS` mean gaps between chunks
that arrived while others waited, nor for a run's fixed cost: a closed group of callers has all come). Once requests
share batches, a batch waits for its mates even with a worker idle: under load, each batch's fixed cost (a
session run, the hop to a worker thread) is what bounds small-request throughput. Before it runs, cancelled
chunks and chunks past their deadline are dropped and never computed. Feeds are built and the session runs in
worker threads, off the event loop, with one exception: a lone caller's batch expected to run within
`inline_max_s` runs on the loop, which has nothing else of this batcher to do, saving the hop to a worker and back
(unless its chunk came right after the previous inline run, so it may have queued behind it: a blocked loop hides
concurrent callers, and they must reach a worker to be merged). If a merged batch fails, its chunks are rerun
one by one so an error reaches only the requests it belongs to.
A hot reload that retires the version `drain`s its batchers: chunks already queued run to completion (the
runtime stays referenced until then), new chunks are refused with NOT_FOUND, except those of a request that
`hold`s the batcher (a stream that began before the reload): it is served to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from serving import metrics
from serving.config import BatcherConfig
from serving.errors import DeadlineExceeded, ModelNotFound, QueueFull, Unavailable

__all__ = ["Batcher", "FeedBuilder", "RunCost", "RunGraph"]

FeedBuilder = Callable[[], dict[str, np.ndarray]]
RunGraph = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]

_WEIGHT = 0.125  # of the newest gap between arrivals in its running mean
PROBE_ROWS = 64  # rows per run until runs of >= _SIZED_RUN_ROWS rows have been timed
_SIZED_RUN_ROWS = 64
_PAUSE_GAPS = 2.0  # no arrival for this many mean gaps: the batch closes


class RunCost:
    """A batch's run time as `fixed_s + per_row_s * rows`, fitted by least squares over recent batches
    (exponentially weighted moments). Until batches of different sizes are seen, all of it counts as per-row.
    The fixed part is what merging saves, once per batch. Worker threads call `observe`; an update lost to a race
    only blurs the estimate."""

    def __init__(self, weight: float = 1 / 32) -> None:
        self._weight = weight
        self._moments: tuple[float, ...] | None = None  # E[rows], E[s], E[rows^2], E[rows * s]
        self.fixed_s = 0.0
        self.per_row_s = 0.0
        # Seconds per row of runs of >= _SIZED_RUN_ROWS rows, fixed cost included (EWMA): what sizes runs. The fit
        # above extrapolates badly from runs of nearly one size; this never under-estimates a large run.
        self.sized_row_s: float | None = None

    def observe(self, rows: int, seconds: float) -> None:
        if rows >= _SIZED_RUN_ROWS:
            row_s = seconds / rows
            self.sized_row_s = (
                row_s if self.sized_row_s is None else self.sized_row_s + 0.25 * (row_s - self.sized_row_s)
            )
        new = (rows, seconds, rows * rows, rows * seconds)
        old = self._moments or new  # the first batch starts the means (no pull towards zero)
        mean_rows, mean_s, mean_rows2, mean_rows_s = (m + self._weight * (x - m) for m, x in zip(old, new))
        self._moments = (mean_rows, mean_s, mean_rows2, mean_rows_s)
        spread = mean_rows2 - mean_rows * mean_rows
        if spread > 1e-6 * mean_rows2:
            per_row = max(0.0, (mean_rows_s - mean_rows * mean_s) / spread)
        else:
            per_row = mean_s / mean_rows if mean_rows > 0 else 0.0
        self.per_row_s = per_row
        self.fixed_s = max(0.0, mean_s - per_row * mean_rows)

    def predict(self, rows: int) -> float | None:
        """Expected run time of a batch of `rows`; None before any batch was observed."""
        return None if self._moments is None else self.fixed_s + self.per_row_s * rows

    def rows_within(self, seconds: float, cap: int) -> int:
        """The most rows (1..cap) expected to run within `seconds`, from runs of >= _SIZED_RUN_ROWS rows; before
        any, PROBE_ROWS (at most cap)."""
        if self.sized_row_s is None:
            return min(cap, PROBE_ROWS)
        return max(1, min(cap, int(seconds / max(self.sized_row_s, 1e-9))))


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
        self._run_graph = run_graph
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
        # Arrivals have paused when no chunk came for `_PAUSE_GAPS` mean gaps between chunks that arrived while
        # others waited (EWMA), nor for a run's fixed cost (waiting less than a batch mate would save is cheap).
        self._gap_s = 0.0
        self.run_cost = RunCost()
        self._queued_gauge = metrics.QUEUED_ROWS.labels(model, graph)
        self._wait_hist = metrics.QUEUE_WAIT_SECONDS.labels(model, graph)
        self._rows_hist = metrics.BATCH_ROWS.labels(model, graph)
        self._exec_hist = metrics.BATCH_EXECUTION_SECONDS.labels(model, graph)
        self._computed = metrics.ROWS_COMPUTED.labels(model, graph)
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
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()
            # Wait for a full batch or the oldest chunk's delay, unless requests arrive one at a time and a slot
            # is idle (a lone caller would only wait) or arrivals have paused. `submit` wakes the scheduler only
            # when the queue was empty or is now full; otherwise a timer does, re-armed as the pause moves.
            alone = False
            while config.enabled and self._queue and self._queued_rows < self.batch_rows:
                alone = self._last_batch_chunks == 1 and len(self._queue) == 1 and not self._running
                if self._retired or (config.early_dispatch and alone):
                    break
                close_at = self._queue[0].enqueued_at + config.max_queue_delay_s
                if config.early_dispatch:
                    pause_s = max(_PAUSE_GAPS * self._gap_s, self.run_cost.fixed_s)
                    close_at = min(close_at, self._queue[-1].enqueued_at + pause_s)
                remaining = close_at - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                timer = loop.call_later(remaining, self._wakeup.set)
                try:
                    await self._wakeup.wait()
                finally:
                    timer.cancel()
            batch = self._take(loop.time())
            if not batch:
                self._release()
                continue
            if alone and config.early_dispatch and self._runs_inline(batch):
                # A lone caller's small batch runs here: the loop has nothing else to do, and the hop to a worker
                # thread and back would cost more than the run (ONNX Runtime still releases the GIL meanwhile).
                self._settle(batch, self._run_batch(batch))
                self._inline_until = time.monotonic() + config.inline_max_s
                self._release()
                continue
            task = loop.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _runs_inline(self, batch: list[_Chunk]) -> bool:
        """Whether a lone caller's batch runs on the loop: its expected run is within `inline_max_s`, and its chunk
        did not arrive so soon after the last inline run that it may have waited behind it (a blocked loop hides
        concurrent callers, and the batcher must see them to merge their requests)."""
        if batch[0].enqueued_at <= self._inline_until:
            return False
        expected_s = self.run_cost.predict(sum(chunk.n_rows for chunk in batch))
        return expected_s is not None and self._config.inline_max_s > 0 and expected_s <= self._config.inline_max_s

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
            self._settle(batch, await loop.run_in_executor(self._executor, self._run_batch, batch))
        finally:
            # Leave the running set now (not in the done callback) so the scheduler sees the slot as idle.
            self._running.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._release()

    @staticmethod
    def _settle(batch: list[_Chunk], results: list[list[np.ndarray] | BaseException]) -> None:
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

    def _run_batch(self, batch: list[_Chunk]) -> list[list[np.ndarray] | BaseException]:
        """In a worker (or inline): build feeds, run once, split outputs; isolate failures chunk by chunk."""
        try:
            return self._run_merged(batch)
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
        results: list[list[np.ndarray] | BaseException] = []
        for chunk in batch:
            try:
                results.extend(self._run_merged([chunk]))
            except Exception as exc:
                results.append(exc)
        return results

    def _run_merged(self, batch: list[_Chunk]) -> list[list[np.ndarray] | BaseException]:
        built = time.perf_counter()
        feeds = [chunk.make_feeds() for chunk in batch]
        merged = feeds[0] if len(feeds) == 1 else {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
        rows = sum(chunk.n_rows for chunk in batch)
        started = time.perf_counter()
        outputs = self._run_graph(merged)
        finished = time.perf_counter()
        self.run_cost.observe(rows, finished - built)
        self._exec_hist.observe(finished - started)
        self._rows_hist.observe(rows)
        self._computed.inc(rows)
        for index, output in enumerate(outputs):
            if output.shape[0] != rows:
                raise RuntimeError(f"{self._graph} output {index} has {output.shape[0]} rows for {rows} input rows")
        if len(batch) == 1:
            return [outputs]
        offsets = np.cumsum([0] + [chunk.n_rows for chunk in batch])
        return [[o[offsets[i] : offsets[i + 1]] for o in outputs] for i in range(len(batch))]
