"""Domain operations over the registry and the batchers: plan rows, build feeds, split requests into chunks.

Rows depend only on (model version, seed, labels, row index, sampling options): every chunk draws its noise
with `synthserve.contract.noise_feeds` at the rows' indices within the request (candidate indices under
best-of-k, synthserve.contract.sampling), and class labels are laid out by docs/model_store.md's rule (exact
counts by largest remainder, classes in index order).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fractions
import functools
import math
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from serving.batcher import Batcher
from serving.budget import MemoryBudget, sample_bytes
from serving.config import BatcherConfig, LimitsConfig
from serving.errors import InvalidArgument, NotSupported
from serving.registry import LoadedModel, Registry
from synthserve.contract import (
    PLAIN_SAMPLING,
    SCORING_STREAM_OFFSET,
    GraphSpec,
    SamplingOptions,
    best_candidates,
    largest_remainder,
    noise_feeds,
    row_bytes,
    shown,
    table_overhead_bytes,
)

__all__ = [
    "BalanceSpec",
    "Engine",
    "LabelRuns",
    "RowPlan",
    "Scores",
]


@dataclass(frozen=True)
class LabelRuns:
    """Class index per row as runs (class c repeated counts[c] times, classes in index order): O(C) memory."""

    classes: tuple[int, ...]
    counts: tuple[int, ...]

    def slice(self, start: int, stop: int) -> np.ndarray:
        pieces = []
        begin = 0
        for label, count in zip(self.classes, self.counts):
            end = begin + count
            overlap = min(end, stop) - max(begin, start)
            if overlap > 0:
                pieces.append(np.full(overlap, label, dtype=np.int64))
            begin = end
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else np.empty(0, np.int64)


@dataclass(frozen=True)
class RowPlan:
    """Everything that determines a sampling request's rows."""

    model: LoadedModel
    seed: int
    n_rows: int
    labels: LabelRuns | None  # None: unconditional model
    sampling: SamplingOptions = PLAIN_SAMPLING


@dataclass(frozen=True)
class BalanceSpec:
    strategy: str  # match_majority | target_ratio | explicit_counts
    class_counts: Mapping[str, int]
    target_ratio: float = 0.0
    explicit_counts: Mapping[str, int] | None = None


@dataclass(frozen=True)
class Scores:
    log_density: np.ndarray  # [n]
    class_log_density: np.ndarray  # [n, C]
    posteriors: np.ndarray  # [n, C]


