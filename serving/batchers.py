"""The batchers' lifecycle: one `Batcher` per (model, version, graph), created on first use, retired by reloads.

A hot reload retires the batchers of versions no longer served: each drains in the background (queued chunks
finish on the runtime it keeps; new chunks are refused with NOT_FOUND unless their request holds the batcher),
so a long queue never delays the next rescan.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor

from serving.batcher import Batcher
from serving.config import BatcherConfig
from serving.registry import LoadedModel, Registry

__all__ = ["BatcherPool"]


class BatcherPool:
    def __init__(self, registry: Callable[[], Registry], config: BatcherConfig, executor: Executor, slots: int) -> None:
        self._registry = registry  # the registry requests see now
        self._config = config
        self._executor = executor
        self._slots = slots
        self._batchers: dict[tuple[str, int, str], Batcher] = {}
        self._retiring: dict[Batcher, asyncio.Task[None]] = {}

    @property
    def draining(self) -> int:
        """Retired batchers still finishing their queues."""
        return len(self._retiring)

    def get(self, model: LoadedModel, graph: str) -> Batcher:
        key = (model.name, model.version, graph)
        batcher = self._batchers.get(key)
        if batcher is None:
            # A request that resolved its version before a reload retired it: NOT_FOUND, not a new queue.
            self._registry().get(model.name, model.version)
            runtime = model.runtime
            batcher = Batcher(
                model.name, graph, lambda feeds: runtime.run(graph, feeds), self._config, self._executor, self._slots
            )
            self._batchers[key] = batcher
        return batcher

    def retire_missing(self, registry: Registry) -> None:
        """Drains, in the background, the batchers of versions `registry` no longer serves."""
        live = {(m.name, m.version) for m in registry.all()}
        for key in [key for key in self._batchers if key[:2] not in live]:
            batcher = self._batchers.pop(key)
            task = asyncio.get_running_loop().create_task(batcher.drain())
            self._retiring[batcher] = task
            task.add_done_callback(functools.partial(self._forget_retired, batcher))

    def _forget_retired(self, batcher: Batcher, _task: asyncio.Task[None]) -> None:
        self._retiring.pop(batcher, None)

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in [*self._batchers.values(), *self._retiring]))
        await asyncio.gather(*self._retiring.values(), return_exceptions=True)
