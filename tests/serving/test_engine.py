"""The engine computes a plan's rows in runs over the batchers; how it splits them never changes a value."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from serving.config import BatcherConfig, LimitsConfig, RuntimeConfig
from serving.engine import Engine
from serving.planning import RowPlan
from serving.registry import Registry
from synthserve.contract import SamplingOptions, Scores, plan_labels, sample_rows


def _engine(registry: Registry, max_batch_rows: int, window_runs: int) -> Engine:
    return Engine(
        registry,
        BatcherConfig(max_batch_rows=max_batch_rows, max_queued_rows=100_000),
        LimitsConfig(request_window_runs=window_runs),
        ThreadPoolExecutor(2),
        slots=2,
    )


@pytest.fixture(scope="module")
def registry(store: Path) -> Registry:
    return Registry.scan(store, RuntimeConfig())


@pytest.mark.parametrize(("max_batch_rows", "window_runs"), [(4096, 4), (7, 1), (16, 3)])
def test_rows_and_scores_do_not_depend_on_runs_or_windows(
    registry: Registry, max_batch_rows: int, window_runs: int
) -> None:
    model = registry.get("gauss", 1)
    plan = RowPlan(model, 11, 90, plan_labels(model.manifest, 90, None, None), SamplingOptions(0.8, 3))

    async def compute() -> tuple[np.ndarray, np.ndarray, Scores]:
        engine = _engine(registry, max_batch_rows, window_runs)
        try:
            whole, labels = await engine.generate(plan, 0, 90, None)
            pieces = [(await engine.generate(plan, a, b, None))[0] for a, b in ((0, 13), (13, 50), (50, 90))]
            scoring = engine.planner.score(model, lambda _m, _l: (whole, None), seed=2, start_row=0, fpr=None)
            scores = await engine.score(scoring, None)
            assert labels is not None
            np.testing.assert_array_equal(np.concatenate(pieces), whole)
            return whole, labels, scores
        finally:
            await engine.close()

    rows, labels, scores = asyncio.run(compute())
    # The contract's one-pass rule (what the TorchServe handler and offline users run) gives the same rows.
    runtime = model.runtime
    expected = sample_rows(model.manifest.graphs, runtime.run, 11, labels, 90, SamplingOptions(0.8, 3))
    np.testing.assert_array_equal(rows, expected)
    spec = model.manifest.graphs["log_prob"]
    one_run = Scores.from_outputs(spec, runtime.run("log_prob", {"rows": rows}))
    np.testing.assert_allclose(scores.log_density, one_run.log_density, rtol=1e-6)
    np.testing.assert_allclose(scores.posteriors, one_run.posteriors, rtol=1e-6, atol=1e-7)
