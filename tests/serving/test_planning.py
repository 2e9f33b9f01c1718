"""Requests -> plans: the server's row, message and memory limits, checked in the order a caller hears them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.budget import sample_bytes, score_bytes
from serving.config import LimitsConfig, RuntimeConfig
from serving.errors import InvalidArgument
from serving.planning import Planner, RowPlan
from serving.registry import LoadedModel, load_version
from synthserve.contract import (
    BALANCE_SAMPLING,
    LOG_DENSITY,
    AnomalyThreshold,
    LabelRuns,
    RequestError,
    SamplingOptions,
    UnsupportedRequest,
)

LIMITS = LimitsConfig(max_rows_per_request=1_000, max_rows_per_stream=10_000, max_message_bytes=64 * 1024)
PLANNER = Planner(LIMITS, max_batch_rows=512)


@pytest.fixture(scope="module")
def gauss(store: Path) -> LoadedModel:
    return load_version(store / "gauss" / "1", RuntimeConfig())  # 3 columns, classes neg/pos (0.7/0.3), encoder


@pytest.fixture(scope="module")
def gan(store: Path) -> LoadedModel:
    return load_version(store / "gauss-gan" / "1", RuntimeConfig())  # sample graph only


def _sample(model: LoadedModel, n_rows: int, **kwargs: object) -> RowPlan:
    options = {"label": None, "proportions": None, "seed": 7, **kwargs}
    return PLANNER.sample(model, n_rows, **options)  # type: ignore[arg-type]


def test_sample_plans_the_priors_and_holds_its_estimated_memory(gauss: LoadedModel) -> None:
    plan = _sample(gauss, 10)
    assert (plan.seed, plan.n_rows, plan.labels, plan.chunk_rows) == (7, 10, LabelRuns((0, 1), (7, 3)), 0)
    assert plan.held_bytes == sample_bytes(gauss.manifest.schema, 10) and plan.held_for == "num_rows"
    assert 0 <= _sample(gauss, 1, seed=None).seed < 2**64  # no seed: a fresh one, echoed to the caller


@pytest.mark.parametrize(
    ("n_rows", "kwargs", "message"),
    [
        (0, {}, "num_rows must be > 0, got 0"),
        (1_001, {}, "num_rows 1001 exceeds max_rows_per_request = 1000"),
        (300, {"sampling": SamplingOptions(1.0, 4)}, "num_rows 300 x sampling.best_of 4 exceeds max_rows_per_request"),
        (20_000, {"stream": True}, "num_rows 20000 exceeds max_rows_per_stream = 10000"),
    ],
)
def test_row_limits_name_the_field_and_limit(
    gauss: LoadedModel, n_rows: int, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _sample(gauss, n_rows, **kwargs)


def test_a_response_beyond_the_message_limit_is_refused_before_any_work(gauss: LoadedModel) -> None:
    small = Planner(LimitsConfig(max_message_bytes=4096), max_batch_rows=512)
    with pytest.raises(InvalidArgument, match=r"num_rows 1000 would need a \d+-byte response, .*; use SampleStream"):
        small.sample(gauss, 1000, label=None, proportions=None, seed=1)


def test_streams_are_chunked_within_a_batch_and_a_message(gauss: LoadedModel) -> None:
    assert _sample(gauss, 5_000, stream=True).chunk_rows == 512  # default 2,048, capped by max_batch_rows
    assert _sample(gauss, 5_000, stream=True, chunk_rows=100).chunk_rows == 100
    tiny = Planner(LimitsConfig(max_message_bytes=2048), max_batch_rows=512).sample(
        gauss, 5_000, label=None, proportions=None, seed=1, stream=True
    )
    assert 1 <= tiny.chunk_rows < 100 and tiny.held_for == f"a stream of {tiny.chunk_rows}-row chunks"
    with pytest.raises(InvalidArgument, match="chunk_rows must be >= 0, got -1"):
        _sample(gauss, 10, stream=True, chunk_rows=-1)


def test_a_stream_partition_is_limited_by_its_own_rows_not_the_request(gauss: LoadedModel) -> None:
    plan = _sample(gauss, 2**40, stream=True, first_row=2**40 - 10_000, label="pos")
    assert (plan.first_row, plan.end_row, plan.n_rows) == (2**40 - 10_000, 2**40, 2**40)
    assert plan.labels is not None and plan.labels.slice(plan.first_row, plan.first_row + 3).tolist() == [1, 1, 1]
    with pytest.raises(InvalidArgument, match=r"stop_row - first_row = 10001 exceeds max_rows_per_stream = 10000"):
        _sample(gauss, 2**40, stream=True, first_row=5, stop_row=10_006)
    with pytest.raises(InvalidArgument, match=r"num_rows 1099511627777 exceeds 1099511627776 \(2\*\*40\)"):
        _sample(gauss, 2**40 + 1, stream=True, first_row=5, stop_row=10)
    with pytest.raises(InvalidArgument, match="num_rows 20000 exceeds max_rows_per_stream"):
        _sample(gauss, 20_000, stream=True)  # no partition: the whole request counts
    assert _sample(gauss, 50, stream=True).end_row == 50


def test_balance_streams_what_each_class_needs_within_the_stream_limit(gauss: LoadedModel) -> None:
    plan = PLANNER.balance(
        gauss,
        "match_majority",
        {"neg": 90, "pos": 10},
        target_ratio=0.0,
        explicit_counts=None,
        seed=3,
        sampling=BALANCE_SAMPLING,
    )
    assert (plan.n_rows, plan.labels, plan.sampling) == (80, LabelRuns((0, 1), (0, 80)), BALANCE_SAMPLING)
    with pytest.raises(
        InvalidArgument, match=r"Balance needs 5000 rows x sampling.best_of 8 exceeds max_rows_per_stream"
    ):
        PLANNER.balance(
            gauss,
            "explicit_counts",
            {},
            target_ratio=0.0,
            explicit_counts={"pos": 5_000},
            seed=3,
            sampling=BALANCE_SAMPLING,
        )


def test_scoring_checks_the_model_before_reading_the_table(gauss: LoadedModel, gan: LoadedModel) -> None:
    reads: list[tuple[int, bool]] = []

    def read(max_rows: int, needs_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        reads.append((max_rows, needs_labels))
        return np.zeros((4, 3), np.float32), np.zeros(4, np.int64) if needs_labels else None

    with pytest.raises(UnsupportedRequest, match=r"model 'gauss-gan' \(gan\) has no log_prob graph"):
        PLANNER.score(gan, read, seed=0, start_row=0, fpr=None)
    with pytest.raises(RequestError, match=r"fpr must be within the calibrated range"):
        PLANNER.score(gauss, read, seed=0, start_row=0, fpr=0.5)
    assert reads == []
    plan = PLANNER.score(gauss, read, seed=5, start_row=8, fpr=0.01)
    assert (plan.graph, plan.seed, plan.start_row, plan.threshold) == (
        "log_prob",
        5,
        8,
        AnomalyThreshold(LOG_DENSITY, -6.0),
    )
    assert plan.held_bytes == score_bytes(gauss.manifest.schema, 4, 1 + 2 * 2)
    encoded = PLANNER.encode(gauss, read, seed=0, start_row=0)
    assert encoded.labels is not None and reads[-1] == (1_000, True)  # the encoder takes labels


def test_score_responses_beyond_the_message_limit_are_refused(gauss: LoadedModel) -> None:
    small = Planner(LimitsConfig(max_message_bytes=4096), max_batch_rows=512)

    def read(max_rows: int, needs_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        return np.zeros((1000, 3), np.float32), None

    with pytest.raises(InvalidArgument, match=r"rows.num_rows 1000 would need a 21256-byte response"):
        small.score(gauss, read, seed=0, start_row=0, fpr=None)
