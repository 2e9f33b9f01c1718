"""Requests -> plans: every row limit, response-size limit and memory estimate a request is checked against.

A plan holds everything that determines a request's result (model version, seed, classes, sampling options, the
rows to score) and what it may hold while it runs (`held_bytes` of the memory budget, `serving.budget`). The
contract's rules (`synthserve.contract`: class lookup, label planning, Balance counts, sampling options, graph
capabilities, anomaly thresholds) decide what a request means; the server's limits (`LimitsConfig`) decide how
much of it one call may ask for, and are all applied here. Errors name the request field and the limit.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.budget import sample_bytes, score_bytes
from serving.config import LimitsConfig
from serving.errors import InvalidArgument
from serving.registry import LoadedModel
from synthserve.contract import (
    PLAIN_SAMPLING,
    AnomalyThreshold,
    FeatureCondition,
    LabelRuns,
    SamplingOptions,
    anomaly_threshold,
    balance_counts,
    plan_labels,
    require_graph,
    resolve_conditions,
    row_bytes,
    table_overhead_bytes,
)

__all__ = ["MAX_PARTITIONED_ROWS", "Planner", "RowPlan", "ScorePlan", "TableReader"]

# num_rows of a SampleStream that asks for a partition (first_row / stop_row): the whole request is never held,
# only the partition, which max_rows_per_stream bounds. 2**40 rows (10^12) keep every row index exact in float64.
MAX_PARTITIONED_ROWS = 2**40

# A request's table as graph rows (and class indices when `needs_labels`), given the row limit `max_rows`:
# the servicer's conversion, called after the capability checks so a GAN asked for densities hears that first.
TableReader = Callable[[int, bool], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class RowPlan:
    """A sampling request (Sample, SampleStream, Balance): its rows are a function of these fields alone."""

    model: LoadedModel
    seed: int
    n_rows: int
    labels: LabelRuns | None  # None: unconditional model
    sampling: SamplingOptions = PLAIN_SAMPLING
    chunk_rows: int = 0  # rows per message of a stream; 0: one message
    held_bytes: int = 0  # of the memory budget, while the request runs
    held_for: str = "num_rows"  # what the budget's refusal names
    first_row: int = 0  # a stream's partition: rows [first_row, stop_row) of the request's n_rows
    stop_row: int | None = None  # None: n_rows
    conditions: tuple[FeatureCondition, ...] = ()  # on feature values: rows from a candidate search

    @property
    def end_row(self) -> int:
        return self.n_rows if self.stop_row is None else self.stop_row


@dataclass(frozen=True)
class ScorePlan:
    """A request that runs `graph` over the caller's rows (ScoreDensity: log_prob; Encode: encode)."""

    model: LoadedModel
    graph: str
    rows: np.ndarray  # float32 [n, D]
    labels: np.ndarray | None  # int64 [n] where the graph takes labels
    seed: int
    start_row: int  # the rows' index within a larger table split over requests (noise rows)
    held_bytes: int
    threshold: AnomalyThreshold | None = None  # ScoreDensity with fpr: the calibrated anomaly threshold
    held_for: str = "rows.num_rows"


