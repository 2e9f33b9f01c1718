"""Requests -> plans: every row limit, response-size limit and memory estimate a request is checked against.

A plan holds everything that determines a request's result (model version, seed, classes, sampling options, the
rows to score) and what it may hold while it runs (`held_bytes` of the memory budget, `serving.budget`). The
contract's rules (`synthserve.contract`: class lookup, label planning, Balance counts, sampling options, graph
capabilities, anomaly thresholds) decide what a request means; the server's limits (`LimitsConfig`) decide how
much of it one call may ask for, and are all applied here. Errors name the request field and the limit.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from serving.budget import sample_bytes, score_bytes
from serving.config import LimitsConfig
from serving.errors import InvalidArgument
from serving.registry import LoadedModel
from synthserve.contract import (
    PLAIN_SAMPLING,
    LabelRuns,
    SamplingOptions,
    anomaly_threshold,
    balance_counts,
    plan_labels,
    require_graph,
    row_bytes,
    table_overhead_bytes,
)

__all__ = ["Planner", "RowPlan", "ScorePlan", "TableReader"]

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
    threshold: float | None = None  # ScoreDensity with fpr: the anomaly threshold on log p(x)
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
    ) -> RowPlan:
        """Sample (`stream` False: one response message) or SampleStream (messages of `chunk_rows`)."""
        if n_rows <= 0:
            raise InvalidArgument(f"num_rows must be > 0, got {n_rows}")
        limits = self.limits
        max_rows, limit = (
            (limits.max_rows_per_stream, "max_rows_per_stream")
            if stream
            else (limits.max_rows_per_request, "max_rows_per_request")
        )
        self._check_rows(n_rows, sampling, max_rows, f"num_rows {n_rows}", limit)
        labels = plan_labels(model.manifest, n_rows, label, proportions, "proportions.weights")
        if stream:
            return self._stream(model, _seed(seed), n_rows, labels, sampling, chunk_rows)
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
    ) -> RowPlan:
        """Balance: the rows each class needs (synthserve.contract.balance_counts), streamed by class."""
        runs = balance_counts(model.manifest, strategy, class_counts, target_ratio, explicit_counts)
        total = runs.n_rows
        limit = self.limits.max_rows_per_stream
        self._check_rows(total, sampling, limit, f"Balance needs {total} rows", "max_rows_per_stream")
        return self._stream(model, _seed(seed), total, runs, sampling, chunk_rows)

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


def _seed(seed: int | None) -> int:
    return secrets.randbits(64) if seed is None else seed
