"""Runs one closed batch: the chunks' feeds merged into one session run, the outputs split back by chunk.

Runs in a worker thread (or on the event loop for a lone caller's small batch). A merged batch that fails is
rerun chunk by chunk, so an error reaches only the requests it belongs to. Every run is timed into the graph's
`RunCost` (what sizes its runs and the close policy's pause) and the batch metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from serving import metrics
from serving.run_cost import RunCost

__all__ = ["BatchRunner", "FeedBuilder", "Outputs", "RunGraph"]

FeedBuilder = Callable[[], dict[str, np.ndarray]]  # a chunk's inputs, built in the worker
RunGraph = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]
Outputs = list[np.ndarray]  # a graph's outputs, row-aligned with its inputs


class BatchRunner:
    def __init__(self, model: str, graph: str, run_graph: RunGraph, run_cost: RunCost) -> None:
        self._graph = graph
        self._run_graph = run_graph
        self._run_cost = run_cost
        self._rows_hist = metrics.BATCH_ROWS.labels(model, graph)
        self._exec_hist = metrics.BATCH_EXECUTION_SECONDS.labels(model, graph)
        self._computed = metrics.ROWS_COMPUTED.labels(model, graph)

    def run(self, chunks: Sequence[tuple[int, FeedBuilder]]) -> list[Outputs | BaseException]:
        """Outputs (or the error) per `(n_rows, make_feeds)` chunk, in order."""
        try:
            return self._run_merged(chunks)
        except Exception as exc:
            if len(chunks) == 1:
                return [exc]
        results: list[Outputs | BaseException] = []
        for chunk in chunks:
            try:
                results.extend(self._run_merged([chunk]))
            except Exception as exc:
                results.append(exc)
        return results

    def _run_merged(self, chunks: Sequence[tuple[int, FeedBuilder]]) -> list[Outputs | BaseException]:
        built = time.perf_counter()
        feeds = [make_feeds() for _, make_feeds in chunks]
        merged = feeds[0] if len(feeds) == 1 else {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
        rows = sum(n_rows for n_rows, _ in chunks)
        started = time.perf_counter()
        outputs = self._run_graph(merged)
        finished = time.perf_counter()
        self._run_cost.observe(rows, finished - built)
        self._exec_hist.observe(finished - started)
        self._rows_hist.observe(rows)
        self._computed.inc(rows)
        for index, output in enumerate(outputs):
            if output.shape[0] != rows:
                raise RuntimeError(f"{self._graph} output {index} has {output.shape[0]} rows for {rows} input rows")
        if len(chunks) == 1:
            return [outputs]
        offsets = np.cumsum([0] + [n_rows for n_rows, _ in chunks])
        return [[o[offsets[i] : offsets[i + 1]] for o in outputs] for i in range(len(chunks))]