class Planner:
    def __init__(self, limits: LimitsConfig, max_batch_rows: int) -> None:
        self.limits = limits
        self._max_batch_rows = max_batch_rows

    def sample(
        self,
        model: LoadedModel,
        n_rows: int,
        *,
        label: str | None,
        proportions: Mapping[str, float] | None,
        seed: int | None,
        sampling: SamplingOptions = PLAIN_SAMPLING,
        stream: bool = False,
        chunk_rows: int = 0,
        first_row: int = 0,
        stop_row: int = 0,
        conditions: Sequence[Mapping[str, Any]] = (),
    ) -> RowPlan:
        """Sample (`stream` False: one response message) or SampleStream (messages of `chunk_rows`), of rows
        [first_row, stop_row) of the request (stop_row 0: num_rows; streams only), meeting `conditions`."""
        if n_rows <= 0:
            raise InvalidArgument(f"num_rows must be > 0, got {n_rows}")
        limits = self.limits
        partition = stream and (first_row != 0 or stop_row != 0)
        if partition and conditions:
            raise InvalidArgument("first_row / stop_row: a partition of a request with conditions is not supported")
        if conditions:
            plan = self.sample(
                model,
                n_rows,
                label=label,
                proportions=proportions,
                seed=seed,
                sampling=sampling,
                stream=stream,
                chunk_rows=chunk_rows,
            )
            return self._conditioned(plan, conditions)
        if partition:
            first_row, stop_row = _check_partition(n_rows, first_row, stop_row)
            what = f"stop_row - first_row = {stop_row - first_row}"
            self._check_rows(stop_row - first_row, sampling, limits.max_rows_per_stream, what, "max_rows_per_stream")
        else:
            max_rows, limit = (
                (limits.max_rows_per_stream, "max_rows_per_stream")
                if stream
                else (limits.max_rows_per_request, "max_rows_per_request")
            )
            self._check_rows(n_rows, sampling, max_rows, f"num_rows {n_rows}", limit)
        labels = plan_labels(model.manifest, n_rows, label, proportions, "proportions.weights")
        if stream:
            plan = self._stream(model, _seed(seed), n_rows, labels, sampling, chunk_rows)
            return dataclasses.replace(plan, first_row=first_row, stop_row=stop_row) if partition else plan
        schema = model.manifest.schema
        size = n_rows * row_bytes(schema) + table_overhead_bytes(schema)
        self._check_response("num_rows", n_rows, size, "; use SampleStream")
        held = sample_bytes(schema, n_rows, sampling.best_of)
        return RowPlan(model, _seed(seed), n_rows, labels, sampling, held_bytes=held)

    def balance(
        self,
        model: LoadedModel,
        strategy: str,
        class_counts: Mapping[str, int],
        *,
        target_ratio: float,
        explicit_counts: Mapping[str, int] | None,
        seed: int | None,
        sampling: SamplingOptions,
        chunk_rows: int = 0,
        conditions: Sequence[Mapping[str, Any]] = (),
    ) -> RowPlan:
        """Balance: the rows each class needs (synthserve.contract.balance_counts), streamed by class."""
        runs = balance_counts(model.manifest, strategy, class_counts, target_ratio, explicit_counts)
        total = runs.n_rows
        limit = self.limits.max_rows_per_stream
        self._check_rows(total, sampling, limit, f"Balance needs {total} rows", "max_rows_per_stream")
        plan = self._stream(model, _seed(seed), total, runs, sampling, chunk_rows)
        return self._conditioned(plan, conditions) if conditions and total else plan

    def _conditioned(self, plan: RowPlan, conditions: Sequence[Mapping[str, Any]]) -> RowPlan:
        """`plan` with feature conditions: its rows are computed whole (at most max_rows_per_request of them, and
        at most max_condition_candidates candidates), then sent as the plan says."""
        resolved = resolve_conditions(plan.model.manifest, conditions)
        limits = self.limits
        what = f"num_rows {plan.n_rows} with conditions"
        self._check_rows(plan.n_rows, plan.sampling, limits.max_rows_per_request, what, "max_rows_per_request")
        if plan.n_rows > limits.max_condition_candidates:
            raise InvalidArgument(f"{what} exceeds max_condition_candidates = {limits.max_condition_candidates}")
        schema = plan.model.manifest.schema
        held = plan.held_bytes + sample_bytes(schema, plan.n_rows + self._max_batch_rows, plan.sampling.best_of)
        return dataclasses.replace(plan, conditions=resolved, held_bytes=held)

    def score(
        self, model: LoadedModel, read: TableReader, *, seed: int, start_row: int, fpr: float | None
    ) -> ScorePlan:
        """ScoreDensity: log p(x), log p(x|c), p(c|x) (5 + 8 C response bytes a row), flags when `fpr` is given."""
        require_graph(model.manifest, "log_prob")
        threshold = None if fpr is None else anomaly_threshold(model.manifest, fpr)
        rows, _ = read(self.limits.max_rows_per_request, False)
        n_classes = model.manifest.schema.n_classes
        self._check_response("rows.num_rows", len(rows), len(rows) * (5 + 8 * n_classes) + 256)
        held = score_bytes(model.manifest.schema, len(rows), 1 + 2 * n_classes)
        return ScorePlan(model, "log_prob", rows, None, seed, start_row, held, threshold)

    def encode(self, model: LoadedModel, read: TableReader, *, seed: int, start_row: int) -> ScorePlan:
        """Encode: one latent vector of float32 per row."""
        spec = require_graph(model.manifest, "encode")
        rows, labels = read(self.limits.max_rows_per_request, spec.input_named("label") is not None)
        self._check_response("rows.num_rows", len(rows), len(rows) * 4 * model.latent_dim + 256)
        held = score_bytes(model.manifest.schema, len(rows), model.latent_dim)
        return ScorePlan(model, "encode", rows, labels, seed, start_row, held)

    def _stream(
        self,
        model: LoadedModel,
        seed: int,
        n_rows: int,
        labels: LabelRuns | None,
        sampling: SamplingOptions,
        chunk_rows: int,
    ) -> RowPlan:
        """A streamed plan: messages of `chunk_rows` (default `default_chunk_rows`), at most a batch and a message
        each, holding the budget for the chunks computed ahead and the one being sent."""
        if chunk_rows < 0:
            raise InvalidArgument(f"chunk_rows must be >= 0, got {chunk_rows}")
        limits = self.limits
        schema = model.manifest.schema
        chunk_rows = min(chunk_rows or limits.default_chunk_rows, self._max_batch_rows)
        chunk_rows = max(
            1, min(chunk_rows, (limits.max_message_bytes - table_overhead_bytes(schema)) // row_bytes(schema))
        )
        held = sample_bytes(schema, chunk_rows, sampling.best_of) * (limits.stream_prefetch_chunks + 2)
        return RowPlan(model, seed, n_rows, labels, sampling, chunk_rows, held, f"a stream of {chunk_rows}-row chunks")

    @staticmethod
    def _check_rows(n_rows: int, sampling: SamplingOptions, max_rows: int, what: str, limit: str) -> None:
        """Rows to compute (best-of-k computes k candidates a row) against the request's row limit."""
        if n_rows * sampling.best_of > max_rows:
            best_of = f" x sampling.best_of {sampling.best_of}" if sampling.best_of > 1 else ""
            raise InvalidArgument(f"{what}{best_of} exceeds {limit} = {max_rows}")

    def _check_response(self, field: str, n_rows: int, size: int, hint: str = "") -> None:
        """Refuses a request whose response could not be sent."""
        if size > self.limits.max_message_bytes:
            raise InvalidArgument(
                f"{field} {n_rows} would need a {size}-byte response, beyond max_message_bytes = "
                f"{self.limits.max_message_bytes}{hint}"
            )


def _check_partition(n_rows: int, first_row: int, stop_row: int) -> tuple[int, int]:
    """SampleStream's first_row / stop_row (0: num_rows) -> the partition [first_row, stop_row), checked."""
    if n_rows > MAX_PARTITIONED_ROWS:
        raise InvalidArgument(f"num_rows {n_rows} exceeds {MAX_PARTITIONED_ROWS} (2**40) for a partitioned stream")
    stop_row = stop_row or n_rows
    if not 0 <= first_row < stop_row <= n_rows:
        raise InvalidArgument(
            f"first_row {first_row} and stop_row {stop_row} must satisfy 0 <= first_row < stop_row <= num_rows "
            f"({n_rows})"
        )
    return first_row, stop_row


def _seed(seed: int | None) -> int:
    return secrets.randbits(64) if seed is None else seed