class Engine:
    """What the gRPC servicer calls: validated plans in, numpy out."""

    def __init__(
        self, registry: Registry, batcher_config: BatcherConfig, limits: LimitsConfig, executor: Executor, slots: int
    ) -> None:
        self.registry = registry
        self.limits = limits
        self._batcher_config = batcher_config
        self._executor = executor
        self._slots = slots
        self._batchers: dict[tuple[str, int, str], Batcher] = {}
        self.budget = MemoryBudget(limits.max_inflight_bytes)
        self._retiring: dict[Batcher, asyncio.Task[None]] = {}

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in [*self._batchers.values(), *self._retiring]))
        await asyncio.gather(*self._retiring.values(), return_exceptions=True)

    async def use_registry(self, registry: Registry) -> None:
        """Hot reload: new requests see `registry`; queues of versions no longer in it drain in the background.

        Chunks already queued for a retired version finish (the batcher keeps its runtime until then); the
        reload does not wait for them, so a long queue never delays the next rescan.
        """
        self.registry = registry
        live = {(m.name, m.version) for m in registry.all()}
        for key in [key for key in self._batchers if key[:2] not in live]:
            batcher = self._batchers.pop(key)
            task = asyncio.get_running_loop().create_task(batcher.drain())
            self._retiring[batcher] = task
            task.add_done_callback(functools.partial(self._forget_retired, batcher))

    def _forget_retired(self, batcher: Batcher, _task: asyncio.Task[None]) -> None:
        self._retiring.pop(batcher, None)

    # -- planning ----------------------------------------------------------------------------------------
    @staticmethod
    def sampling_options(
        model: LoadedModel, temperature: float | None, best_of: int | None, defaults: SamplingOptions = PLAIN_SAMPLING
    ) -> SamplingOptions:
        """The request's options (absent fields from `defaults`; best_of 1 where the model cannot select), or
        InvalidArgument / NotSupported naming the field and its limit."""
        can_select = model.selects_by_posterior
        if temperature is None and best_of is None and (can_select or defaults.best_of == 1):
            return defaults  # the common request: no options given, no new object
        try:  # the contract's own bounds, with the request's field path in front
            options = SamplingOptions(
                defaults.temperature if temperature is None else temperature, 1 if best_of is None else best_of
            )
        except ValueError as exc:
            raise InvalidArgument(f"sampling.{exc}") from None
        if best_of is None:
            return dataclasses.replace(options, best_of=defaults.best_of if can_select else 1)
        if best_of > 1 and not can_select:
            raise NotSupported(
                f"sampling.best_of {best_of}: model {model.name!r} ({model.manifest.family}) has no class posterior "
                "to choose by (needs a conditional model with a log_prob graph)"
            )
        return options

    def plan_sample(
        self,
        model: LoadedModel,
        n_rows: int,
        *,
        label: str | None,
        proportions: Mapping[str, float] | None,
        seed: int | None,
        max_rows: int,
        limit_name: str,
        sampling: SamplingOptions = PLAIN_SAMPLING,
    ) -> RowPlan:
        if n_rows <= 0:
            raise InvalidArgument(f"num_rows must be > 0, got {n_rows}")
        if n_rows * sampling.best_of > max_rows:
            best_of = f" x sampling.best_of {sampling.best_of}" if sampling.best_of > 1 else ""
            raise InvalidArgument(f"num_rows {n_rows}{best_of} exceeds {limit_name} = {max_rows}")
        if limit_name == "max_rows_per_request":
            self._check_message_size(model, n_rows)
        spec = model.manifest.schema.label
        if spec is None:
            if label is not None or proportions is not None:
                raise InvalidArgument(f"label/proportions: model {model.name!r} is unconditional")
            return RowPlan(model, _seed(seed), n_rows, None, sampling)
        n_classes = len(spec.classes)
        if label is not None:
            c = self.class_index(model, label, "label")
            return RowPlan(model, _seed(seed), n_rows, LabelRuns((c,), (n_rows,)), sampling)
        weights = list(spec.priors)
        if proportions is not None:
            weights = [0.0] * n_classes
            for key, weight in proportions.items():
                if not math.isfinite(weight) or weight < 0:
                    raise InvalidArgument(
                        f"proportions.weights[{shown(key)}] must be a finite number >= 0, got {weight}"
                    )
                weights[self.class_index(model, key, "proportions.weights")] = weight
            if sum(weights) <= 0:
                raise InvalidArgument("proportions.weights must have a positive sum")
            # Scaled to at most 1 (the same proportions), so n_rows * weight stays finite for weights near 1e308.
            weights = [w / max(weights) for w in weights]
        return RowPlan(model, _seed(seed), n_rows, _class_runs(n_rows, tuple(weights)), sampling)

    def plan_balance(
        self, model: LoadedModel, spec: BalanceSpec, seed: int | None, sampling: SamplingOptions = PLAIN_SAMPLING
    ) -> RowPlan:
        label = model.manifest.schema.label
        if label is None:
            raise NotSupported(f"model {model.name!r} is unconditional; Balance needs a class-conditional model")
        # Python integers throughout: counts up to int64's maximum never wrap; the sum is checked against the limit.
        have = [0] * len(label.classes)
        for key, count in spec.class_counts.items():
            if count < 0:
                raise InvalidArgument(f"class_counts[{shown(key)}] must be >= 0, got {count}")
            have[self.class_index(model, key, "class_counts")] = int(count)
        if spec.strategy == "match_majority":
            need = [max(have) - n for n in have]
        elif spec.strategy == "target_ratio":
            if not 0 < spec.target_ratio <= 1:
                raise InvalidArgument(f"target_ratio must be in (0, 1], got {spec.target_ratio}")
            # Exact: the ratio as written (0.1 is 1/10, not the float just above it) times an exact integer.
            target = math.ceil(fractions.Fraction(repr(spec.target_ratio)) * max(have))
            need = [max(target - n, 0) for n in have]
        elif spec.strategy == "explicit_counts":
            need = [0] * len(have)
            for key, count in (spec.explicit_counts or {}).items():
                if count < 0:
                    raise InvalidArgument(f"explicit_counts[{shown(key)}] must be >= 0, got {count}")
                need[self.class_index(model, key, "explicit_counts")] = int(count)
        else:
            raise InvalidArgument(
                f"strategy must be MATCH_MAJORITY, TARGET_RATIO or EXPLICIT_COUNTS, got {spec.strategy}"
            )
        total = sum(need)
        if total * sampling.best_of > self.limits.max_rows_per_stream:
            best_of = f" x sampling.best_of {sampling.best_of}" if sampling.best_of > 1 else ""
            raise InvalidArgument(
                f"Balance needs {total} rows{best_of}, beyond max_rows_per_stream = {self.limits.max_rows_per_stream}"
            )
        runs = LabelRuns(tuple(range(len(need))), tuple(need))
        return RowPlan(model, _seed(seed), total, runs, sampling)

    @staticmethod
    def require(model: LoadedModel, graph: str) -> GraphSpec:
        """The graph, or NotSupported: density on a GAN, encoding without an encoder."""
        spec = model.manifest.graphs.get(graph)
        if spec is None:
            raise NotSupported(
                f"model {model.name!r} ({model.manifest.family}) has no {graph} graph "
                f"(capabilities: {', '.join(model.manifest.capabilities)})"
            )
        return spec

    @staticmethod
    def class_index(model: LoadedModel, label: str, field: str) -> int:
        spec = model.manifest.schema.label
        assert spec is not None
        for index, value in enumerate(spec.classes):
            if str(value) == label:
                return index
        classes = [str(c) for c in spec.classes]
        raise InvalidArgument(f"{field}: unknown class label {shown(label)} (classes: {classes})")

    def _check_message_size(self, model: LoadedModel, n_rows: int) -> None:
        schema = model.manifest.schema
        self.check_response_size(
            "num_rows", n_rows, row_bytes(schema), "; use SampleStream", overhead=table_overhead_bytes(schema)
        )

    def check_response_size(
        self, field: str, n_rows: int, row_bytes: int, hint: str = "", *, overhead: int = 256
    ) -> None:
        """Refuses a request whose response could not be sent (InvalidArgument naming the field and limit)."""
        size = n_rows * row_bytes + overhead
        if size > self.limits.max_message_bytes:
            raise InvalidArgument(
                f"{field} {n_rows} would need a {size}-byte response, beyond max_message_bytes = "
                f"{self.limits.max_message_bytes}{hint}"
            )

    # -- execution ---------------------------------------------------------------------------------------
    async def generate(
        self,
        plan: RowPlan,
        start: int,
        stop: int,
        deadline: float | None,
        held: Mapping[str, Batcher] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows [start, stop) of the plan: float32 `[n, D]` and class indices (None when unconditional).

        Under best-of-k the sample graph computes candidate rows [start*k, stop*k) and the log_prob graph picks
        one per row (synthserve.contract.sampling). `held`: batchers the caller (a stream) holds, by graph, used
        even if a reload retired them."""
        model = plan.model
        spec = model.manifest.graphs["sample"]
        label_input = spec.input_named("label")
        k = plan.sampling.best_of
        labels = plan.labels.slice(start, stop) if plan.labels is not None else None
        candidate_labels = labels if labels is None or k == 1 else np.repeat(labels, k)
        first = start * k

        def chunk_feeds(begin: int, end: int) -> dict[str, np.ndarray]:
            feeds = noise_feeds(spec, plan.seed, begin, end - begin, plan.sampling.temperature)
            if label_input is not None and candidate_labels is not None:
                feeds[label_input] = candidate_labels[begin - first : end - first]
            return feeds

        batcher = held["sample"] if held else self._batcher(model, "sample")
        outputs = await self._submit_chunks(batcher, first, stop * k, chunk_feeds, deadline, held=bool(held))
        rows = outputs[0][0] if len(outputs) == 1 else np.concatenate([o[0] for o in outputs])
        if k > 1:
            assert labels is not None  # sampling_options allows best_of > 1 only for conditional models
            scored = await self._run_rows(
                model,
                "log_prob",
                rows,
                None,
                plan.seed,
                deadline,
                start_row=first,
                stream_offset=SCORING_STREAM_OFFSET,
                held=held,
            )
            names = [t.name for t in model.manifest.graphs["log_prob"].outputs]
            rows = rows[best_candidates(scored[names.index("posterior")], labels, k)]
        return rows, labels

    async def stream(
        self, plan: RowPlan, chunk_rows: int, deadline: float | None
    ) -> AsyncIterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """(start_row, rows, labels) chunks in order, computing up to `stream_prefetch_chunks` ahead.

        The stream holds its version's batchers: a reload that retires the version mid-way lets it finish."""
        if chunk_rows < 0:
            raise InvalidArgument(f"chunk_rows must be >= 0, got {chunk_rows}")
        chunk_rows = min(chunk_rows or self.limits.default_chunk_rows, self._batcher_config.max_batch_rows)
        schema = plan.model.manifest.schema
        budget = self.limits.max_message_bytes - table_overhead_bytes(schema)
        chunk_rows = max(1, min(chunk_rows, budget // row_bytes(schema)))
        pending: list[tuple[int, asyncio.Task[tuple[np.ndarray, np.ndarray | None]]]] = []
        next_start = 0
        graphs = ("sample", "log_prob") if plan.sampling.best_of > 1 else ("sample",)
        held = {graph: self._batcher(plan.model, graph) for graph in graphs}
        in_flight = sample_bytes(schema, chunk_rows, plan.sampling.best_of) * (self.limits.stream_prefetch_chunks + 2)
        try:
            with contextlib.ExitStack() as holds:
                holds.enter_context(self.budget.hold(in_flight, f"a stream of {chunk_rows}-row chunks"))
                for batcher in held.values():
                    holds.enter_context(batcher.hold())
                while next_start < plan.n_rows or pending:
                    while next_start < plan.n_rows and len(pending) <= self.limits.stream_prefetch_chunks:
                        stop = min(next_start + chunk_rows, plan.n_rows)
                        work = self.generate(plan, next_start, stop, deadline, held=held)
                        pending.append((next_start, asyncio.ensure_future(work)))
                        next_start = stop
                    start, task = pending.pop(0)
                    rows, labels = await task
                    yield start, rows, labels
        finally:
            for _, task in pending:
                task.cancel()

    async def score(
        self, model: LoadedModel, rows: np.ndarray, seed: int, deadline: float | None, start_row: int = 0
    ) -> Scores:
        spec = self.require(model, "log_prob")
        outputs = await self._run_rows(model, "log_prob", rows, None, seed, deadline, start_row=start_row)
        names = [t.name for t in spec.outputs]
        return Scores(
            log_density=outputs[names.index("log_prob")].reshape(-1),
            class_log_density=outputs[names.index("log_prob_cond")],
            posteriors=outputs[names.index("posterior")],
        )

    async def encode(
        self,
        model: LoadedModel,
        rows: np.ndarray,
        labels: np.ndarray | None,
        seed: int,
        deadline: float | None,
        start_row: int = 0,
    ) -> np.ndarray:
        self.require(model, "encode")
        return (await self._run_rows(model, "encode", rows, labels, seed, deadline, start_row=start_row))[0]

    async def _run_rows(
        self,
        model: LoadedModel,
        graph: str,
        rows: np.ndarray,
        labels: np.ndarray | None,
        seed: int,
        deadline: float | None,
        start_row: int = 0,
        stream_offset: int = 0,
        held: Mapping[str, Batcher] | None = None,
    ) -> list[np.ndarray]:
        """Outputs of `graph` over `rows`; noise rows are numbered from `start_row` on streams `stream_offset + j`."""
        spec = model.manifest.graphs[graph]
        rows_input = spec.input_named("rows")
        label_input = spec.input_named("label")
        if label_input is not None and labels is None:
            raise InvalidArgument(f"rows.labels: {graph} of model {model.name!r} needs one class index per row")
        batcher = held[graph] if held else self._batcher(model, graph)

        def chunk_feeds(begin: int, end: int) -> dict[str, np.ndarray]:
            feeds = noise_feeds(spec, seed, start_row + begin, end - begin, stream_offset=stream_offset)
            if rows_input is not None:
                feeds[rows_input] = rows[begin:end]
            if label_input is not None and labels is not None:
                feeds[label_input] = labels[begin:end]
            return feeds

        outputs = await self._submit_chunks(batcher, 0, len(rows), chunk_feeds, deadline, held=bool(held))
        if len(outputs) == 1:
            return outputs[0]
        return [np.concatenate([o[i] for o in outputs]) for i in range(len(outputs[0]))]

    async def _submit_chunks(
        self,
        batcher: Batcher,
        start: int,
        stop: int,
        chunk_feeds: Callable[[int, int], dict[str, np.ndarray]],
        deadline: float | None,
        held: bool = False,
    ) -> list[list[np.ndarray]]:
        """Rows [start, stop) as runs of the batcher's `batch_rows`, outputs in order.

        At most `request_window_runs` of them are queued or running at once, so the runs of other requests
        interleave with a large request's instead of waiting behind all of it, and its outputs arrive at the
        pace they are used."""
        step = batcher.batch_rows
        if stop - start <= step:  # the common small request: no window, no extra task
            return [await batcher.submit(stop - start, functools.partial(chunk_feeds, start, stop), deadline, held)]
        outputs: list[list[np.ndarray]] = []
        window: list[asyncio.Future[list[np.ndarray]]] = []
        begin = start
        with batcher.admit(stop - start):  # the queue bound takes or refuses the request whole
            try:
                while begin < stop or window:
                    while begin < stop and len(window) < self.limits.request_window_runs:
                        end = min(begin + batcher.batch_rows, stop)
                        feeds = functools.partial(chunk_feeds, begin, end)
                        window.append(asyncio.ensure_future(batcher.submit(end - begin, feeds, deadline, True, True)))
                        begin = end
                    outputs.append(await window.pop(0))
            finally:
                # One failed run (deadline, shutdown) fails the request: its other runs are not computed.
                for task in window:
                    task.cancel()
        return outputs

    def _batcher(self, model: LoadedModel, graph: str) -> Batcher:
        key = (model.name, model.version, graph)
        batcher = self._batchers.get(key)
        if batcher is None:
            # A request that resolved its version before a reload retired it: NOT_FOUND, not a new queue.
            self.registry.get(model.name, model.version)
            runtime = model.runtime
            batcher = Batcher(
                model.name,
                graph,
                lambda feeds: runtime.run(graph, feeds),
                self._batcher_config,
                self._executor,
                self._slots,
            )
            self._batchers[key] = batcher
        return batcher


@functools.lru_cache(maxsize=4096)
def _class_runs(n_rows: int, weights: tuple[float, ...]) -> LabelRuns:
    """Rows per class by largest remainder (classes in index order); cached: most requests repeat a few sizes with
    the training priors."""
    return LabelRuns(tuple(range(len(weights))), largest_remainder(n_rows, weights))


def _seed(seed: int | None) -> int:
    return secrets.randbits(64) if seed is None else seed
