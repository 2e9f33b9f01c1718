"""What the servicer calls: plans (serving.planning) in, numpy out, computed in runs over the batchers.

Rows depend only on (model version, seed, labels, row index, sampling options): every run draws its noise with
`synthserve.contract.noise_feeds` at the rows' indices within the request (candidate indices under best-of-k,
synthserve.contract.sampling) and feeds option inputs (the guidance weight) per row, so how a request is split
into runs, and what they are batched with, cannot change a value. A large request advances at most
`request_window_runs` runs at a time, so other requests' runs interleave with its own; a stream computes up to
`stream_prefetch_chunks` messages ahead of the one being sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor

import numpy as np

from serving.batcher import Batcher
from serving.batchers import BatcherPool
from serving.budget import MemoryBudget
from serving.config import BatcherConfig, LimitsConfig
from serving.planning import Planner, RowPlan, ScorePlan
from serving.registry import Registry
from synthserve.contract import (
    SCORING_STREAM_OFFSET,
    ConditionedRows,
    LabelRuns,
    Scores,
    best_candidates,
    named_outputs,
    noise_feeds,
    sample_feeds,
)

__all__ = ["Engine"]

Outputs = list[np.ndarray]
FeedsOf = Callable[[int, int], dict[str, np.ndarray]]  # rows [begin, end) -> the graph's feeds


class Engine:
    def __init__(
        self, registry: Registry, batcher_config: BatcherConfig, limits: LimitsConfig, executor: Executor, slots: int
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.planner = Planner(limits, batcher_config.max_batch_rows)
        self.budget = MemoryBudget(limits.max_inflight_bytes)
        self.batchers = BatcherPool(lambda: self.registry, batcher_config, executor, slots)
        self._max_block = batcher_config.max_batch_rows  # candidates of a conditioned request computed at once

    async def close(self) -> None:
        await self.batchers.close()

    async def use_registry(self, registry: Registry) -> None:
        """Hot reload: new requests see `registry`; queues of versions no longer in it drain in the background."""
        self.registry = registry
        self.batchers.retire_missing(registry)

    def hold(self, plan: RowPlan | ScorePlan) -> contextlib.AbstractContextManager[None]:
        """The plan's share of the memory budget, for the block that computes and sends its result (a stream)."""
        return self.budget.hold(plan.held_bytes, plan.held_for)

    def reserve(self, plan: RowPlan | ScorePlan) -> Callable[[], None]:
        """The plan's share of the memory budget until the returned function is called (a unary call's end: its
        response outlives the handler while grpc serializes and sends it)."""
        return self.budget.reserve(plan.held_bytes, plan.held_for)

    async def generate(
        self, plan: RowPlan, start: int, stop: int, deadline: float | None, held: Mapping[str, Batcher] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows [start, stop) of the plan: float32 `[n, D]` and class indices (None when unconditional).

        Under best-of-k the sample graph computes candidate rows [start*k, stop*k) and the log_prob graph picks
        one per row (synthserve.contract.sampling). `held`: batchers the caller (a stream) holds, by graph, used
        even if a reload retired them."""
        model, sampling = plan.model, plan.sampling
        spec = model.manifest.graphs[sampling.graph]
        k = sampling.best_of
        labels = plan.labels.slice(start, stop) if plan.labels is not None else None
        candidate_labels = labels if labels is None or k == 1 else np.repeat(labels, k)
        first = start * k

        def feeds_of(begin: int, end: int) -> dict[str, np.ndarray]:
            run_labels = None if candidate_labels is None else candidate_labels[begin - first : end - first]
            return sample_feeds(spec, plan.seed, begin, end - begin, sampling, run_labels)

        batcher = held[sampling.graph] if held else self.batchers.get(model, sampling.graph)
        outputs = await self._submit_runs(batcher, first, stop * k, feeds_of, deadline, held=bool(held))
        rows = outputs[0][0] if len(outputs) == 1 else np.concatenate([o[0] for o in outputs])
        if k > 1:
            assert labels is not None  # resolve_sampling allows best_of > 1 only for conditional models
            scoring = model.manifest.graphs["log_prob"]
            scored = await self._run_rows(
                ScorePlan(model, "log_prob", rows, None, plan.seed, first, 0), deadline, SCORING_STREAM_OFFSET, held
            )
            rows = rows[best_candidates(named_outputs(scoring, scored), labels, k)]
        return rows, labels

    async def rows(self, plan: RowPlan, deadline: float | None) -> tuple[np.ndarray, np.ndarray | None]:
        """All rows of the plan (a unary Sample): its row range, or the result of its conditions' search."""
        if plan.conditions:
            return await self._conditioned(plan, deadline, None)
        return await self.generate(plan, 0, plan.n_rows, deadline)

    async def _conditioned(
        self, plan: RowPlan, deadline: float | None, held: Mapping[str, Batcher] | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Per class, the first candidates that meet the plan's conditions (synthserve.contract.conditions):
        candidate i of class c is row i of the plain request of class c under `condition_seed(seed, c)`."""
        budget = self.limits.max_condition_candidates
        request = ConditionedRows(
            plan.model.manifest.schema, plan.seed, plan.labels, plan.n_rows, plan.conditions, budget, self._max_block
        )
        for class_index, seed, search in request.searches():
            runs = None if class_index is None else LabelRuns((class_index,), (budget,))
            candidates = RowPlan(plan.model, seed, budget, runs, plan.sampling)
            while not search.done:
                size = search.next_block()
                block, _ = await self.generate(candidates, search.drawn, search.drawn + size, deadline, held)
                search.add(block)
        return request.result()

    async def stream(
        self, plan: RowPlan, deadline: float | None
    ) -> AsyncIterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """(start_row, rows, labels) messages of `plan.chunk_rows` from `plan.first_row` to `plan.end_row`, in order,
        holding the plan's budget.

        The stream holds its version's batchers: a reload that retires the version mid-way lets it finish."""
        pending: list[tuple[int, asyncio.Task[tuple[np.ndarray, np.ndarray | None]]]] = []
        next_start, end = plan.first_row, plan.end_row
        graphs = (plan.sampling.graph, "log_prob") if plan.sampling.best_of > 1 else (plan.sampling.graph,)
        held = {graph: self.batchers.get(plan.model, graph) for graph in graphs}
        try:
            with contextlib.ExitStack() as holds:
                holds.enter_context(self.hold(plan))
                for batcher in held.values():
                    holds.enter_context(batcher.hold())
                if plan.conditions:  # computed whole (within max_rows_per_request), sent in chunks
                    rows, labels = await self._conditioned(plan, deadline, held)
                    for start in range(0, plan.n_rows, plan.chunk_rows):
                        stop = start + plan.chunk_rows
                        yield start, rows[start:stop], None if labels is None else labels[start:stop]
                    return
                while next_start < end or pending:
                    while next_start < end and len(pending) <= self.limits.stream_prefetch_chunks:
                        stop = min(next_start + plan.chunk_rows, end)
                        work = self.generate(plan, next_start, stop, deadline, held=held)
                        pending.append((next_start, asyncio.ensure_future(work)))
                        next_start = stop
                    start, task = pending.pop(0)
                    rows, labels = await task
                    yield start, rows, labels
        finally:
            for _, task in pending:
                task.cancel()

    async def score(self, plan: ScorePlan, deadline: float | None) -> Scores:
        outputs = await self._run_rows(plan, deadline)
        return Scores.from_outputs(plan.model.manifest.graphs["log_prob"], outputs)

    async def encode(self, plan: ScorePlan, deadline: float | None) -> np.ndarray:
        return (await self._run_rows(plan, deadline))[0]

    async def _run_rows(
        self,
        plan: ScorePlan,
        deadline: float | None,
        stream_offset: int = 0,
        held: Mapping[str, Batcher] | None = None,
    ) -> Outputs:
        """Outputs of the plan's graph over its rows; noise rows are numbered from `start_row` on streams
        `stream_offset + j`."""
        spec = plan.model.manifest.graphs[plan.graph]
        rows_input = spec.input_named("rows")
        label_input = spec.input_named("label")
        rows, labels = plan.rows, plan.labels

        def feeds_of(begin: int, end: int) -> dict[str, np.ndarray]:
            feeds = noise_feeds(spec, plan.seed, plan.start_row + begin, end - begin, stream_offset=stream_offset)
            if rows_input is not None:
                feeds[rows_input] = rows[begin:end]
            if label_input is not None and labels is not None:
                feeds[label_input] = labels[begin:end]
            return feeds

        batcher = held[plan.graph] if held else self.batchers.get(plan.model, plan.graph)
        outputs = await self._submit_runs(batcher, 0, len(rows), feeds_of, deadline, held=bool(held))
        if len(outputs) == 1:
            return outputs[0]
        return [np.concatenate([o[i] for o in outputs]) for i in range(len(outputs[0]))]

    async def _submit_runs(
        self, batcher: Batcher, start: int, stop: int, feeds_of: FeedsOf, deadline: float | None, held: bool
    ) -> list[Outputs]:
        """Rows [start, stop) as runs of the batcher's `batch_rows`, outputs in order, at most
        `request_window_runs` of them queued or running at once (so they arrive at the pace they are used)."""
        if stop - start <= batcher.batch_rows:  # the common small request: no window, no extra task
            return [await batcher.submit(stop - start, functools.partial(feeds_of, start, stop), deadline, held)]
        outputs: list[Outputs] = []
        window: list[asyncio.Future[Outputs]] = []
        begin = start
        with batcher.admit(stop - start):  # the queue bound takes or refuses the request whole
            try:
                while begin < stop or window:
                    while begin < stop and len(window) < self.limits.request_window_runs:
                        end = min(begin + batcher.batch_rows, stop)
                        feeds = functools.partial(feeds_of, begin, end)
                        window.append(asyncio.ensure_future(batcher.submit(end - begin, feeds, deadline, True, True)))
                        begin = end
                    outputs.append(await window.pop(0))
            finally:
                # One failed run (deadline, shutdown) fails the request: its other runs are not computed.
                for task in window:
                    task.cancel()
        return outputs
